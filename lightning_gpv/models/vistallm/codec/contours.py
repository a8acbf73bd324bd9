"""Contour points of mask answers: sampling a mask into ``N`` points and spreading repeated bins.

A mask answer is one closed contour of ``N`` points (``num_mask_points``) in absolute pixels of its image
(pixel-corner convention, see :mod:`lightning_gpv.geometry`), quantized like any coordinate.
"""

from __future__ import annotations

import numpy as np

from lightning_gpv.geometry import Mask, sample_contour, sample_polygon


def mask_points(mask: Mask, num_points: int) -> np.ndarray:
    """``(num_points, 2)`` float32 ``(x, y)`` contour points of a mask in its image's pixels (adaptive
    sampling), or ``(0, 2)`` when the mask is empty.

    A single-polygon mask is sampled without rasterising it (exact); any other mask through its pixels.
    """
    if mask.polygons is not None and len(mask.polygons) == 1 and len(mask.polygons[0]) >= 3:
        return sample_polygon(mask.polygons[0], num_points)
    return sample_contour(mask.to_array(), num_points)


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

    It works on bins alone, so it holds for any number of bins.

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
