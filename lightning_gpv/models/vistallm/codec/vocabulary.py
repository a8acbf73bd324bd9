"""How coordinates are spelled in VistaLLM answers: coordinate tokens, separators, bracketed groups.

One object is one bracketed group of bins, x before y (box ``[x0, y0, x1, y1]``, point ``[x, y]``, mask
``[x0, y0, ..., x{N-1}, y{N-1}]``). Two styles write the same groups:

* ``"human"`` (logs, instructions given to the QFormer): ``[12, 34, 56, 78]``;
* ``"tokens"`` (LLM prompts and targets): one added token per bin, ``<c{bin}>`` with no zero padding,
  written with no space between tokens: ``[<c12><c34><c56><c78>]``. A Metaspace (SentencePiece-style)
  tokenizer turns every space between two added tokens into a ``'▁'`` token, which would double the
  length of a coordinate sequence.

Brackets and commas stay ordinary text; the coordinate tokens and the two separators are the tokens
added to the LLM vocabulary (:meth:`CoordinateCodec.added_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

BOX_SEP = "<bsep>"
"""Separates the groups of several boxes (and of several points)."""
MASK_SEP = "<msep>"
"""Separates the groups of several masks."""
COORD_TOKEN_PREFIX = "<c"
COORD_TOKEN_SUFFIX = ">"
"""A coordinate token is ``COORD_TOKEN_PREFIX + str(bin) + COORD_TOKEN_SUFFIX``, e.g. ``<c12>``."""

Style = Literal["human", "tokens"]
"""``"human"``: ``[12, 34]``; ``"tokens"``: ``[<c12><c34>]``."""


def spell_token(bin_index: int) -> str:
    """The token of one bin, e.g. ``"<c12>"``; the range is the codec's to check."""
    return f"{COORD_TOKEN_PREFIX}{int(bin_index)}{COORD_TOKEN_SUFFIX}"


def spell_group(values: Sequence[int], style: Style) -> str:
    """One bracketed group of (already checked) bins in ``style``."""
    if style == "human":
        return "[" + ", ".join(str(v) for v in values) + "]"
    if style == "tokens":
        return "[" + "".join(spell_token(v) for v in values) + "]"
    raise ValueError(f"style must be 'human' or 'tokens', got {style!r}")


def as_int_list(bins: Sequence[int] | np.ndarray) -> list[int]:
    """Bins of any shape as a flat list of Python ints."""
    return [int(b) for b in np.asarray(bins).reshape(-1)]
