"""Binary masks: polygon rasterisation, COCO RLE, IoU, boxes, and the :class:`Mask` container of task targets.

Conventions (the same as COCO and the rest of ``lightning_gpv.geometry``):

* A mask is an ``(H, W)`` array; non-zero (or ``True``) pixels are foreground. Functions return ``bool``
  arrays.
* Points are ``(x, y)`` in pixels. Pixel ``(row r, col c)`` covers ``[c, c + 1) x [r, r + 1)``, so its centre
  is ``(c + 0.5, r + 0.5)`` and the image spans ``[0, W] x [0, H]``.
* A polygon is a ``(K, 2)`` array of ``(x, y)`` vertices or a flat sequence ``[x0, y0, x1, y1, ...]``, closed
  implicitly (no repeated last vertex). Polygons are rasterised with ``pycocotools`` (``frPyObjects`` +
  ``decode``), exactly as COCO ground-truth masks are, so a pixel is foreground when its centre is inside.
  A polygon with fewer than 3 vertices rasterises to nothing.
* RLE is COCO's run-length encoding over the column-major (Fortran order) pixels, starting with a run of
  zeros: ``{"size": [H, W], "counts": ...}``. *Compressed* RLE has ``counts`` as a COCO-encoded ``str``
  (``bytes`` are accepted too); *uncompressed* RLE has ``counts`` as a list of ints, as in COCO ``iscrowd``
  annotations.
* Boxes are ``xyxy`` in the same pixel-corner coordinates: a mask with pixels in columns ``c0..c1`` and rows
  ``r0..r1`` has the box ``[c0, r0, c1 + 1, r1 + 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from lightning_gpv.geometry.outlines import as_uint8_mask, mask_outlines

__all__ = [
    "Mask",
    "Polygon",
    "box_of_mask",
    "mask_iou",
    "mask_to_polygons",
    "mask_to_rle",
    "polygon_to_mask",
    "polygons_to_mask",
    "polygons_to_rle",
    "rle_to_mask",
]

Polygon = np.ndarray | Sequence[float]
"""A ``(K, 2)`` array of ``(x, y)`` vertices or a flat ``[x0, y0, x1, y1, ...]`` sequence."""


def _flat_polygon(polygon: Polygon) -> list[float]:
    """Flatten a polygon to ``[x0, y0, x1, y1, ...]`` floats, checking the coordinate count is even."""
    flat = np.asarray(polygon, dtype=np.float64).reshape(-1)
    if flat.size % 2:
        raise ValueError(f"a polygon needs an even number of coordinates, got {flat.size}")
    if not np.all(np.isfinite(flat)):
        raise ValueError("polygon coordinates must be finite")
    return flat.tolist()


def _empty_rle(height: int, width: int) -> dict[str, Any]:
    return _normalise_rle(coco_mask.encode(np.zeros((height, width), dtype=np.uint8, order="F")))


def _normalise_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Compressed RLE with ``str`` counts and ``[H, W]`` ints (JSON-serialisable)."""
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def polygons_to_rle(polygons: Sequence[Polygon], height: int, width: int) -> dict[str, Any]:
    """Rasterise the union of polygons to compressed COCO RLE with the COCO rasteriser.

    Args:
        polygons: polygons in pixel coordinates (see the module docstring); those with fewer than 3
            vertices are skipped.
        height: image height ``H``.
        width: image width ``W``.

    Returns:
        Compressed RLE ``{"size": [H, W], "counts": str}``.
    """
    flats = [flat for flat in (_flat_polygon(p) for p in polygons) if len(flat) >= 6]
    if not flats:
        return _empty_rle(height, width)
    rles = coco_mask.frPyObjects(flats, height, width)
    return _normalise_rle(coco_mask.merge(rles) if len(rles) > 1 else rles[0])


def polygons_to_mask(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """Rasterise the union of several polygons to an ``(H, W)`` bool mask (COCO rasteriser, pixel centres).

    Args:
        polygons: polygons in pixel coordinates; those with fewer than 3 vertices are skipped.
        height: image height ``H``.
        width: image width ``W``.

    Returns:
        ``(H, W)`` bool mask.
    """
    return rle_to_mask(polygons_to_rle(polygons, height, width))


def polygon_to_mask(polygon: Polygon, height: int, width: int) -> np.ndarray:
    """Rasterise one polygon to an ``(H, W)`` bool mask with ``pycocotools`` (COCO convention).

    Args:
        polygon: ``(K, 2)`` array of ``(x, y)`` vertices or flat ``[x0, y0, ...]``; pixel ``(r, c)`` is
            foreground when its centre ``(c + 0.5, r + 0.5)`` is inside. Fewer than 3 vertices give an empty
            mask.
        height: image height ``H``.
        width: image width ``W``.

    Returns:
        ``(H, W)`` bool mask.
    """
    return polygons_to_mask([polygon], height, width)


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[np.ndarray]:
    """Outer outlines of a mask's connected components as polygons, largest component first.

    The outlines are the sub-pixel outlines of :func:`lightning_gpv.geometry.outlines.mask_outlines`: they
    re-rasterise (:func:`polygons_to_mask`) to the original mask up to a few boundary pixels. Holes are not
    represented: a mask with holes comes back filled (with any component inside a hole).

    Args:
        mask: ``(H, W)`` mask.
        tolerance: if > 0, simplify each outline with Douglas-Peucker (``cv2.approxPolyDP``) at this
            distance in pixels. ``0.5`` is nearly lossless and much shorter than the dense outline (about
            one vertex per boundary pixel).

    Returns:
        A list (empty for an empty mask) of ``(K, 2)`` float32 ``(x, y)`` polygons, clockwise on screen.
    """
    polygons = []
    for outline in mask_outlines(mask):
        poly = outline.astype(np.float32)
        if tolerance > 0 and len(poly) > 3:
            simplified = cv2.approxPolyDP(poly.reshape(-1, 1, 2), float(tolerance), True).reshape(-1, 2)
            poly = simplified if len(simplified) >= 3 else poly
        polygons.append(poly)
    return polygons


def mask_to_rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """Encode a mask as COCO RLE.

    Args:
        mask: ``(H, W)`` mask; non-zero pixels are foreground.
        compressed: ``True`` for compressed RLE (``counts`` a ``str``), ``False`` for uncompressed RLE
            (``counts`` a list of ints: alternating runs of 0s and 1s in column-major order, zeros first).

    Returns:
        ``{"size": [H, W], "counts": str | list[int]}``.
    """
    m = as_uint8_mask(mask)
    height, width = m.shape
    if compressed:
        return _normalise_rle(coco_mask.encode(np.asfortranarray(m != 0, dtype=np.uint8)))
    flat = (m != 0).ravel(order="F")
    if flat.size == 0:
        return {"size": [height, width], "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"size": [height, width], "counts": counts}


def _compressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Any COCO RLE (``counts`` as list, ``str`` or ``bytes``) as compressed RLE with ``bytes`` counts."""
    if "size" not in rle or "counts" not in rle:
        raise ValueError(f"an RLE needs 'size' and 'counts', got keys {sorted(rle)}")
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    elif not isinstance(counts, bytes):
        counts = [int(c) for c in counts]
        if sum(counts) != height * width:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, expected H*W = {height * width}")
        return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed: ``str``/``bytes`` counts; uncompressed: a list) to a bool mask.

    Args:
        rle: ``{"size": [H, W], "counts": ...}``.

    Returns:
        ``(H, W)`` bool mask.
    """
    return coco_mask.decode(_compressed_rle(rle)).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks of the same shape.

    Two empty masks have IoU ``1.0`` (they agree perfectly; this is the gIoU convention for no-target samples
    in generalised referring segmentation). An empty and a non-empty mask have IoU ``0.0``.

    Args:
        a: ``(H, W)`` mask.
        b: ``(H, W)`` mask.

    Returns:
        IoU in ``[0, 1]``.
    """
    a, b = as_uint8_mask(a) != 0, as_uint8_mask(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def box_of_mask(mask: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` box of a mask's foreground, in pixel-corner coordinates.

    Args:
        mask: ``(H, W)`` mask.

    Returns:
        ``(4,)`` float32 ``[x0, y0, x1, y1]`` with ``x1 = last foreground column + 1`` (so a single pixel at
        ``(r, c)`` gives ``[c, r, c + 1, r + 1]``). An empty mask gives ``[0, 0, 0, 0]``, like
        ``pycocotools``.
    """
    x, y, w, h = cv2.boundingRect(as_uint8_mask(mask))
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def _rle_box(rle: dict[str, Any]) -> np.ndarray:
    x, y, w, h = coco_mask.toBbox(_compressed_rle(rle))
    return np.array([x, y, x + w, y + h], dtype=np.float32)


@dataclass(eq=False)
class Mask:
    """A binary mask of an ``H x W`` image, stored compactly as polygons or as compressed COCO RLE.

    This is what task samples store for segmentation targets. Exactly one of ``polygons`` and ``rle`` is set.
    Polygons are rasterised with the COCO rasteriser (see the module docstring), so ``area`` and ``bbox`` are
    those of the rasterised pixels, not of the continuous polygons.

    A value, never changed after construction, yet not a frozen dataclass: Lightning copies what a
    ``predict_step`` returns field by field (``move_data_to_device``) and refuses frozen dataclasses, so
    ``Trainer.predict`` of masks would fail.

    Attributes:
        height: image height ``H``.
        width: image width ``W``.
        polygons: tuple of ``(K, 2)`` float32 ``(x, y)`` polygons whose union is the mask, or ``None``.
        rle: compressed COCO RLE ``{"size": [H, W], "counts": str}``, or ``None``.
    """

    height: int
    width: int
    polygons: tuple[np.ndarray, ...] | None = None
    rle: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.polygons is None) == (self.rle is None):
            raise ValueError("a Mask needs exactly one of `polygons` and `rle`")
        self.height = int(self.height)
        self.width = int(self.width)
        if self.polygons is not None:
            polys = tuple(np.float32(_flat_polygon(p)).reshape(-1, 2) for p in self.polygons)
            self.polygons = polys
        else:
            rle = _normalise_rle(_compressed_rle(self.rle))
            if rle["size"] != [self.height, self.width]:
                size = [self.height, self.width]
                raise ValueError(f"RLE size {rle['size']} does not match [height, width] = {size}")
            self.rle = rle

    @classmethod
    def from_array(cls, mask: np.ndarray, as_polygons: bool = False, tolerance: float = 0.0) -> Mask:
        """Store an ``(H, W)`` mask as RLE (lossless, the default) or as outer-outline polygons.

        Polygons drop holes and may differ from the mask by a few boundary pixels; see
        :func:`mask_to_polygons` for ``tolerance``.
        """
        height, width = np.shape(mask)
        if as_polygons:
            return cls(height, width, polygons=tuple(mask_to_polygons(mask, tolerance)))
        return cls(height, width, rle=mask_to_rle(mask))

    @classmethod
    def from_polygons(cls, polygons: Sequence[Polygon], height: int, width: int) -> Mask:
        """Wrap polygons (each ``(K, 2)`` or flat ``[x0, y0, ...]``) of an ``H x W`` image."""
        return cls(height, width, polygons=tuple(polygons))

    @classmethod
    def from_rle(cls, rle: dict[str, Any]) -> Mask:
        """Wrap a COCO RLE, compressed (``str``/``bytes`` counts) or uncompressed (list counts)."""
        height, width = rle["size"]
        return cls(height, width, rle=rle)

    @classmethod
    def from_coco(cls, segmentation: list[list[float]] | dict[str, Any], height: int, width: int) -> Mask:
        """Build from a COCO annotation's ``segmentation`` field: a list of flat polygons, or an RLE dict."""
        if isinstance(segmentation, dict):
            return cls(height, width, rle=segmentation)
        return cls(height, width, polygons=tuple(segmentation))

    def to_rle(self) -> dict[str, Any]:
        """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` of the mask."""
        if self.rle is not None:
            return self.rle
        return polygons_to_rle(self.polygons, self.height, self.width)

    def to_array(self) -> np.ndarray:
        """The ``(H, W)`` bool mask."""
        return rle_to_mask(self.to_rle())

    def to_coco(self) -> list[list[float]] | dict[str, Any]:
        """The COCO ``segmentation`` field: flat polygons ``[[x0, y0, ...], ...]`` or the compressed RLE."""
        if self.polygons is not None:
            return [p.reshape(-1).astype(np.float64).tolist() for p in self.polygons]
        return dict(self.rle)

    @property
    def area(self) -> int:
        """Number of foreground pixels."""
        return int(coco_mask.area(_compressed_rle(self.to_rle())))

    @property
    def bbox(self) -> np.ndarray:
        """``(4,)`` float32 ``xyxy`` box of the foreground pixels (see :func:`box_of_mask`)."""
        return _rle_box(self.to_rle())
