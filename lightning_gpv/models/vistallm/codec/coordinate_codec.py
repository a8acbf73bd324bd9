""":class:`CoordinateCodec`: the one object that writes and reads VistaLLM coordinates.

Every place that turns boxes, points or masks into answer text, or answer text back into them, goes
through one codec instance, so the number of bins and of contour points cannot differ between the
tokenizer's vocabulary, the training targets and the parser of generated text.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lightning_gpv.errors import InputError
from lightning_gpv.geometry import Mask
from lightning_gpv.models.vistallm.codec import answers
from lightning_gpv.models.vistallm.codec.contours import mask_points as sample_mask_points
from lightning_gpv.models.vistallm.codec.contours import spread_repeated_points
from lightning_gpv.models.vistallm.codec.parsing import ParseResult, parse_text
from lightning_gpv.models.vistallm.codec.quantization import (
    ArrayT,
    Size,
    check_size,
    dequantize,
    dequantize_scalar,
    quantize,
    quantize_axis,
)
from lightning_gpv.models.vistallm.codec.vocabulary import (
    BOX_SEP,
    MASK_SEP,
    Style,
    as_int_list,
    spell_group,
    spell_token,
)
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Prediction, Target

PAPER_NUM_BINS = 1000
"""Bins per axis in the VistaLLM paper (the full-size configs' setting; the codec has no default)."""
PAPER_NUM_MASK_POINTS = 32
"""Contour points per mask in the VistaLLM paper (the full-size configs' setting)."""

_Float2D = np.ndarray | torch.Tensor | Sequence[Sequence[float]]


def _check_count(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass, but CoordinateCodec(True, ...) is a bug, not one bin.
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise InputError(f"CoordinateCodec.{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_float64(array: np.ndarray | torch.Tensor | Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().to(torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def _rows(array: _Float2D, width: int, what: str) -> np.ndarray:
    """``(k, width)`` rows from ``(k, width)`` or one ``(width,)`` row; ``k = 0`` is allowed."""
    rows = _as_float64(array)
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    if rows.ndim != 2 or (rows.size and rows.shape[1] != width):
        raise ValueError(f"{what} must have shape (k, {width}) or ({width},), got {rows.shape}")
    return rows.reshape(-1, width)


@dataclass(frozen=True)
class CoordinateCodec:
    """Writes boxes, points and masks as VistaLLM answer text and reads them back.

    Frame: every coordinate the codec takes or returns is an absolute pixel position in the *original*
    image it belongs to (pixel-corner convention), boxes are ``xyxy`` (top-left then bottom-right corner),
    points and contour points ``(x, y)``. Bins are relative to that image's own ``width`` (x) and
    ``height`` (y): each call takes the size of the one image its objects belong to, and the
    answer-level methods take ``image_sizes`` as ``(height, width)`` per input image. The resized
    ``S x S`` encoder input never enters; :mod:`~lightning_gpv.models.vistallm.codec.quantization` has the
    bin arithmetic, :mod:`~lightning_gpv.models.vistallm.codec.vocabulary` the spelling and
    :mod:`~lightning_gpv.models.vistallm.codec.parsing` the parser's rules.

    Build it from the model config's ``num_bins`` and ``num_mask_points``; nothing here has a default
    for them, so every writer and reader of one model shares them.

    Args:
        num_bins: Bins per axis, ``>= 2``; bins are ``0..num_bins-1``, one added token each.
        num_mask_points: Contour points written per mask, ``>= 3`` (a polygon needs three); parsed masks
            with another count are kept and reported.

    Raises:
        ValueError: naming the field, when an argument is not an integer in range.
    """

    num_bins: int
    num_mask_points: int

    def __post_init__(self) -> None:
        # frozen: the normalised values (numpy integers -> int) go in through object.__setattr__.
        object.__setattr__(self, "num_bins", _check_count("num_bins", self.num_bins, 2))
        object.__setattr__(self, "num_mask_points", _check_count("num_mask_points", self.num_mask_points, 3))

    # ----------------------------------------------------------------------------------------------
    # Vocabulary

    def coordinate_token(self, bin_index: int) -> str:
        """The token of one bin, e.g. ``"<c12>"``; raises ``ValueError`` outside ``0..num_bins-1``."""
        self._check_bins([bin_index])
        return spell_token(bin_index)

    def coordinate_tokens(self) -> list[str]:
        """All coordinate tokens in bin order: ``["<c0>", ..., f"<c{num_bins - 1}>"]``."""
        return [spell_token(b) for b in range(self.num_bins)]

    def added_tokens(self) -> list[str]:
        """Tokens the LLM vocabulary needs for coordinates, in id order: the coordinate tokens, then
        ``BOX_SEP`` and ``MASK_SEP`` (add them as special tokens, so they are never split)."""
        return [*self.coordinate_tokens(), BOX_SEP, MASK_SEP]

    # ----------------------------------------------------------------------------------------------
    # Bins

    def quantize(self, coords: ArrayT, width: Size, height: Size) -> ArrayT:
        """Pixel coordinates to bins.

        Args:
            coords: interleaved absolute pixel coordinates, shape ``(..., 2k)`` (x at even, y at odd
                indices): xyxy boxes ``(..., 4)``, points ``(..., 2)``, flat polygons ``(..., 2N)``.
            width: image width in pixels (x axis); scalar or broadcastable against ``coords[..., 0::2]``.
            height: image height in pixels (y axis); same rules as ``width``.

        Returns:
            Bins of the same shape and kind (int64 numpy or long torch), each in ``0..num_bins-1``.
            Out-of-image and non-finite values are clamped (see the quantization module).

        Raises:
            ValueError: on an odd last dimension or a non-positive or non-finite size.
        """
        return quantize(coords, width, height, self.num_bins)

    def dequantize(self, bins: ArrayT, width: Size, height: Size) -> ArrayT:
        """Bins to float32 absolute pixel coordinates at the bin centres, ``(bin + 0.5) / num_bins * size``.

        Args:
            bins: interleaved integer bins, shape ``(..., 2k)``; values outside ``0..num_bins-1`` are clamped.
            width: image width in pixels; scalar or broadcastable against ``bins[..., 0::2]``.
            height: image height in pixels; same rules as ``width``.

        Raises:
            ValueError: on an odd last dimension or a non-positive or non-finite size.
        """
        return dequantize(bins, width, height, self.num_bins)

    def quantize_value(self, value: float, size: float) -> int:
        """One coordinate (x with the image width, or y with its height) to its bin."""
        check_size(size, "size")
        return int(quantize_axis(np.asarray(value, dtype=np.float64), size, self.num_bins))

    def dequantize_value(self, bin_index: int, size: float) -> float:
        """One bin to the pixel coordinate of its centre, ``(bin + 0.5) / num_bins * size``."""
        return dequantize_scalar(bin_index, size, self.num_bins)

    def max_quantization_error(self, size: float) -> float:
        """Largest ``|v - dequantize(quantize(v))|`` for ``v`` in ``[0, size]``: ``size / (2 * num_bins)``.

        That is half a bin; floating-point rounding can add a few ulps on top.
        """
        return size / (2 * self.num_bins)

    # ----------------------------------------------------------------------------------------------
    # Writing

    def _check_bins(self, values: Sequence[int]) -> None:
        bad = [v for v in values if not 0 <= v < self.num_bins]
        if bad:
            raise ValueError(f"bins {bad[:4]} outside 0..{self.num_bins - 1}")

    def format_group(self, bins: Sequence[int] | np.ndarray, style: Style = "human") -> str:
        """One bracketed group of bins: ``[1, 2, 3, 4]`` (human) or ``[<c1><c2><c3><c4>]`` (tokens).

        Raises:
            ValueError: on a bin outside ``0..num_bins-1`` (it has no token) or an unknown style.
        """
        values = as_int_list(bins)
        self._check_bins(values)
        return spell_group(values, style)

    def _format_rows(self, rows: np.ndarray, width: float, height: float, style: Style, sep: str) -> str:
        bins = quantize(rows, width, height, self.num_bins)
        return sep.join(spell_group(as_int_list(row), style) for row in bins)

    def format_boxes(self, boxes: _Float2D, width: float, height: float, style: Style = "human") -> str:
        """Boxes ``(k, 4)`` or one box ``(4,)``, xyxy absolute pixels of an image of ``width x height``,
        as groups joined by ``BOX_SEP``; ``k = 0`` gives the empty string (VistaLLM's "no target")."""
        return self._format_rows(_rows(boxes, 4, "boxes"), width, height, style, BOX_SEP)

    def format_points(self, points: _Float2D, width: float, height: float, style: Style = "human") -> str:
        """Points ``(k, 2)`` or one point ``(2,)``, ``(x, y)`` absolute pixels, as ``[x, y]`` groups joined
        by ``BOX_SEP``; ``k = 0`` gives the empty string."""
        return self._format_rows(_rows(points, 2, "points"), width, height, style, BOX_SEP)

    def format_masks(
        self,
        polygons: Sequence[np.ndarray | torch.Tensor],
        width: float,
        height: float,
        style: Style = "human",
        *,
        spread_repeats: bool = True,
    ) -> str:
        """Masks as contour polygons, each ``(N, 2)`` ``(x, y)`` absolute pixels, as groups joined by
        ``MASK_SEP``.

        Each polygon (sampled to ``num_mask_points`` beforehand, e.g. by :meth:`mask_points`) is quantized
        and written as ``[x0, y0, ..., x{N-1}, y{N-1}]``; with ``spread_repeats`` (default) points that fall
        into their predecessor's bin are moved onto the longest edges (``spread_repeated_points``), else
        the bins are written as they fall.
        """
        groups = []
        for i, polygon in enumerate(polygons):
            points = _as_float64(polygon)
            if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
                raise ValueError(f"polygon {i} must have shape (N, 2) with N >= 1, got {points.shape}")
            bins = quantize(points.reshape(-1), width, height, self.num_bins).reshape(-1, 2)
            if spread_repeats:
                bins = spread_repeated_points(bins)
            groups.append(spell_group(as_int_list(bins), style))
        return MASK_SEP.join(groups)

    def mask_points(self, mask: Mask) -> np.ndarray:
        """``(num_mask_points, 2)`` float32 ``(x, y)`` contour points of a mask in its image's pixels, or
        ``(0, 2)`` for an empty mask (which :meth:`serialize_answer` leaves out)."""
        return sample_mask_points(mask, self.num_mask_points)

    # ----------------------------------------------------------------------------------------------
    # Reading (never raises on the text; only a non-positive width/height raises ValueError)

    def parse_boxes(self, text: str, width: float, height: float) -> ParseResult:
        """Boxes from an answer (REC, GREC, spot captioning) in an image of ``width x height`` pixels;
        fills ``ParseResult.boxes``, ``(k, 4)`` xyxy pixels."""
        return parse_text(
            text, width, height, "boxes", num_bins=self.num_bins, num_points=self.num_mask_points
        )

    def parse_points(self, text: str, width: float, height: float) -> ParseResult:
        """Points from an answer; fills ``ParseResult.points``, ``(k, 2)`` ``(x, y)`` pixels."""
        return parse_text(
            text, width, height, "points", num_bins=self.num_bins, num_points=self.num_mask_points
        )

    def parse_masks(self, text: str, width: float, height: float) -> ParseResult:
        """Mask contours from an answer (RES, GRES, CoSeg); fills ``ParseResult.masks``, each ``(N, 2)``
        ``(x, y)`` pixels. Masks of another point count than ``num_mask_points`` are kept and reported."""
        return parse_text(
            text, width, height, "masks", num_bins=self.num_bins, num_points=self.num_mask_points
        )

    def parse_answer(self, text: str, width: float, height: float) -> ParseResult:
        """Every object in an answer, sorted by its number of values: 2 a point, 4 a box, 6 or more a mask.

        Use it for answers that mix free text and coordinates (spot captioning) or whose kind is unknown;
        ``ParseResult.text`` holds the free text.
        """
        return parse_text(text, width, height, "any", num_bins=self.num_bins, num_points=self.num_mask_points)

    # ----------------------------------------------------------------------------------------------
    # Whole answers

    def serialize_answer(
        self,
        task: Task,
        target: Target,
        image_sizes: Sequence[tuple[int, int]],
        *,
        style: Style = "tokens",
    ) -> str:
        """The answer text a sample is trained on; the formats are listed in the ``answers`` module.

        Args:
            task: The task.
            target: The sample's target: xyxy boxes and masks in absolute pixels of their own images.
            image_sizes: ``(height, width)`` of each original input image; each object is quantized in
                the frame of the image it belongs to.
            style: ``"tokens"`` for LLM targets, ``"human"`` for logs.
        """
        return answers.serialize_answer(self, task, target, image_sizes, style)

    def parse_prediction(
        self, task: Task, text: str, image_sizes: Sequence[tuple[int, int]], *, sample_id: str = ""
    ) -> Prediction:
        """Parse generated text into a :class:`Prediction` (never raises on any ``text``).

        Args:
            task: The task the text answers.
            text: Decoded generation (see ``decode_generated``).
            image_sizes: ``(height, width)`` of each original input image; boxes and masks come back as
                xyxy boxes and polygon masks in absolute pixels of the image they belong to.
            sample_id: Copied into the prediction.
        """
        return answers.parse_prediction(self, task, text, image_sizes, sample_id)
