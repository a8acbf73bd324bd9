"""Sub-pixel outer outlines of binary masks, traced with OpenCV.

Coordinate convention (used by the whole ``lightning_gpv.geometry`` package, and by COCO): a point is
``(x, y)`` in pixels, ``x`` to the right and ``y`` down. Pixel ``(row r, col c)`` covers the unit square
``[c, c + 1) x [r, r + 1)``, so its centre is ``(c + 0.5, r + 0.5)`` and an ``H x W`` image spans
``[0, W] x [0, H]``. ``pycocotools`` rasterises polygons this way: a pixel is inside when its centre is.

An *outline* is a closed polygon given as a ``(K, 2)`` float64 array without the repeated closing point. It is
**clockwise as seen on screen** (``y`` down: along the top edge to the right, then down the right side), which
is a positive shoelace sum ``sum(x_i * y_{i+1} - x_{i+1} * y_i)``. It starts next to the top-most, then
left-most, foreground pixel of its component (the first pixel in raster order).

How it is traced: ``cv2.findContours(..., CHAIN_APPROX_NONE)`` on the mask cropped to its bounding box gives
the 8-connected chain of boundary-pixel centres. A polygon through those centres cuts half a pixel off the
whole boundary (on the real silhouettes of :mod:`~lightning_gpv.geometry.silhouettes` it keeps only 87.6 IoU,
and 1-pixel-wide strokes vanish). Each chain point is therefore moved outwards along its normal (estimated
from the chain points two steps before and after) by ``0.5 * max(|n_x|, |n_y|)``: half a pixel on horizontal
and vertical edges and ``0.5 / sqrt(2)`` on 45-degree staircases, which is where the area-preserving straight
line of a digital staircase lies. The resulting outline re-rasterises to 99.95 IoU of its mask on those
silhouettes.

Cost: the bounding box comes from ``cv2.hasNonZero`` on growing blocks of rows from the top and bottom edges
(SIMD, stops at the first foreground pixel) and a column-wise max over the rows in between, instead of
``cv2.boundingRect``, which reads every pixel with scalar code (~190 us on a 1000x1000 mask, more than the
tracing). The chain stays in int32 until the end, and as its tangents are small integers the offsets come
from a lookup table. ``largest_outline(mask, max_points)`` keeps only every ``s``-th point, ``s = ceil(K /
max_points)``, starting with the first, and computes only those: the same points as ``outline[::s]`` (their
normals still come from the full chain). Tracing stays linear in the box's area (in C); what follows is then
bounded by ``max_points``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["as_uint8_mask", "mask_outlines", "largest_outline", "shoelace", "TANGENT_STEP"]

TANGENT_STEP = 2
"""Chain points before/after a point used to estimate its normal (1 is noisier, 3 rounds corners more)."""


def _offset_table(span: int) -> np.ndarray:
    """Outward offset of a chain point for each integer tangent ``(tx, ty)`` with ``|tx|, |ty| <= span``.

    Row ``(tx * n + ty) % n^2`` (``n = 2 * span + 1``; distinct for all such tangents) holds
    ``(ty, -tx) * 0.5 * max(|tx|, |ty|) / (tx^2 + ty^2)``: the normal ``(ty, -tx) / |t|``, outwards for a
    clockwise outline, times ``0.5 * max(|n_x|, |n_y|)`` (see the module docstring); ``(0, 0)`` for ``t = 0``.
    Negative row numbers index from the end, so ``table[tx * n + ty]`` needs no modulo.

    Returns:
        ``(n^2, 2)`` float64 table.
    """
    n = 2 * span + 1
    t = np.arange(-span, span + 1, dtype=np.float64)
    tx, ty = (a.ravel() for a in np.meshgrid(t, t, indexing="ij"))
    norm2 = tx * tx + ty * ty
    scale = np.divide(
        0.5 * np.maximum(np.abs(tx), np.abs(ty)), norm2, out=np.zeros_like(norm2), where=norm2 > 0
    )
    table = np.empty((n * n, 2))
    table[(tx * n + ty).astype(np.int64) % (n * n)] = np.stack([ty * scale, -tx * scale], axis=1)
    return table


# The chain is 8-connected, so a tangent over 2 * TANGENT_STEP steps has integer components in that range.
_TANGENT_SPAN = 2 * TANGENT_STEP
_OFFSETS = _offset_table(_TANGENT_SPAN)


def as_uint8_mask(mask: np.ndarray) -> np.ndarray:
    """View or convert a 2-D mask to ``uint8`` (non-zero = foreground) without copying bool/uint8 input.

    Args:
        mask: ``(H, W)`` array of any numeric or bool dtype (a torch tensor works through ``np.asarray``).

    Returns:
        ``(H, W)`` uint8 array whose non-zero entries are the foreground.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    return (mask != 0).view(np.uint8)


def shoelace(points: np.ndarray) -> float:
    """Signed area of a closed ``(K, 2)`` polygon; positive when clockwise on screen (``y`` down)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])


def _first_nonzero_row(m: np.ndarray, from_end: bool = False) -> int | None:
    """First (or, with ``from_end``, last) row of an ``(H, W)`` uint8 image holding a non-zero pixel.

    ``cv2.hasNonZero`` (SIMD, stops at the first non-zero pixel) on blocks of 8, 16, 32, ... rows from the
    top (bottom) edge until one holds a non-zero pixel, then bisection of that block down to 8 rows, whose
    row maxima numpy reads: each empty row is read about twice instead of the whole image, in ~2 log2(rows)
    calls. Blocks are positive-stride slices (a reversed view would make OpenCV copy the image).

    Returns:
        The row index, or ``None`` for an image without non-zero pixels.
    """
    h = m.shape[0]
    lo, hi = 0, min(h, 8)  # the current block: rows [lo, hi) counted from the edge searched from
    while not cv2.hasNonZero(m[h - hi : h - lo] if from_end else m[lo:hi]):
        if hi == h:
            return None
        lo, hi = hi, min(h, 3 * hi - 2 * lo)
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if cv2.hasNonZero(m[h - mid : h - lo] if from_end else m[lo:mid]):
            hi = mid
        else:
            lo = mid
    if from_end:
        return h - hi + int(np.flatnonzero(m[h - hi : h - lo].max(axis=1))[-1])
    return lo + int(np.flatnonzero(m[lo:hi].max(axis=1))[0])


def _bounding_box(m: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, w, h)`` of the non-zero pixels of an ``(H, W)`` uint8 image (as ``cv2.boundingRect``, which
    reads every pixel with scalar code: ~190 us for 1000x1000), or ``None`` when there are none.

    Rows come from :func:`_first_nonzero_row`, columns from a column-wise max over those rows only (numpy
    reduces whole contiguous rows with SIMD).
    """
    top = _first_nonzero_row(m)
    if top is None:
        return None
    bottom = _first_nonzero_row(m, from_end=True)
    cols = np.flatnonzero(m[top : bottom + 1].max(axis=0))
    return int(cols[0]), top, int(cols[-1] - cols[0] + 1), bottom - top + 1


def _outer_chains(mask: np.ndarray, largest_only: bool) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Outer boundary chains of a mask, largest component (by pixel area) first, and their origin.

    Uses ``RETR_EXTERNAL``: holes are not traced, and a component lying inside another one's hole is not
    traced either (the outer polygon of the enclosing component already covers it).

    Returns:
        ``(chains, (ox, oy))``: ``(K, 2)`` int32 ``(col, row)`` chains in the mask's bounding-box crop, as
        OpenCV traces them; ``chain + (ox, oy)`` are the pixel centres in image coordinates.
    """
    m = as_uint8_mask(mask)
    if m.strides[1] != 1:  # OpenCV would copy a column-strided view on every call below
        m = np.ascontiguousarray(m)
    box = _bounding_box(m)
    if box is None:
        return [], (0.0, 0.0)
    x0, y0, w, h = box
    contours, _ = cv2.findContours(m[y0 : y0 + h, x0 : x0 + w], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if len(contours) == 1:
        order = [0]
    else:
        # Pick's theorem: pixels of a component ~= polygon area + boundary pixels / 2 + 1.
        area = [cv2.contourArea(c) + 0.5 * len(c) + 1.0 for c in contours]
        order = sorted(range(len(contours)), key=lambda i: -area[i])
    if largest_only:
        order = order[:1]
    return [contours[i].reshape(-1, 2) for i in order], (x0 + 0.5, y0 + 0.5)


def _chain_to_outline(
    chain: np.ndarray, origin: tuple[float, float], max_points: int | None = None
) -> np.ndarray:
    """Turn a chain of boundary pixels into a clockwise sub-pixel outline (see module docstring).

    Args:
        chain: ``(K, 2)`` int32 8-connected chain of pixel ``(col, row)`` in either orientation.
        origin: ``(ox, oy)`` added to the chain to get pixel centres in image coordinates.
        max_points: keep every ``ceil(K / max_points)``-th outline point, starting with the first (all when
            ``None``); the normals still come from the full chain.

    Returns:
        ``(K', 2)`` float64 outline, ``K' = ceil(K / s)`` (4 box corners for a chain of one or two pixels).
    """
    k = len(chain)
    if k <= 2:
        # One or two pixels: use the outline of their pixel squares (the box corners), clockwise.
        (xa, ya), (xb, yb) = chain.min(0) + origin - 0.5, chain.max(0) + origin + 0.5
        return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]], dtype=np.float64)
    if cv2.contourArea(chain, oriented=True) < 0:  # exact on integers; the sign of the shoelace sum
        # OpenCV traces outer borders counter-clockwise on screen; reverse, keeping the first point first.
        # Each (x, y) pair viewed as one int64: numpy copies a reversed 1-D array ~10x faster than (K, 2).
        packed = np.ascontiguousarray(chain).view(np.int64).ravel()
        chain = np.concatenate([packed[:1], packed[:0:-1]]).view(np.int32).reshape(k, 2)
    step = 1 if max_points is None else max(1, -(-k // max_points))
    t = min(TANGENT_STEP, (k - 1) // 2)
    padded = np.concatenate([chain[-t:], chain, chain[:t]])
    # Tangent i = padded[i + 2t] - padded[i] has integer components in [-2t, 2t]: look its offset up.
    tangent = padded[2 * t :: step] - padded[:k:step]
    out = chain[::step] + np.array(origin)
    out += np.take(_OFFSETS, tangent[:, 0] * (2 * _TANGENT_SPAN + 1) + tangent[:, 1], axis=0)
    return out


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Sub-pixel outer outlines of all connected components of a mask, largest component first.

    Holes are not traced: each outline is the outer boundary of one 8-connected component, and a component
    lying inside a hole of another one is skipped (the enclosing outline covers it). Components of one or two
    pixels get the outline of their pixel squares (4 box corners).

    Args:
        mask: ``(H, W)`` mask; non-zero pixels are foreground.

    Returns:
        A list (empty for an empty mask) of ``(K, 2)`` float64 ``(x, y)`` outlines, clockwise on screen,
        in the pixel-corner convention of the module docstring, sorted by decreasing pixel area.
    """
    chains, origin = _outer_chains(mask, largest_only=False)
    return [_chain_to_outline(chain, origin) for chain in chains]


def largest_outline(mask: np.ndarray, max_points: int | None = None) -> np.ndarray | None:
    """The outline of the largest connected component (by pixel area), or ``None`` for an empty mask.

    Args:
        mask: ``(H, W)`` mask; non-zero pixels are foreground.
        max_points: if given, keep only every ``s``-th point of the ``K``-point outline, ``s = ceil(K /
            max_points)``, starting with the first (see the module docstring); ``None`` keeps all.

    Returns:
        ``(K, 2)`` float64 clockwise outline (see :func:`mask_outlines`), at most ``max_points`` long (or 4
        box corners), or ``None``.
    """
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    chains, origin = _outer_chains(mask, largest_only=True)
    return _chain_to_outline(chains[0], origin, max_points) if chains else None
