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
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["as_uint8_mask", "mask_outlines", "largest_outline", "shoelace", "TANGENT_STEP"]

TANGENT_STEP = 2
"""Chain points before/after a point used to estimate its normal (1 is noisier, 3 rounds corners more)."""


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


def _outer_chains(mask: np.ndarray, largest_only: bool) -> list[tuple[float, np.ndarray]]:
    """Outer boundary chains as ``(pixel_area_estimate, (K, 2) float64 pixel centres)``, largest first.

    Uses ``RETR_EXTERNAL``: holes are not traced, and a component lying inside another one's hole is not
    traced either (the outer polygon of the enclosing component already covers it).
    """
    m = as_uint8_mask(mask)
    x0, y0, w, h = cv2.boundingRect(m)
    if w == 0 or h == 0:
        return []
    contours, _ = cv2.findContours(m[y0 : y0 + h, x0 : x0 + w], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if len(contours) == 1:
        found = [(0.0, 0)]
    else:
        # Pick's theorem: pixels of a component ~= polygon area + boundary pixels / 2 + 1.
        found = [(cv2.contourArea(c) + 0.5 * len(c) + 1.0, i) for i, c in enumerate(contours)]
        found.sort(key=lambda item: -item[0])
    if largest_only:
        found = found[:1]
    chains = []
    for area, i in found:
        chain = contours[i].reshape(-1, 2).astype(np.float64)
        chain += (x0 + 0.5, y0 + 0.5)
        chains.append((area, chain))
    return chains


def _chain_to_outline(chain: np.ndarray) -> np.ndarray:
    """Turn a chain of boundary-pixel centres into a clockwise sub-pixel outline (see module docstring)."""
    if len(chain) <= 2:
        # One or two pixels: use the outline of their pixel squares (the box corners), clockwise.
        (xa, ya), (xb, yb) = chain.min(0) - 0.5, chain.max(0) + 0.5
        return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]], dtype=np.float64)
    if shoelace(chain) < 0:
        # OpenCV traces outer borders counter-clockwise on screen; reverse, keeping the first point first.
        chain = np.concatenate([chain[:1], chain[:0:-1]])
    k = min(TANGENT_STEP, (len(chain) - 1) // 2)
    padded = np.concatenate([chain[-k:], chain, chain[:k]])
    tangent = padded[2 * k :] - padded[: -2 * k]
    tx, ty = tangent[:, 0], tangent[:, 1]
    norm2 = tx * tx + ty * ty
    # normal = (ty, -tx) / |t| points outwards for a clockwise outline; the offset is 0.5 * max(|nx|, |ny|).
    scale = np.divide(
        0.5 * np.maximum(np.abs(tx), np.abs(ty)), norm2, out=np.zeros(len(chain)), where=norm2 > 0
    )
    chain[:, 0] += ty * scale
    chain[:, 1] -= tx * scale
    return chain


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
    return [_chain_to_outline(chain) for _, chain in _outer_chains(mask, largest_only=False)]


def largest_outline(mask: np.ndarray) -> np.ndarray | None:
    """The outline of the largest connected component (by pixel area), or ``None`` for an empty mask.

    Args:
        mask: ``(H, W)`` mask; non-zero pixels are foreground.

    Returns:
        ``(K, 2)`` float64 clockwise outline (see :func:`mask_outlines`), or ``None``.
    """
    chains = _outer_chains(mask, largest_only=True)
    return _chain_to_outline(chains[0][1]) if chains else None
