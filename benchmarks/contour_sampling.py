"""Contour sampling methods side by side: speed on COCO-sized and photo-sized masks, upper-bound mIoU.

Run::

    python benchmarks/contour_sampling.py                # 1000 COCO-sized masks, best of 5 repeats, N = 32
    python benchmarks/contour_sampling.py --reference    # also the previous adaptive sampler, same run
    python benchmarks/contour_sampling.py --quick        # 200 COCO-sized masks, best of 2 repeats

Speed is :func:`~lightning_gpv.geometry.sample_contour` on full-image masks, in one process with one thread
(``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``). ``masks/s`` divides by CPU time, which a busy shared
machine inflates less than wall-clock time; ``wall m/s`` divides by wall-clock time. Methods take turns
within each repeat. Two groups of masks:

* **COCO-sized**: :func:`~lightning_gpv.geometry.silhouettes.coco_sized_masks`, the real silhouettes resized
  to a longest side of 50-300 px inside 640x480 images; every method.
* **photo-sized**: :func:`photo_sized_masks`, the 66 real silhouettes resized to a longest side of 60-95 % of
  square images of 500, 750 and 1000 px (outlines of ~1,000-7,000 pixels), one row per image size; the
  adaptive sampler (and the reference).

mIoU is :func:`~lightning_gpv.geometry.contour_iou` x 100 (largest component only) at 16, 32 and 64 points:
on the 66 :func:`~lightning_gpv.geometry.silhouettes.real_silhouettes` for the COCO-sized rows, on the masks
themselves for the photo-sized rows. ``--reference`` adds :func:`_reference_adaptive`, the adaptive sampler as
it was before it thinned long outlines and before its tracing got faster, timed and scored in the same run.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from lightning_gpv.geometry import DEFAULT_NUM_DENSE, mask_iou, polygons_to_mask, sample_contour
from lightning_gpv.geometry.contours import _drop_smallest_triangles, _fill_gaps, _finish, _refine, _subdivide
from lightning_gpv.geometry.outlines import TANGENT_STEP, as_uint8_mask, shoelace
from lightning_gpv.geometry.silhouettes import coco_sized_masks, real_silhouettes
from lightning_gpv.helptext import first_paragraph

METHODS = ("uniform", "paper", "adaptive")
POINT_COUNTS = (16, 32, 64)
PHOTO_SIZES = (500, 750, 1000)

Sampler = Callable[[np.ndarray, int], np.ndarray]


def photo_sized_masks(size: int, seed: int = 0) -> list[np.ndarray]:
    """Each real silhouette resized to a longest side of 60-95 % of ``size``, at a random place in a
    ``size x size`` image.

    Returns:
        66 bool ``(size, size)`` masks, in the order of :func:`real_silhouettes`.
    """
    rng = np.random.default_rng(seed + size)
    out = []
    for src in (m for masks in real_silhouettes().values() for m in masks):
        x, y, w, h = cv2.boundingRect(src.view(np.uint8))
        scale = rng.uniform(0.6, 0.95) * size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        crop = src[y : y + h, x : x + w].astype(np.float32)
        obj = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_LINEAR) > 0.5
        canvas = np.zeros((size, size), dtype=bool)
        top, left = rng.integers(0, size - new_h + 1), rng.integers(0, size - new_w + 1)
        canvas[top : top + new_h, left : left + new_w] = obj
        out.append(canvas)
    return out


# --- the previous adaptive sampler, for comparison only -----------------------------------------------------


def _reference_outline(mask: np.ndarray) -> np.ndarray | None:
    """The previous tracing: ``cv2.boundingRect`` crop, every chain point offset in float64 (same outline as
    :func:`~lightning_gpv.geometry.largest_outline`, slower)."""
    m = as_uint8_mask(mask)
    x0, y0, w, h = cv2.boundingRect(m)
    if w == 0 or h == 0:
        return None
    contours, _ = cv2.findContours(m[y0 : y0 + h, x0 : x0 + w], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    area = [cv2.contourArea(c) + 0.5 * len(c) + 1.0 for c in contours]
    chain = contours[int(np.argmax(area))].reshape(-1, 2).astype(np.float64) + (x0 + 0.5, y0 + 0.5)
    if len(chain) <= 2:
        (xa, ya), (xb, yb) = chain.min(0) - 0.5, chain.max(0) + 0.5
        return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]])
    if shoelace(chain) < 0:
        chain = np.concatenate([chain[:1], chain[:0:-1]])
    k = min(TANGENT_STEP, (len(chain) - 1) // 2)
    padded = np.concatenate([chain[-k:], chain, chain[:k]])
    tx, ty = (padded[2 * k :] - padded[: -2 * k]).T
    norm2 = tx * tx + ty * ty
    scale = np.divide(
        0.5 * np.maximum(np.abs(tx), np.abs(ty)), norm2, out=np.zeros(len(chain)), where=norm2 > 0
    )
    chain[:, 0] += ty * scale
    chain[:, 1] -= tx * scale
    return chain


def _reference_dp_indices(dense: np.ndarray, num_points: int) -> np.ndarray:
    """The previous Douglas-Peucker search: the same tolerance search, vertices matched back by sorting."""
    curve = dense.astype(np.float32).reshape(-1, 1, 2)
    best = reduced = cv2.approxPolyDP(curve, 0.5, True)
    if len(reduced) > num_points + 3:
        target = math.log(num_points + 1.5)
        lo, count_lo, hi, count_hi, eps = 0.5, len(reduced), 0.0, 0, 2.0
        for _ in range(40):
            found = cv2.approxPolyDP(reduced, eps, True)
            if len(found) >= num_points:
                lo, count_lo, best = eps, len(found), found
                if len(found) <= num_points + 3:
                    break
            else:
                hi, count_hi = eps, max(len(found), 1)
            if hi == 0.0:
                eps = lo * (count_lo / num_points) ** 2
            else:
                slope = math.log(count_lo) - math.log(count_hi)
                frac = (math.log(count_lo) - target) / slope if slope > 0 else 0.5
                eps = math.exp(math.log(lo) + min(max(frac, 0.1), 0.9) * (math.log(hi) - math.log(lo)))
    keys = curve.view(np.int64).ravel()
    order = np.argsort(keys)
    return np.unique(order[np.searchsorted(keys[order], best.view(np.int64).ravel())])


def _reference_adaptive(mask: np.ndarray, num_points: int) -> np.ndarray:
    """The previous ``sample_contour(mask, N, "adaptive")``: Douglas-Peucker on every outline point (no
    thinning), then the same exact-N and line-refinement steps as today."""
    outline = _reference_outline(mask)
    if outline is None:
        return np.zeros((0, 2), dtype=np.float32)
    if len(outline) <= num_points:
        return _finish(_subdivide(outline, num_points), mask.shape)
    idx = _reference_dp_indices(outline, num_points)
    if len(idx) > num_points:
        idx = _drop_smallest_triangles(outline, idx, num_points)
    elif len(idx) < num_points:
        idx = _fill_gaps(len(outline), idx, num_points)
    return _finish(_refine(outline, idx), mask.shape)


# --- measurements ------------------------------------------------------------------------------------------


def _sampler(method: str) -> Sampler:
    if method == "reference":
        return _reference_adaptive
    return lambda mask, num_points: sample_contour(mask, num_points, method)


def masks_per_second(
    masks: list[np.ndarray], samplers: dict[str, Sampler], num_points: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Best-of-``repeats`` throughput of each sampler over ``masks``: (by CPU time, by wall-clock time).

    The samplers take turns within each repeat, so a burst of load on a shared machine hits them alike.
    CPU time (``time.process_time``) is what one core spends, less inflated by other processes than wall-clock
    time, which matches it on an idle machine.
    """
    best = {name: [math.inf, math.inf] for name in samplers}
    for sampler in samplers.values():
        for mask in masks[:20]:  # warm-up
            sampler(mask, num_points)
    for _ in range(repeats):
        for name, sampler in samplers.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for mask in masks:
                sampler(mask, num_points)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[name] = [min(best[name][0], cpu), min(best[name][1], wall)]
    return {name: (len(masks) / cpu, len(masks) / wall) for name, (cpu, wall) in best.items()}


def miou(masks: list[np.ndarray], sampler: Sampler, num_points: int) -> float:
    """Mean IoU x 100 of each mask with the polygon through its sampled points (as ``contour_iou``)."""
    ious = []
    for mask in masks:
        points = sampler(mask, num_points)
        ious.append(mask_iou(polygons_to_mask([points] if len(points) else [], *mask.shape), mask))
    return 100 * float(np.mean(ious))


def _row(label: str, speed: tuple[float, float], scores: dict[int, float]) -> str:
    cpu, wall = speed
    return f"{label:<20} {cpu:>9.0f} {1e6 / cpu:>8.1f} {wall:>9.0f}" + "".join(
        f" {scores[k]:>9.2f}" for k in POINT_COUNTS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--quick", action="store_true", help="200 COCO-sized masks, 2 repeats")
    parser.add_argument(
        "--num-points", type=int, default=32, help="points per mask (N) for the speed columns"
    )
    parser.add_argument(
        "--num-masks", type=int, default=None, help="COCO-sized masks to time (1000; 200 quick)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timing repeats, best kept (5; 2 quick); 3x as many for the 66-mask photo-sized groups",
    )
    parser.add_argument(
        "--per-source", action="store_true", help="also print the mIoU@N of each silhouette source"
    )
    parser.add_argument(
        "--reference", action="store_true", help="also time and score the previous adaptive sampler"
    )
    args = parser.parse_args()
    num_masks = args.num_masks or (200 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    silhouettes = real_silhouettes()
    all_silhouettes = [m for masks in silhouettes.values() for m in masks]
    coco_masks = coco_sized_masks(num_masks)
    photo = {size: photo_sized_masks(size) for size in PHOTO_SIZES}
    n = args.num_points
    methods = (*METHODS, "reference") if args.reference else METHODS
    adaptive = [m for m in methods if m in ("adaptive", "reference")]
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
        f"{platform.processor() or platform.machine()}; 1 thread; N = {n} (speed), paper M = "
        f"{DEFAULT_NUM_DENSE}; masks/s by CPU time, best of {repeats} (COCO-sized) / {3 * repeats} (photo)"
    )
    columns = f"{'masks/s':>9} {'us/mask':>8} {'wall m/s':>9}" + "".join(
        f" {'mIoU@' + str(k):>9}" for k in POINT_COUNTS
    )

    print(
        f"\nCOCO-sized: {num_masks} masks (640x480, objects 50-300 px); "
        f"mIoU on the {len(all_silhouettes)} real silhouettes"
    )
    print(f"{'method':<20} {columns}")
    speed = masks_per_second(coco_masks, {m: _sampler(m) for m in methods}, n, repeats)
    scores = {m: {k: miou(all_silhouettes, _sampler(m), k) for k in POINT_COUNTS} for m in methods}
    for method in methods:
        print(_row(method, speed[method], scores[method]))
    print(
        f"adaptive / uniform: speed x{speed['adaptive'][0] / speed['uniform'][0]:.2f}, "
        f"mIoU@32 {scores['adaptive'][32] - scores['uniform'][32]:+.2f} points"
    )

    print(
        f"\nphoto-sized: {len(photo[PHOTO_SIZES[0]])} masks per image size (real silhouettes, longest side "
        "60-95 % of the image); mIoU on these masks"
    )
    print(f"{'image, method':<20} {columns}")
    photo_speed = {}
    for size, masks in photo.items():
        photo_speed[size] = masks_per_second(masks, {m: _sampler(m) for m in adaptive}, n, 3 * repeats)
        for method in adaptive:
            size_scores = {k: miou(masks, _sampler(method), k) for k in POINT_COUNTS}
            print(_row(f"{size}x{size} {method}", photo_speed[size][method], size_scores))
    for method in adaptive:
        slowest = min(PHOTO_SIZES, key=lambda size: photo_speed[size][method][0])
        print(
            f"{method}: slowest image size {slowest}x{slowest}, {photo_speed[slowest][method][0]:.0f} masks/s"
        )
    if args.reference:
        ratios = [
            photo_speed[size]["adaptive"][0] / photo_speed[size]["reference"][0] for size in PHOTO_SIZES
        ]
        print(
            f"adaptive / reference speed: x{speed['adaptive'][0] / speed['reference'][0]:.2f} COCO-sized, "
            + ", ".join(f"x{r:.2f} at {size}" for size, r in zip(PHOTO_SIZES, ratios))
        )

    if args.per_source:
        sources = list(silhouettes)
        print(f"\nmIoU@{n} per silhouette source\n{'method':<10}" + "".join(f"{s:>10}" for s in sources))
        for method in methods:
            sampler = _sampler(method)
            print(
                f"{method:<10}" + "".join(f"{miou(list(silhouettes[s]), sampler, n):>10.1f}" for s in sources)
            )


if __name__ == "__main__":
    main()
