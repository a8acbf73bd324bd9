"""How VistaLLM's RES targets look at coarse coordinate bins: repeated points and the format's upper bound.

For RefCOCO RES targets of a ShapesWorld folder, samples each mask to ``N`` contour points (adaptive, as the
processor does), quantizes them to ``B`` bins and prints, per ``B / N``:

* ``repeats``: the share of points in the same bin as their predecessor, as sampled and after
  :func:`~lightning_gpv.models.vistallm.codec.spread_repeated_points` (what ``format_masks`` writes);
* ``masks with a repeat``: the share of targets that still have one after spreading;
* ``upper-bound IoU``: the mean IoU of the written polygon (bin centres) with the mask, before and after
  spreading (spreading keeps the polygon up to half a bin).

Run (the demo's world; generated if absent)::

    .venv/bin/python benchmarks/mask_targets.py --root /tmp/demo_world --num-images 3000 \\
        --max-objects 3 --backgrounds plain --sizes medium large
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from lightning_gpv.geometry.masks import mask_iou, polygon_to_mask
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.models.vistallm.codec import CoordinateCodec, spread_repeated_points
from lightning_gpv.shapesworld import make_shapes
from lightning_gpv.shapesworld.cli import add_style_arguments, style_from_args


def repeat_share(bins: np.ndarray) -> float:
    """Share of the ``(N, 2)`` closed contour's points equal to their predecessor."""
    return float((bins == np.roll(bins, 1, axis=0)).all(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--root", type=Path, required=True, help="ShapesWorld folder (generated if absent)")
    parser.add_argument("--num-images", type=int, default=3000, help="scenes when generating --root")
    parser.add_argument("--masks", type=int, default=400, help="RES targets measured (spread over the split)")
    parser.add_argument(
        "--formats", nargs="+", default=["32/32", "32/16", "48/32", "64/32", "1000/32"], help="BINS/POINTS"
    )
    add_style_arguments(parser)  # used when generating --root
    args = parser.parse_args()
    if not args.root.exists():
        make_shapes(args.root, num_images=args.num_images, seed=0, progress=True, style=style_from_args(args))

    images = str(args.root / "coco" / "images" / "train2014")
    options = RefCocoOptions("refcoco", "unc", tasks=("res",), image_dir=images)
    refcoco = RefCocoDataModule(str(args.root / "refcoco"), options)
    refcoco.setup("fit")
    dataset = refcoco.dataset(refcoco.train_split, False)
    picks = np.linspace(0, len(dataset) - 1, min(args.masks, len(dataset))).astype(int)
    samples = [dataset[int(i)] for i in picks]
    truths = [s.target.masks[0].to_array().astype(bool) for s in samples]  # once, not once per format
    print(f"{len(samples)} RES targets of {args.root}")
    header = ("bins/points", "repeats", "spread", "masks w/ repeat", "IoU", "spread")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (12, 8, 8, 16, 6, 7))))
    for spec in args.formats:
        num_bins, num_points = (int(v) for v in spec.split("/"))
        codec = CoordinateCodec(num_bins=num_bins, num_mask_points=num_points)
        before, after, left, iou_before, iou_after = [], [], [], [], []
        for sample, truth in zip(samples, truths):
            (height, width) = sample.image_sizes[0]
            mask = sample.target.masks[0]
            bins = codec.quantize(codec.mask_points(mask).reshape(-1), width, height).reshape(-1, 2)
            spread = spread_repeated_points(bins)
            before.append(repeat_share(bins))
            after.append(repeat_share(spread))
            left.append(after[-1] > 0)
            for b, ious in ((bins, iou_before), (spread, iou_after)):
                polygon = codec.dequantize(b.reshape(-1), width, height).reshape(-1, 2)
                ious.append(mask_iou(polygon_to_mask(polygon, height, width), truth))
        print(f"{spec:>12} {np.mean(before):>8.1%} {np.mean(after):>8.1%} {np.mean(left):>16.1%} "
              f"{np.mean(iou_before):>6.3f} {np.mean(iou_after):>7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
