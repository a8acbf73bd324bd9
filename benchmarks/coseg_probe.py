"""Where do VistaLLM's co-segmentation masks land: on the common object, on another object of the same image,
or on an object of another image of the group?

For the co-segmentation groups of a ShapesWorld folder (PASCAL layout, ``coseg/pascal``, split ``test``), a
VistaLLM checkpoint answers each group (greedy, the evaluation template); per image, the k-th mask of the
answer is compared with

* the ground truth (IoU),
* the image's foreground: pixels farther than ``--threshold`` (summed over RGB) from the median colour of the
  image border. This holds for ShapesWorld's plain backgrounds (``make-shapes --backgrounds plain``, the
  demo's world), not for textured ones;
* the best single foreground component (IoU), and
* the foreground of each other image of the group, resized to this image's size (the share of the mask on
  it; the best other image), beside the same share of the true mask (a control: objects of different images
  overlap by chance).

Masks that lie on foreground of *another* image more than on their own (with few on the truth) were drawn at
another image's object: the model does not tie the k-th mask to the k-th image.

With ``--task attcoseg`` the groups are AttCoSeg's (``attcoseg``, split ``test``) and the figures are about
the pair: how often the answer names exactly the two images that share the object, against choosing a pair
at random, how often it names at least one of them, and the mask IoU on each of the two true images (0 where
the answer has no mask for it).

    .venv/bin/python benchmarks/coseg_probe.py --ckpt outputs/demo/vistallm_stage2/checkpoints/last.ckpt \\
        --data outputs/demo/data [--groups 64] [--task attcoseg]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from datamodules.attcoseg import AttCosegReader
from datamodules.coseg import CosegOptions, CosegReader
from lightning_gpv.geometry.masks import mask_iou
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.predictor import Predictor
from lightning_gpv.systems.vistallm import VistaLLMModule
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.samples import Prediction, TaskSample


def foreground(image: np.ndarray, threshold: float) -> np.ndarray:
    """``(H, W)`` bool: pixels of an ``(H, W, 3)`` uint8 image away from its border's median colour."""
    pixels = image.astype(np.int32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.abs(pixels - np.median(border, axis=0)).sum(-1) > threshold


def share_on(mask: np.ndarray, region: np.ndarray) -> float:
    """The fraction of ``mask``'s pixels inside ``region`` (0 for an empty mask)."""
    area = int(mask.sum())
    return float((mask & region).sum()) / area if area else 0.0


def probe(
    samples: Sequence[TaskSample], predictions: Sequence[Prediction], threshold: float
) -> dict[str, float]:
    """The figures of the module docstring, averaged over the groups' images (an image without a mask
    counts 0 everywhere)."""
    rows = []
    for sample, prediction in zip(samples, predictions):
        images = [load_image(ref) for ref in sample.images]
        fgs = [foreground(image, threshold) for image in images]
        masks = dict(zip(prediction.mask_image.tolist(), prediction.masks))
        for k, (image, fg) in enumerate(zip(images, fgs)):
            height, width = image.shape[:2]
            truth = sample.target.masks[k].to_array().astype(bool)
            others = [
                np.asarray(Image.fromarray(other).resize((width, height), Image.NEAREST))
                for j, other in enumerate(fgs)
                if j != k
            ]
            # Control: how much of the true mask lies on another image's objects by chance.
            truth_on_others = max((share_on(truth, other) for other in others), default=0.0)
            if k not in masks:
                rows.append((0.0, 0.0, 0.0, 0.0, 0.0, truth_on_others))
                continue
            pred = masks[k].to_array().astype(bool)
            labels, count = ndimage.label(fg)
            best_object = max((mask_iou(pred, labels == j) for j in range(1, count + 1)), default=0.0)
            on_others = max((share_on(pred, other) for other in others), default=0.0)
            rows.append(
                (1.0, mask_iou(pred, truth), share_on(pred, fg), best_object, on_others, truth_on_others)
            )
    table = np.array(rows)
    names = ("answered", "IoU with the truth", "share on its own image's objects", "IoU with its best object",
             "share on another image's objects (best)", "  the truth's share there (control)")  # fmt: skip
    return {name: float(table[:, i].mean()) for i, name in enumerate(names)} | {"images": float(len(rows))}


def pair_probe(samples: Sequence[TaskSample], predictions: Sequence[Prediction]) -> dict[str, float]:
    """AttCoSeg: the pair named by each answer against the true pair (see the module docstring)."""
    exact, chance, some, ious = [], [], [], []
    for sample, prediction in zip(samples, predictions):
        truth, named = set(sample.target.selected_images), set(prediction.selected_images)
        n = len(sample.images)
        exact.append(float(named == truth))
        chance.append(2.0 / (n * (n - 1)))
        some.append(float(bool(named & truth)))
        masks = dict(zip(prediction.mask_image.tolist(), prediction.masks))
        for k, true_mask in zip(sample.target.mask_image.tolist(), sample.target.masks):
            pred = masks.get(k)
            ious.append(0.0 if pred is None else mask_iou(pred.to_array(), true_mask.to_array()))
    return {
        "the true pair named": float(np.mean(exact)),
        "  a random pair (chance)": float(np.mean(chance)),
        "at least one true image named": float(np.mean(some)),
        "mask IoU on the true images": float(np.mean(ious)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument(
        "--ckpt", type=Path, required=True, help="VistaLLMModule checkpoint (Lightning .ckpt)"
    )
    parser.add_argument("--data", type=Path, required=True, help="ShapesWorld folder (make-shapes --root)")
    parser.add_argument("--task", choices=("coseg", "attcoseg"), default="coseg", help="which groups")
    parser.add_argument("--split", default="test", help="the groups' split (test, val, train; coseg: all)")
    parser.add_argument("--groups", type=int, default=64, help="the split's first groups")
    parser.add_argument("--threshold", type=float, default=40.0, help="foreground: RGB distance summed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    # The checkpoint holds every weight: building must not need the base models' files.
    system = VistaLLMModule.load_from_checkpoint(args.ckpt, map_location="cpu", load_weights=False).eval()
    if args.task == "coseg":
        root, task = args.data / "coseg" / "pascal", Task.COSEG
        reader: CosegReader | AttCosegReader = CosegReader(root, CosegOptions())
    else:
        root, task = args.data / "attcoseg", Task.ATTCOSEG
        reader = AttCosegReader(root)
    samples = [reader.sample(r, train=False) for r in reader.read(args.split, train=False)[: args.groups]]
    if not samples:
        parser.error(f"no {args.task} groups in {root} split {args.split}")
    groups = [[str(ref) for ref in sample.images] for sample in samples]
    predictions = Predictor(system, batch_size=args.batch_size)(groups, task)
    if task is Task.COSEG:
        figures = probe(samples, predictions, args.threshold)
    else:
        figures = pair_probe(samples, predictions) | {"images": float(sum(len(s.images) for s in samples))}
    images = figures.pop("images")
    print(f"{args.ckpt} on {args.data} {args.task} {args.split}: {len(samples)} groups, {images:.0f} images")
    for name, value in figures.items():
        print(f"{name:<42} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
