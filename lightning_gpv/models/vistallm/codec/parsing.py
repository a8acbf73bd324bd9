"""Reading boxes, points and masks back from answer text, without ever raising on the text.

The parser accepts both styles of :mod:`~lightning_gpv.models.vistallm.codec.vocabulary` and mixtures of
them (tokens or plain integers, with or without commas and spaces). Text in brackets that is not made only
of coordinates (``[holding]``) is treated as ordinary text; ``[]`` and an empty string mean "no target".
Every group that is dropped or changed is reported in ``ParseResult.dropped``. Rules:

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

Parsed objects come back as float32 absolute pixel coordinates at the bin centres, in the frame of the
``width`` and ``height`` given (see :mod:`~lightning_gpv.models.vistallm.codec.quantization`). The only
error raised is ``ValueError`` for a non-positive ``width``/``height`` (a caller bug, checked first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lightning_gpv.models.vistallm.codec.quantization import check_size, dequantize
from lightning_gpv.models.vistallm.codec.vocabulary import (
    BOX_SEP,
    COORD_TOKEN_PREFIX,
    COORD_TOKEN_SUFFIX,
    MASK_SEP,
)

Kind = Literal["boxes", "points", "masks", "any"]
"""What a parse looks for; ``"any"`` sorts groups by their number of values."""

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


@dataclass
class ParseResult:
    """Objects read from one answer, in float32 absolute pixel coordinates (bin centres) of the image
    whose ``width`` and ``height`` were given to the parser.

    Attributes:
        boxes: ``(k, 4)`` xyxy pixels with ``x0 <= x1`` and ``y0 <= y1``; ``(0, 4)`` when there are none.
        points: ``(k, 2)`` xy pixels; ``(0, 2)`` when there are none.
        masks: one ``(N, 2)`` xy contour per mask, ``N >= 3``.
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


def parse_text(
    text: object, width: float, height: float, kind: Kind, *, num_bins: int, num_points: int
) -> ParseResult:
    """Read the objects of ``kind`` from ``text`` (see the module docstring for the rules).

    Args:
        text: The answer; anything that is not a ``str`` gives an empty result with one drop.
        width: Width in pixels of the image the coordinates belong to (the x frame).
        height: Height in pixels of that image (the y frame).
        kind: Which objects to read.
        num_bins: Bins per axis; values above ``num_bins - 1`` drop their group.
        num_points: Expected contour points per mask (masks with another count are kept and reported).
    """
    # Invalid sizes are the caller's bug: checked (and raised) before the text is looked at.
    check_size(width, "width")
    check_size(height, "height")
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
