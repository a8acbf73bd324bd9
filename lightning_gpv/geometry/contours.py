"""Sample a fixed number of points on a mask's outline, for serialising segmentation masks as point sequences.

VistaLLM (§3.2, Algorithm 1) outputs a mask as ``N`` points on its contour. :func:`sample_contour` returns
those points as an ``(N, 2)`` float32 array of ``(x, y)`` pixel coordinates (pixel ``(r, c)`` covers
``[c, c + 1) x [r, r + 1)``, the COCO convention of :mod:`lightning_gpv.geometry.masks`), **clockwise as seen
on screen** (``y`` down), starting with the point that comes first along the outline from its start, which
lies next to the top-most, then left-most, foreground pixel. Three methods work on the same sub-pixel outline
(:mod:`lightning_gpv.geometry.outlines`), so they differ only in which points they keep:

``"uniform"``
    ``N`` points evenly spaced by arc length, the first one at the outline's start (SeqTR, PolyFormer).
``"paper"``
    Algorithm 1 as written: ``M = num_dense`` points evenly spaced by arc length; for each ``p_i`` the angle
    ``theta_i`` at ``p_{i-1}`` between ``l1 = p_i - p_{i-1}`` and ``l2 = p_{i+1} - p_{i-1}`` (``0 <= theta <
    180`` degrees); keep the ``N`` points with the largest ``theta`` (``argsort(theta)[M - N:]``, a stable
    sort) in contour order. ``M`` defaults to 1000, a "high number" of points that are closer than one pixel
    on COCO-sized objects. On pixel-traced masks the steps of every staircase look like sharp bends, so the
    points bunch up on them and whole limbs get cut off.
``"adaptive"`` (default)
    Keeps the paper's intent (more points where the outline really bends, few on straight runs) but is blind
    to staircases, and picks points to lose as little area as possible:

    0. **Thinning**, so that the cost does not grow with the mask: an outline of ``K > 16 N`` points keeps
       every ``s``-th point, ``s = ceil(K / 16 N)`` (:func:`~lightning_gpv.geometry.largest_outline` with
       ``max_points``, which computes only those), and the steps below see at most ``16 N`` points: 512 at
       ``N = 32``, 4-14 px apart on a 1000 px object. Outlines of COCO-sized objects are mostly left whole.
    1. **Douglas-Peucker** (``cv2.approxPolyDP``) on that outline, searching its tolerance (regula falsi on
       log count vs log tolerance, about 3 runs, after a pre-simplification at 0.5 x the mean point spacing,
       0.5 px on a whole outline, that removes the pixel steps) until it keeps ``N`` to ``N + 3`` vertices.
       Douglas-Peucker keeps the points farthest from the chords, i.e. the real bends, and the tolerance 32
       points need on COCO-sized objects (1-8 px) is far above the amplitude of a staircase. Each point
       carries its index in its lowest float32 mantissa bits, so the kept vertices map back without a sort.
    2. **Exactly N**: drop the extra vertices one at a time by the smallest triangle area
       (Visvalingam-Whyatt); if Douglas-Peucker found fewer (straight-sided shapes), add points evenly inside
       the longest stretches of the outline, so no long gap is left.
    3. **Line refinement**: fit a total-least-squares line to the outline points between consecutive vertices
       and move each vertex to the intersection of its two lines. A chord across a convex arc loses the whole
       lens between them; the fitted line sits at the arc's mean offset and balances it. Intersections of
       nearly parallel lines (``|sin| < 0.05``) or ones that would move a vertex by more than half its shorter
       edge plus 1 px keep the Douglas-Peucker vertex. Vertices may therefore sit slightly off the outline
       (median 0.03 px, 99th percentile ~4 px on the silhouettes below), where the polygon fits best.

    Upper-bound mIoU (:func:`~lightning_gpv.geometry.upper_bound.contour_upper_bound` x 100) on the 66 real
    silhouettes of :mod:`~lightning_gpv.geometry.silhouettes` (``benchmarks/contour_sampling.py``):

    ======  =======  =====  ========
    N       uniform  paper  adaptive
    ======  =======  =====  ========
    16      82.5     68.9   91.9
    32      90.3     81.2   96.4
    64      95.3     91.6   98.5
    ======  =======  =====  ========

    ``"paper"`` stays at 81-84 for any ``M`` from 128 to 2000 at ``N = 32``. Without step 3, adaptive gives
    94.3; shifting each chord parallel to balance its area (instead of fitting lines) gave 95.8; Gaussian
    smoothing of the outline (sigma 1-2 px) before step 1 cost 0.8-3.7 points (thin strokes suffer). Without
    step 0 (and with a fixed 0.5 px pre-simplification) adaptive gave 91.6 / 96.4 / 98.6: the same within 0.1
    point at 32 and 64 points, here and on the silhouettes resized into 500-1000 px images, though single
    outlines move by 1-2 points either way (horse 93.4 -> 92.1, cameraman 91.6 -> 92.3 at 32 points);
    ``8 N`` points instead of ``16 N`` lost up to 0.9 point at 16 points and 0.2 at 32.

    Speed at ``N = 32``, one core, CPU time (``benchmarks/contour_sampling.py --reference``, which times the
    previous implementation in the same run; 5 runs on a shared, busy 2-core AMD EPYC): COCO-sized masks
    4,600-6,400 masks/s (previously 3,200-5,700, about x1.1), silhouettes in 1000x1000 images 2,000-3,500
    (previously 1,200-1,900, x1.7-1.85; x1.25-1.35 at 500x500, x1.6-1.8 at 750x750); uniform 8,500-11,000.
    About two thirds of the time on a 1000x1000 mask is tracing (:mod:`~lightning_gpv.geometry.outlines`,
    linear in the bounding box's area, in C).

Masks with several parts, holes, tiny or empty masks:

* :func:`sample_contour` samples the **largest** connected component (by pixel area) only; the others are
  dropped. :func:`sample_contours` samples every component, sharing the points in proportion to perimeter with
  at least ``min_points_per_part`` each (the largest components first; smaller ones are dropped when the
  budget cannot give them the minimum).
* **Holes are ignored**: a point sequence is one outer polygon, so a ring is sampled as a filled disc, and a
  component lying inside another one's hole is covered by that outer polygon and not sampled on its own.
* **Tiny masks** still give exactly ``num_points`` points: a component of one or two pixels is outlined by its
  pixel squares (4 box corners), and an outline with fewer vertices than ``num_points`` keeps all of them and
  puts the remaining points evenly on its longest edges (points may repeat on a zero-length outline).
* **Empty masks** give an empty ``(0, 2)`` float32 array (``[]`` from :func:`sample_contours`), not an error,
  so "no target" samples pass through; re-rasterising it gives an empty mask, which has IoU 1 with the empty
  target.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import cv2
import numpy as np

from lightning_gpv.geometry.outlines import largest_outline, mask_outlines, shoelace

__all__ = [
    "DEFAULT_NUM_DENSE",
    "SamplingMethod",
    "angle_scores",
    "resample_closed",
    "sample_contour",
    "sample_contours",
    "sample_polygon",
]

SamplingMethod = Literal["uniform", "paper", "adaptive"]
DEFAULT_NUM_DENSE = 1000
"""Default ``M`` of ``"paper"``: dense points sampled uniformly on the contour before the angle sort."""

_METHODS = get_args(SamplingMethod)
_DP_PRESIMPLIFY = 0.5  # x max(1 px, mean point spacing): drops pixel steps before the tolerance search
_DP_SLACK = 3  # accept N..N+3 Douglas-Peucker vertices, then drop the extra ones by triangle area
_MIN_SIN = 0.05  # refinement: lines closer to parallel than this keep the original vertex
_MAX_SHIFT = 0.5  # refinement: a vertex moves at most this fraction of its shorter edge, plus 1 px
_OUTLINE_POINTS_PER_OUTPUT = 16  # adaptive sees at most 16 N outline points (every s-th one of a longer one)


def _check_args(num_points: int, method: str) -> None:
    if int(num_points) != num_points or num_points < 3:
        raise ValueError(f"num_points must be an integer >= 3, got {num_points}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def resample_closed(points: np.ndarray, num_points: int) -> np.ndarray:
    """Points evenly spaced by arc length along a closed polygon, the first one at ``points[0]``.

    Args:
        points: ``(K, 2)`` closed polygon (no repeated closing vertex), ``K >= 1``.
        num_points: number of points ``N`` to return.

    Returns:
        ``(N, 2)`` float64 points in the polygon's order; all equal to ``points[0]`` if its length is zero.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    closed = np.concatenate([pts, pts[:1]])
    step = np.diff(closed, axis=0)
    arc = np.empty(len(closed))
    arc[0] = 0.0
    np.cumsum(np.hypot(step[:, 0], step[:, 1]), out=arc[1:])
    if arc[-1] <= 0:
        return np.repeat(pts[:1], num_points, axis=0)
    # np.interp never interpolates inside a zero-length step, so repeated vertices need no special care.
    t = np.arange(num_points) * (arc[-1] / num_points)
    out = np.empty((num_points, 2))
    out[:, 0] = np.interp(t, arc, closed[:, 0])
    out[:, 1] = np.interp(t, arc, closed[:, 1])
    return out


def angle_scores(points: np.ndarray) -> np.ndarray:
    """Algorithm 1's angle ``theta_i`` in degrees for every point of a closed polygon.

    ``theta_i`` is the angle at ``p_{i-1}`` between ``l1 = p_i - p_{i-1}`` and ``l2 = p_{i+1} - p_{i-1}``
    (indices wrap around): 0 where the contour is straight at ``p_i``, larger where it bends sharply.

    Args:
        points: ``(M, 2)`` closed polygon.

    Returns:
        ``(M,)`` float64 angles in ``[0, 180]`` (0 where ``l1`` or ``l2`` has zero length).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    prev, nxt = p[np.arange(-1, len(p) - 1)], p[np.append(np.arange(1, len(p)), 0)]
    l1, l2 = p - prev, nxt - prev
    cross = l1[:, 0] * l2[:, 1] - l1[:, 1] * l2[:, 0]
    dot = l1[:, 0] * l2[:, 0] + l1[:, 1] * l2[:, 1]
    return np.degrees(np.arctan2(np.abs(cross), dot))


def _sample_paper(outline: np.ndarray, num_points: int, num_dense: int) -> np.ndarray:
    if num_dense < num_points:
        raise ValueError(f"num_dense (M={num_dense}) must be >= num_points (N={num_points})")
    dense = resample_closed(outline, num_dense)
    keep = np.argsort(angle_scores(dense), kind="stable")[num_dense - num_points :]
    return dense[np.sort(keep)]


def _subdivide(poly: np.ndarray, num_points: int) -> np.ndarray:
    """Keep all ``K <= N`` vertices and add ``N - K`` points on the edges, in proportion to edge length."""
    k = len(poly)
    extra = num_points - k
    edge = np.concatenate([poly[1:], poly[:1]]) - poly
    length = np.hypot(edge[:, 0], edge[:, 1])
    share = extra * (length / length.sum() if length.sum() > 0 else np.full(k, 1.0 / k))
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share, kind="stable")[: extra - counts.sum()]] += 1
    group = np.repeat(np.arange(k), counts + 1)
    start = np.repeat(np.cumsum(counts + 1) - (counts + 1), counts + 1)
    frac = (np.arange(num_points) - start) / (counts + 1)[group]
    return poly[group] + frac[:, None] * edge[group]


def _tagged_curve(dense: np.ndarray) -> tuple[np.ndarray, int]:
    """``dense`` as a float32 ``(K, 1, 2)`` curve for ``cv2.approxPolyDP``, each point tagged with its index.

    ``approxPolyDP`` returns coordinates, not indices, and matching them back costs a sort of the outline.
    Instead the index goes into the ``b = ceil(log2(K) / 2)`` lowest mantissa bits of ``x`` (its low ``b``
    bits) and ``y`` (the others): that moves a point by under ``2^b`` float32 ulps (< 0.004 px at 1000 px
    for ``K <= 1024``), far below any tolerance used, and the kept points give back their indices exactly.

    Returns:
        ``(curve, b)``.
    """
    k = len(dense)
    bits = max(1, ((k - 1).bit_length() + 1) // 2)
    low = (1 << bits) - 1
    curve = dense.astype(np.float32).reshape(k, 1, 2)
    code = np.arange(k, dtype=np.int32)
    raw = curve.view(np.int32).reshape(k, 2)
    raw &= ~low
    raw[:, 0] |= code & low
    raw[:, 1] |= code >> bits
    return curve, bits


def _dp_indices(dense: np.ndarray, num_points: int) -> np.ndarray:
    """Sorted indices into ``dense`` of Douglas-Peucker vertices: ``N`` to ``N + 3`` of them, or fewer when
    even the pre-simplification keeps fewer than ``N`` (straight-sided shapes); more than ``N + 3`` only
    when no tolerance gives a count in that range (the tolerance bracket closes to 0.1 %)."""
    curve, bits = _tagged_curve(dense)
    # A thinned outline's points are s px apart: its pixel steps are gone, and the pre-simplification
    # tolerance grows with the spacing so that the search below still runs on ~100-200 points.
    pre = _DP_PRESIMPLIFY * max(1.0, cv2.arcLength(curve, True) / len(dense))
    best = reduced = cv2.approxPolyDP(curve, pre, True)
    if len(reduced) > num_points + _DP_SLACK:
        # Regula falsi on log(count) vs log(tolerance), bracketed: about 3 tries on average.
        target = math.log(num_points + _DP_SLACK / 2)
        lo, count_lo, hi, count_hi = pre, len(reduced), 0.0, 0
        eps = 4.0 * pre
        for _ in range(40):
            found = cv2.approxPolyDP(reduced, eps, True)
            if len(found) >= num_points:
                lo, count_lo, best = eps, len(found), found
                if len(found) <= num_points + _DP_SLACK:
                    break
            else:
                hi, count_hi = eps, max(len(found), 1)
            if 0.0 < hi < 1.001 * lo:  # the count jumps over N..N+3 here: keep the larger set
                break
            if hi == 0.0:
                eps = lo * (count_lo / num_points) ** 2
            else:
                log_lo, log_count_lo = math.log(lo), math.log(count_lo)
                slope = log_count_lo - math.log(count_hi)
                frac = (log_count_lo - target) / slope if slope > 0 else 0.5
                eps = math.exp(log_lo + min(max(frac, 0.1), 0.9) * (math.log(hi) - log_lo))
    raw = best.view(np.int32).reshape(-1, 2)
    low = (1 << bits) - 1
    return np.unique(((raw[:, 0] & low) | ((raw[:, 1] & low) << bits)).astype(np.intp))


def _drop_smallest_triangles(dense: np.ndarray, idx: np.ndarray, num_points: int) -> np.ndarray:
    """Visvalingam-Whyatt: remove the vertex spanning the smallest triangle until ``N`` remain.

    Only a few vertices (at most ``_DP_SLACK`` after the Douglas-Peucker search) are removed, so after one
    vectorised pass the two neighbours of each removed vertex are updated in plain Python.
    """
    verts = dense[idx]
    prev = np.concatenate((verts[-1:], verts[:-1]))
    a, b = verts - prev, np.concatenate((verts[1:], verts[:1])) - prev
    areas = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).tolist()
    pts, ids = verts.tolist(), idx.tolist()
    while len(ids) > num_points:
        i = areas.index(min(areas))
        del areas[i], pts[i], ids[i]
        m = len(ids)
        for j in ((i - 1) % m, i % m):
            (x0, y0), (x1, y1), (x2, y2) = pts[j - 1], pts[j], pts[(j + 1) % m]
            areas[j] = abs((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0))
    return np.array(ids, dtype=idx.dtype)


def _fill_gaps(num_dense: int, idx: np.ndarray, num_points: int) -> np.ndarray:
    """Add indices evenly inside the longest index gaps until there are ``N`` (needs ``num_dense > N``)."""
    gaps = np.diff(np.append(idx, idx[0] + num_dense))
    extra = num_points - len(idx)
    counts = np.minimum(np.floor(extra * gaps / num_dense).astype(np.int64), gaps - 1)
    while counts.sum() < extra:
        open_gaps = counts < gaps - 1
        if not open_gaps.any():
            break
        counts[int(np.argmax(np.where(open_gaps, gaps / (counts + 1), -1.0)))] += 1
    group = np.repeat(np.arange(len(idx)), counts)
    rank = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    new = idx[group] + np.rint(gaps[group] * rank / (counts[group] + 1)).astype(np.int64)
    return np.sort(np.concatenate([idx, new % num_dense]))


def _refine(dense: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Move each vertex to the intersection of the least-squares lines of its two outline stretches.

    Stretch ``j`` is ``dense[idx[j]], ..., dense[idx[j + 1]]`` (both ends included; the last one wraps
    around). Its total-least-squares line passes through the stretch's mean ``c = E[z]`` along the principal
    axis, whose angle is half that of ``E[z^2] - E[z]^2 = (var_x - var_y) + 2i cov_xy`` with points as complex
    ``z = x + iy``.
    """
    k, n = len(dense), len(idx)
    z = dense.view(np.complex128).ravel()
    powers = np.empty((2, k), dtype=np.complex128)
    powers[0] = z
    np.multiply(z, z, out=powers[1])
    nxt = np.append(idx[1:], idx[0])
    sums = np.add.reduceat(powers, idx, axis=1) + powers[:, nxt]  # reduceat stops before the end vertex
    if idx[0]:
        sums[:, -1] += powers[:, : idx[0]].sum(axis=1)  # the last stretch wraps past the end of the outline
    sums /= (nxt - idx) % k + 1
    c = sums[0]
    u = np.exp(0.5j * np.angle(sums[1] - c * c))
    prev = np.arange(-1, n - 1)
    u0, c0 = u[prev], c[prev]
    sin = (u0.conjugate() * u).imag
    ok = np.abs(sin) > _MIN_SIN
    moved = c0 + u0 * (((c - c0).conjugate() * u).imag / np.where(ok, sin, 1.0))
    verts = z[idx]
    edge = np.abs(verts[np.append(np.arange(1, n), 0)] - verts)
    ok &= np.abs(moved - verts) < _MAX_SHIFT * np.minimum(edge, edge[prev]) + 1.0
    return np.where(ok, moved, verts).view(np.float64).reshape(n, 2)


def _sample_adaptive(outline: np.ndarray, num_points: int, dense: bool) -> np.ndarray:
    outline = np.ascontiguousarray(outline, dtype=np.float64)
    if len(outline) <= num_points:
        return _subdivide(outline, num_points)
    if not dense:  # a sparse polygon (e.g. a COCO annotation): add points on its edges, ~1 px apart
        step = np.diff(np.concatenate([outline, outline[:1]]), axis=0)
        perimeter = float(np.hypot(step[:, 0], step[:, 1]).sum())
        # ... but at most 16 N in all, as a traced outline is thinned (the vertices themselves are all kept).
        count = min(math.ceil(perimeter), _OUTLINE_POINTS_PER_OUTPUT * num_points)
        outline = _subdivide(outline, max(len(outline), count))
    dense = outline
    idx = _dp_indices(dense, num_points)
    if len(idx) > num_points:
        idx = _drop_smallest_triangles(dense, idx, num_points)
    elif len(idx) < num_points:
        idx = _fill_gaps(len(dense), idx, num_points)
    return _refine(dense, idx)


def _sample_outline(
    outline: np.ndarray, num_points: int, method: str, num_dense: int, dense: bool = True
) -> np.ndarray:
    """Dispatch on ``method``; ``dense`` says the outline has about one vertex per pixel (a traced mask)."""
    if method == "uniform":
        return resample_closed(outline, num_points)
    if method == "paper":
        return _sample_paper(outline, num_points, num_dense)
    return _sample_adaptive(outline, num_points, dense)


def sample_polygon(
    polygon: np.ndarray,
    num_points: int = 32,
    method: SamplingMethod = "adaptive",
    num_dense: int = DEFAULT_NUM_DENSE,
) -> np.ndarray:
    """Sample ``N`` points on a closed polygon (e.g. a COCO polygon annotation) without rasterising it.

    Args:
        polygon: ``(K, 2)`` ``(x, y)`` vertices or flat ``[x0, y0, ...]``; made clockwise on screen if needed,
            keeping its first vertex as the start.
        num_points: ``N >= 3``.
        method: ``"uniform"``, ``"paper"`` or ``"adaptive"`` (see the module docstring).
        num_dense: ``M`` for ``"paper"``.

    Returns:
        ``(N, 2)`` float32 points, clockwise on screen.
    """
    _check_args(num_points, method)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(poly) == 0:
        raise ValueError("cannot sample an empty polygon")
    if shoelace(poly) < 0:
        poly = np.concatenate([poly[:1], poly[:0:-1]])
    return _sample_outline(poly, int(num_points), method, num_dense, dense=False).astype(np.float32)


def _finish(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Clip ``(N, 2)`` points to the ``[0, W] x [0, H]`` image of an ``(H, W)`` mask, as float32."""
    # Clipping after the cast gives the same values (W and H are exact in float32) on half the bytes.
    out = points.astype(np.float32)
    return np.clip(out, 0.0, np.array([shape[1], shape[0]], dtype=np.float32), out=out)


def sample_contour(
    mask: np.ndarray,
    num_points: int = 32,
    method: SamplingMethod = "adaptive",
    num_dense: int = DEFAULT_NUM_DENSE,
) -> np.ndarray:
    """Sample ``N`` points on the outer outline of a mask's largest connected component.

    Args:
        mask: ``(H, W)`` mask (bool, uint8 or any numeric dtype; non-zero is foreground).
        num_points: ``N >= 3``.
        method: ``"uniform"``, ``"paper"`` or ``"adaptive"`` (default); see the module docstring.
        num_dense: ``M``, the number of dense points of ``"paper"`` (ignored by the other methods).

    Returns:
        ``(N, 2)`` float32 ``(x, y)`` points in pixel-corner coordinates, clipped to ``[0, W] x [0, H]``,
        clockwise on screen. Exactly ``N`` points for any non-empty mask; ``(0, 2)`` for an empty mask.
    """
    _check_args(num_points, method)
    max_points = _OUTLINE_POINTS_PER_OUTPUT * int(num_points) if method == "adaptive" else None
    outline = largest_outline(mask, max_points)
    if outline is None:
        return np.zeros((0, 2), dtype=np.float32)
    return _finish(_sample_outline(outline, int(num_points), method, num_dense), np.shape(mask))


def _allocate(perimeters: np.ndarray, num_points: int, min_points: int) -> np.ndarray:
    """Points per part: the first ``k`` parts get ``min_points`` plus a perimeter-proportional share."""
    k = max(1, min(len(perimeters), num_points // max(min_points, 1)))
    floor = min(min_points, num_points) if k > 1 else 0
    spare = num_points - k * floor
    weight = perimeters[:k] / perimeters[:k].sum() if perimeters[:k].sum() > 0 else np.full(k, 1.0 / k)
    share = spare * weight
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share, kind="stable")[: spare - counts.sum()]] += 1
    return np.concatenate([counts + floor, np.zeros(len(perimeters) - k, dtype=np.int64)])


def sample_contours(
    mask: np.ndarray,
    num_points: int = 32,
    method: SamplingMethod = "adaptive",
    min_points_per_part: int = 4,
    num_dense: int = DEFAULT_NUM_DENSE,
) -> list[np.ndarray]:
    """Sample ``N`` points in total over the outer outlines of all connected components of a mask.

    Components are taken largest first (by pixel area). As many as can get ``min_points_per_part`` points each
    are kept; each gets that minimum plus a share of the rest proportional to its perimeter. A single kept
    component gets all ``N`` points, as in :func:`sample_contour`. Holes are ignored.

    Args:
        mask: ``(H, W)`` mask.
        num_points: total ``N >= 3``.
        method: ``"uniform"``, ``"paper"`` or ``"adaptive"``.
        min_points_per_part: smallest number of points given to a kept component (>= 3).
        num_dense: ``M`` for ``"paper"``; each part uses ``max(M, its share)``.

    Returns:
        A list, largest component first, of ``(n_i, 2)`` float32 clockwise point arrays with ``sum(n_i) = N``;
        ``[]`` for an empty mask.
    """
    _check_args(num_points, method)
    if min_points_per_part < 3:
        raise ValueError(f"min_points_per_part must be >= 3, got {min_points_per_part}")
    outlines = mask_outlines(mask)
    if not outlines:
        return []
    perimeters = np.array([np.hypot(*np.diff(np.concatenate([o, o[:1]]), axis=0).T).sum() for o in outlines])
    counts = _allocate(perimeters, int(num_points), min_points_per_part)
    if method == "adaptive":  # thin each part as largest_outline(mask, max_points) does in sample_contour
        outlines = [
            o[:: -(-len(o) // (_OUTLINE_POINTS_PER_OUTPUT * max(int(c), 1)))]
            for o, c in zip(outlines, counts)
        ]
    return [
        _finish(_sample_outline(outline, int(count), method, max(num_dense, int(count))), np.shape(mask))
        for outline, count in zip(outlines, counts)
        if count > 0
    ]
