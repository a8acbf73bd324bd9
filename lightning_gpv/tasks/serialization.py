"""Write boxes, points and masks as VistaLLM answers, and read them back from generated text.

Every coordinate is a bin ``0..NUM_BINS-1`` (see :mod:`lightning_gpv.tasks.coordinates`). One object is
one bracketed group of bins, x before y:

* box ``[x0, y0, x1, y1]`` (xyxy, top-left then bottom-right corner), several joined by ``<bsep>``;
* point ``[x, y]``, several joined by ``<bsep>``;
* mask ``[x0, y0, ..., x31, y31]`` (32 contour points), several joined by ``<msep>``.

Two styles write the same groups:

* ``"human"`` (logs, prompts shown to people): ``[12, 34, 56, 78]<bsep>[5, 6, 7, 8]``;
* ``"tokens"`` (LLM targets): one added token per bin, spelled ``<c{bin}>`` (``<c0>`` .. ``<c999>``, no zero
  padding), written with no space between tokens: ``[<c12><c34><c56><c78>]<bsep>[<c5><c6><c7><c8>]``.
  A Metaspace (SentencePiece-style) tokenizer turns every space between two added tokens into a
  ``'▁'`` token, which would double the length of a coordinate sequence.

The tokens the LLM must learn are :func:`special_tokens`: the coordinate tokens, ``BOX_SEP`` and
``MASK_SEP``. Brackets and commas stay ordinary text.

Parsing (:func:`parse_boxes`, :func:`parse_points`, :func:`parse_masks`, :func:`parse_answer`) never
raises on any text. It accepts both styles and mixtures of them (tokens or plain integers, with or
without commas and spaces). Text in brackets that is not made only of coordinates (``[holding]``) is
treated as ordinary text; ``[]`` and an empty string mean "no target". Every group that is dropped or
changed is reported in ``ParseResult.dropped``. Rules:

* a value that is negative, non-integer or above ``num_bins - 1`` drops its group;
* a group with the wrong number of values for the requested kind is dropped;
* a box with ``x1 < x0`` or ``y1 < y0`` is kept with the corners swapped (the model's intent is clear and
  IoU scoring still penalises it), and the swap is reported;
* a mask needs an even number of values and at least 3 points; one with another count than
  ``num_points`` is kept and reported;
* an unclosed group is dropped: at the end of the text it is a truncated generation (reported if it
  holds any value, even one cut mid-token such as ``[<c1><c2><c``), in the middle it is followed by
  another ``[``; complete groups before it are kept;
* coordinate tokens outside any bracket are ignored and reported.

Parsed objects come back as float32 absolute pixel coordinates at the bin centres. The only error a
parser raises is ``ValueError`` for a non-positive ``width``/``height`` (a caller bug, checked first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from lightning_gpv.tasks.coordinates import NUM_BINS, dequantize, quantize

BOX_SEP = "<bsep>"
"""Separates the groups of several boxes (and of several points)."""
MASK_SEP = "<msep>"
"""Separates the groups of several masks."""
COORD_TOKEN_PREFIX = "<c"
COORD_TOKEN_SUFFIX = ">"
"""A coordinate token is ``COORD_TOKEN_PREFIX + str(bin) + COORD_TOKEN_SUFFIX``, e.g. ``<c12>``."""
NUM_MASK_POINTS = 32
"""Contour points per mask in VistaLLM answers."""

Style = Literal["human", "tokens"]
Kind = Literal["boxes", "points", "masks", "any"]

_TOKEN_RE = re.compile(re.escape(COORD_TOKEN_PREFIX) + r"([0-9]+)" + re.escape(COORD_TOKEN_SUFFIX))
# One item of a bracketed group: a coordinate token, a number, separators, or one other character.
_ITEM_RE = re.compile(
    re.escape(COORD_TOKEN_PREFIX)
    + r"(?P<tok>[0-9]+)"
    + re.escape(COORD_TOKEN_SUFFIX)
    + r"|(?P<num>[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))|(?P<sep>[,\s]+)|(?P<junk>.)",
    re.DOTALL,
)
_MAX_DIGITS = 9  # longer digit strings are out of range without converting them (int() limits digits)


def coordinate_token(bin_index: int) -> str:
    """The token of one bin, e.g. ``coordinate_token(12) == "<c12>"``."""
    return f"{COORD_TOKEN_PREFIX}{int(bin_index)}{COORD_TOKEN_SUFFIX}"


def coordinate_tokens(num_bins: int = NUM_BINS) -> list[str]:
    """All coordinate tokens in bin order: ``["<c0>", ..., f"<c{num_bins - 1}>"]``."""
    return [coordinate_token(b) for b in range(num_bins)]


def special_tokens(num_bins: int = NUM_BINS) -> list[str]:
    """Tokens to add to the LLM tokenizer as special tokens: coordinate tokens, ``BOX_SEP``, ``MASK_SEP``."""
    return [*coordinate_tokens(num_bins), BOX_SEP, MASK_SEP]


# --------------------------------------------------------------------------------------------------
# Writing


def format_group(bins: Sequence[int] | np.ndarray, style: Style = "human") -> str:
    """One bracketed group of bins: ``[1, 2, 3, 4]`` (human) or ``[<c1><c2><c3><c4>]`` (tokens)."""
    values = [int(b) for b in np.asarray(bins).reshape(-1)]
    if style == "human":
        return "[" + ", ".join(str(v) for v in values) + "]"
    if style == "tokens":
        return "[" + "".join(coordinate_token(v) for v in values) + "]"
    raise ValueError(f"style must be 'human' or 'tokens', got {style!r}")


def _as_numpy(array: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().to(torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def _format_rows(rows: np.ndarray, width: float, height: float, style: Style, sep: str, num_bins: int) -> str:
    bins = quantize(rows, width, height, num_bins)
    return sep.join(format_group(row, style) for row in bins)


def format_boxes(
    boxes: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    width: float,
    height: float,
    style: Style = "human",
    num_bins: int = NUM_BINS,
) -> str:
    """Boxes ``(k, 4)`` or one box ``(4,)``, xyxy absolute pixels, as groups joined by ``BOX_SEP``.

    ``k = 0`` gives the empty string (VistaLLM's "no target" answer).
    """
    rows = _as_numpy(boxes)
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    if rows.ndim != 2 or (rows.size and rows.shape[1] != 4):
        raise ValueError(f"boxes must have shape (k, 4) or (4,), got {rows.shape}")
    return _format_rows(rows.reshape(-1, 4), width, height, style, BOX_SEP, num_bins)


def format_points(
    points: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    width: float,
    height: float,
    style: Style = "human",
    num_bins: int = NUM_BINS,
) -> str:
    """Points ``(k, 2)`` or one point ``(2,)``, absolute pixels, as ``[x, y]`` groups joined by ``BOX_SEP``.

    ``k = 0`` gives the empty string.
    """
    rows = _as_numpy(points)
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    if rows.ndim != 2 or (rows.size and rows.shape[1] != 2):
        raise ValueError(f"points must have shape (k, 2) or (2,), got {rows.shape}")
    return _format_rows(rows.reshape(-1, 2), width, height, style, BOX_SEP, num_bins)


def spread_repeated_points(bins: np.ndarray) -> np.ndarray:
    """A quantized closed contour with its repeated consecutive points moved onto its longest edges.

    Coarse bins put consecutive contour points into the same bin (at 32 bins and 32 points, 37% of the points
    of the tiny demo's masks repeat their predecessor). A repeat adds nothing to the polygon, and a sequence
    model trained on them learns "repeat the previous point" as the likeliest next point, which greedy
    decoding never leaves: a zero-area mask. Here every run of equal consecutive points (the contour is
    closed, so a run at the end that equals the first point joins it) keeps one point, and the freed points
    go back evenly between the ends of the longest edges (longest in bin steps, ``max(|dx|, |dy|)``),
    rounded to bins. The polygon is the same up to that rounding (half a bin), its first point stays first,
    and no two consecutive points are equal unless the merged polygon has fewer bin steps than points (a
    contour a few bins across), in which case its last point is repeated.

    Args:
        bins: ``(N, 2)`` integer bins ``(x, y)`` of one contour, in order.

    Returns:
        ``(N, 2)`` int64 bins.
    """
    bins = np.asarray(bins, dtype=np.int64)
    num_points = len(bins)
    if num_points < 2:
        return bins
    keep = np.ones(num_points, dtype=bool)
    keep[1:] = (bins[1:] != bins[:-1]).any(axis=1)
    vertices = bins[keep]
    while len(vertices) > 1 and (vertices[-1] == vertices[0]).all():
        vertices = vertices[:-1]
    following = np.roll(vertices, -1, axis=0)
    steps = np.abs(following - vertices).max(axis=1)
    inserted = np.zeros(len(vertices), dtype=np.int64)
    for _ in range(num_points - len(vertices)):
        # An edge of s steps holds at most s - 1 inserted points that differ from their neighbours.
        room = np.where(inserted + 1 < steps, steps / (inserted + 1), -1.0)
        edge = int(np.argmax(room))
        if room[edge] < 0:
            break
        inserted[edge] += 1
    out = []
    for start, end, count in zip(vertices, following, inserted):
        fractions = np.arange(count + 1)[:, None] / (count + 1)
        out.append(np.floor(start + fractions * (end - start) + 0.5).astype(np.int64))
    spread = np.concatenate(out)
    padding = np.repeat(spread[-1:], num_points - len(spread), axis=0)
    return np.concatenate([spread, padding])


def format_masks(
    polygons: Sequence[np.ndarray | torch.Tensor],
    width: float,
    height: float,
    style: Style = "human",
    num_bins: int = NUM_BINS,
    *,
    spread_repeats: bool = True,
) -> str:
    """Masks as contour polygons, each ``(N, 2)`` absolute pixels, as groups joined by ``MASK_SEP``.

    Each polygon (sample it to 32 points beforehand) is quantized and written as ``[x0, y0, ..., x{N-1},
    y{N-1}]``; with ``spread_repeats`` (default) points that fall into their predecessor's bin are moved
    onto the longest edges (:func:`spread_repeated_points`), else the bins are written as they fall.
    """
    groups = []
    for i, polygon in enumerate(polygons):
        points = _as_numpy(polygon)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
            raise ValueError(f"polygon {i} must have shape (N, 2) with N >= 1, got {points.shape}")
        bins = quantize(points.reshape(-1), width, height, num_bins).reshape(-1, 2)
        if spread_repeats:
            bins = spread_repeated_points(bins)
        groups.append(format_group(bins, style))
    return MASK_SEP.join(groups)


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass
class ParseResult:
    """Objects read from one answer, in float32 absolute pixel coordinates (bin centres).

    Attributes:
        boxes: ``(k, 4)`` xyxy with ``x0 <= x1`` and ``y0 <= y1``; ``(0, 4)`` when there are none.
        points: ``(k, 2)`` xy; ``(0, 2)`` when there are none.
        masks: one ``(N, 2)`` contour per mask, ``N >= 3``.
        text: the answer without coordinate groups, separators and coordinate tokens, whitespace
            collapsed (the caption of a spot-captioning answer).
        dropped: one line per group that was dropped or changed, saying why, e.g.
            ``"group 2: 3 values, expected 4"``. Empty when the answer parsed cleanly.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    masks: list[np.ndarray] = field(default_factory=list)
    text: str = ""
    dropped: list[str] = field(default_factory=list)


def _short(s: str, limit: int = 20) -> str:
    return s if len(s) <= limit else s[:limit] + "..."


def _scan_group(content: str) -> tuple[list[str], str]:
    """Split bracket content into value strings (token bins as digits, numbers as written) and junk."""
    values: list[str] = []
    junk: list[str] = []
    for m in _ITEM_RE.finditer(content):
        if m.group("tok") is not None:
            values.append(m.group("tok"))
        elif m.group("num") is not None:
            values.append(m.group("num"))
        elif m.group("junk") is not None:
            junk.append(m.group("junk"))
    return values, "".join(junk)


def _to_bin(value: str, num_bins: int) -> tuple[int | None, str]:
    """A value string to a bin, or ``None`` and why not."""
    if value.startswith("-") and value.strip("-0.") != "":
        return None, f"negative value {_short(value)}"
    digits = value.lstrip("+-")
    if "." in digits:
        return None, f"non-integer value {_short(value)}"
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS or int(digits) > num_bins - 1:
        return None, f"value {_short(value)} out of range 0..{num_bins - 1}"
    return int(digits), ""


class _Collector:
    """Accumulates the objects of one parse."""

    def __init__(self, kind: Kind, width: float, height: float, num_bins: int, num_points: int) -> None:
        self.kind, self.width, self.height = kind, width, height
        self.num_bins, self.num_points = num_bins, num_points
        self.boxes: list[list[int]] = []
        self.points: list[list[int]] = []
        self.masks: list[list[int]] = []
        self.dropped: list[str] = []
        self.num_groups = 0

    def next_group(self) -> str:
        self.num_groups += 1
        return f"group {self.num_groups}"

    def add(self, values: list[str]) -> None:
        name = self.next_group()
        bins: list[int] = []
        for value in values:
            b, why = _to_bin(value, self.num_bins)
            if b is None:
                self.dropped.append(f"{name}: {why}")
                return
            bins.append(b)
        n = len(bins)
        kind = self.kind
        if kind == "any":
            kind = "points" if n == 2 else "boxes" if n == 4 else "masks"
            if n % 2 or (kind == "masks" and n < 6):
                self.dropped.append(f"{name}: {n} values, not a point (2), box (4) or mask (even, >= 6)")
                return
        if kind == "boxes":
            self._add_box(name, bins)
        elif kind == "points":
            if n != 2:
                self.dropped.append(f"{name}: {n} values, expected 2")
                return
            self.points.append(bins)
        else:
            self._add_mask(name, bins)

    def _add_box(self, name: str, bins: list[int]) -> None:
        if len(bins) != 4:
            self.dropped.append(f"{name}: {len(bins)} values, expected 4")
            return
        x0, y0, x1, y1 = bins
        if x1 < x0:
            x0, x1 = x1, x0
            self.dropped.append(f"{name}: x1 < x0, swapped")
        if y1 < y0:
            y0, y1 = y1, y0
            self.dropped.append(f"{name}: y1 < y0, swapped")
        self.boxes.append([x0, y0, x1, y1])

    def _add_mask(self, name: str, bins: list[int]) -> None:
        n = len(bins)
        if n % 2:
            self.dropped.append(f"{name}: odd number of values ({n})")
            return
        if n // 2 < 3:
            self.dropped.append(f"{name}: {n // 2} points, need at least 3")
            return
        if n // 2 != self.num_points:
            self.dropped.append(f"{name}: {n // 2} points, expected {self.num_points} (kept)")
        self.masks.append(bins)

    def result(self, text: str) -> ParseResult:
        w, h, nb = self.width, self.height, self.num_bins
        boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)
        points = np.asarray(self.points, dtype=np.int64).reshape(-1, 2)
        return ParseResult(
            boxes=dequantize(boxes, w, h, nb),
            points=dequantize(points, w, h, nb),
            masks=[dequantize(np.asarray(m, np.int64), w, h, nb).reshape(-1, 2) for m in self.masks],
            text=text,
            dropped=self.dropped,
        )


def _parse(
    text: object, width: float, height: float, kind: Kind, num_bins: int, num_points: int
) -> ParseResult:
    # Invalid sizes are the caller's bug: checked (and raised) before the text is looked at.
    dequantize(np.zeros((0, 2), np.int64), width, height, num_bins)
    out = _Collector(kind, width, height, num_bins, num_points)
    if not isinstance(text, str):
        out.dropped.append(f"answer of type {type(text).__name__} is not text")
        return out.result("")
    pieces: list[str] = []  # the free text
    pos = 0  # start of the text not yet consumed
    open_at: int | None = None  # index of the pending '['
    for m in re.finditer(r"[\[\]]", text):
        i = m.start()
        if m.group() == "[":
            if open_at is not None:  # a '[' that was never closed
                values, junk = _scan_group(text[open_at + 1 : i])
                if values and not junk:
                    out.dropped.append(f"{out.next_group()}: unclosed bracket, dropped")
                else:
                    pieces.append(text[open_at:i])
            else:
                pieces.append(text[pos:i])
            open_at = i
        elif open_at is not None:  # ']' closing the pending '['
            content = text[open_at + 1 : i]
            values, junk = _scan_group(content)
            if junk:
                pieces.append(text[open_at : i + 1])
                if values:
                    out.dropped.append(f"bracket '{_short(content)}' mixes text and numbers, kept as text")
            elif values:
                out.add(values)
            open_at, pos = None, i + 1
    if open_at is not None:
        values, junk = _scan_group(text[open_at + 1 :])
        if junk and not values:
            pieces.append(text[open_at:])
        else:
            out.dropped.append(f"{out.next_group()}: truncated group at end ({len(values)} values), dropped")
    else:
        pieces.append(text[pos:])
    free = "".join(pieces).replace(BOX_SEP, " ").replace(MASK_SEP, " ")
    free, stray = _TOKEN_RE.subn(" ", free)
    if stray:
        out.dropped.append(f"{stray} coordinate token(s) outside brackets ignored")
    return out.result(" ".join(free.split()))


def parse_boxes(text: str, width: float, height: float, num_bins: int = NUM_BINS) -> ParseResult:
    """Boxes from an answer (REC, GREC, spot captioning); fills ``ParseResult.boxes``, shape ``(k, 4)``."""
    return _parse(text, width, height, "boxes", num_bins, NUM_MASK_POINTS)


def parse_points(text: str, width: float, height: float, num_bins: int = NUM_BINS) -> ParseResult:
    """Points from an answer; fills ``ParseResult.points``, shape ``(k, 2)``."""
    return _parse(text, width, height, "points", num_bins, NUM_MASK_POINTS)


def parse_masks(
    text: str,
    width: float,
    height: float,
    num_points: int = NUM_MASK_POINTS,
    num_bins: int = NUM_BINS,
) -> ParseResult:
    """Mask contours from an answer (RES, GRES, CoSeg); fills ``ParseResult.masks``, each ``(N, 2)``."""
    return _parse(text, width, height, "masks", num_bins, num_points)


def parse_answer(
    text: str,
    width: float,
    height: float,
    num_points: int = NUM_MASK_POINTS,
    num_bins: int = NUM_BINS,
) -> ParseResult:
    """Every object in an answer, sorted by its number of values: 2 a point, 4 a box, 6 or more a mask.

    Use it for answers that mix free text and coordinates (spot captioning) or whose kind is unknown;
    ``ParseResult.text`` holds the free text.
    """
    return _parse(text, width, height, "any", num_bins, num_points)
