"""Contour sampling methods side by side: speed on COCO-sized masks and upper-bound mIoU on real silhouettes.

Run::

    python benchmarks/contour_sampling.py            # 1000 masks, best of 5 repeats, N = 32
    python benchmarks/contour_sampling.py --quick    # 200 masks, best of 2 repeats

Speed is :func:`~lightning_gpv.geometry.sample_contour` on full-image masks from
:func:`~lightning_gpv.geometry.silhouettes.coco_sized_masks` (real silhouettes resized to a longest side of
50-300 px inside 640x480 images), in one process with one thread (``torch.set_num_threads(1)``,
``cv2.setNumThreads(1)``). ``masks/s`` divides by CPU time, which a busy shared machine does not inflate;
``wall m/s`` divides by wall-clock time. The mIoU is :func:`~lightning_gpv.geometry.contour_upper_bound` x 100
on the :func:`~lightning_gpv.geometry.silhouettes.real_silhouettes` set (largest component only).
"""

from __future__ import annotations

import argparse
import platform
import time

import cv2
import numpy as np
import torch

from lightning_gpv.geometry import DEFAULT_NUM_DENSE, contour_iou, sample_contour
from lightning_gpv.geometry.silhouettes import coco_sized_masks, real_silhouettes

METHODS = ("uniform", "paper", "adaptive")


def masks_per_second(
    masks: list[np.ndarray], method: str, num_points: int, repeats: int
) -> tuple[float, float]:
    """Best-of-``repeats`` throughput of ``sample_contour`` over ``masks``: (by CPU time, by wall-clock time).

    CPU time (``time.process_time``) is what one core spends, unaffected by other processes on a busy machine;
    wall-clock time matches it on an idle one.
    """
    for mask in masks[:20]:  # warm-up
        sample_contour(mask, num_points, method)
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for mask in masks:
            sample_contour(mask, num_points, method)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return len(masks) / best_cpu, len(masks) / best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 masks, 2 repeats (about 5 s)")
    parser.add_argument("--num-points", type=int, default=32, help="points per mask (N)")
    parser.add_argument(
        "--num-masks", type=int, default=None, help="COCO-sized masks to time (1000; 200 quick)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats, best kept (5; 2 quick)")
    parser.add_argument(
        "--per-source", action="store_true", help="also print the mIoU of each silhouette source"
    )
    args = parser.parse_args()
    num_masks = args.num_masks or (200 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    silhouettes = real_silhouettes()
    coco_masks = coco_sized_masks(num_masks)
    n = args.num_points
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
        f"{platform.processor() or platform.machine()}; 1 thread"
    )
    num_silhouettes = sum(map(len, silhouettes.values()))
    print(
        f"speed: {num_masks} COCO-sized masks (640x480, objects 50-300 px), best of {repeats}; "
        f"mIoU: {num_silhouettes} real silhouettes; N = {n}, paper M = {DEFAULT_NUM_DENSE}"
    )
    speed, wall, miou, per_source = {}, {}, {}, {}
    for method in METHODS:
        speed[method], wall[method] = masks_per_second(coco_masks, method, n, repeats)
        ious = {src: [contour_iou(m, n, method) for m in masks] for src, masks in silhouettes.items()}
        per_source[method] = {src: 100 * float(np.mean(v)) for src, v in ious.items()}
        miou[method] = 100 * float(np.mean([x for v in ious.values() for x in v]))

    print(f"\n{'method':<10} {'masks/s':>9} {'us/mask':>8} {'wall m/s':>9} {'mIoU@' + str(n):>9}")
    for method in METHODS:
        print(
            f"{method:<10} {speed[method]:>9.0f} {1e6 / speed[method]:>8.1f} {wall[method]:>9.0f} "
            f"{miou[method]:>9.2f}"
        )
    print(
        f"\nadaptive / uniform: speed x{speed['adaptive'] / speed['uniform']:.2f}, "
        f"mIoU x{miou['adaptive'] / miou['uniform']:.3f} ({miou['adaptive'] - miou['uniform']:+.2f} points)"
    )
    if args.per_source:
        sources = list(silhouettes)
        print("\n" + f"{'method':<10}" + "".join(f"{s:>10}" for s in sources))
        for method in METHODS:
            print(f"{method:<10}" + "".join(f"{per_source[method][s]:>10.1f}" for s in sources))


if __name__ == "__main__":
    main()
