"""Where a VistaLLM checkpoint's GRES, GREC, RES and NLVR2 answers fall short, sample by sample.

On the test splits of a ShapesWorld folder (``make-shapes --root``), greedy answers under the evaluation
template, the first ``--samples`` of each split:

* GRES and GREC (gRefCOCO ``testA``), by number of target objects: how often the answer has as many masks
  (boxes) as targets and how often none (the "no target" answer), and for GRES the IoU of the union of the
  predicted masks with the union of the targets (mean, share >= 0.7 as in Pr@0.7, share in [0.6, 0.7));
* RES (RefCOCO ``testA``): mean IoU as predicted and with the predicted masks grown or shrunk by 2 and 5
  pixels, the mean centroid offset (x, y, in pixels, with its standard error) and the median area ratio: a
  bias in size or place would show here;
* NLVR2 (``test1``): answers against labels, and the share of statements whose image pairs are all right
  (consistency) beside what answering each pair at random would give.

    .venv/bin/python benchmarks/answer_breakdown.py \\
        --ckpt outputs/demo/vistallm_stage2/checkpoints/last.ckpt --data outputs/demo/data [--samples 256]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from datamodules.grefcoco import GRefCocoOptions, GRefCocoReader
from datamodules.nlvr2 import Nlvr2Reader
from datamodules.refcoco import RefCocoOptions, RefCocoReader
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.systems.vistallm import VistaLLMModule
from lightning_gpv.tasks.samples import Prediction, TaskSample


def union(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool union of bool masks (all False for none)."""
    out = np.zeros(shape, dtype=bool)
    for mask in masks:
        out |= mask
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (0 when both are empty)."""
    return float((a & b).sum() / max(int((a | b).sum()), 1))


def by_targets(
    samples: Sequence[TaskSample], predictions: Sequence[Prediction]
) -> dict[int, dict[str, float]]:
    """GRES or GREC figures per number of targets (see the module docstring); IoU keys for masks only."""
    rows: dict[int, list[tuple[int, float | None]]] = defaultdict(list)
    for sample, prediction in zip(samples, predictions):
        masks = sample.target.masks
        if masks:
            shape = masks[0].to_array().shape
            truth = union([m.to_array().astype(bool) for m in masks], shape)
            guess = union([m.to_array().astype(bool) for m in prediction.masks], shape)
            count, written, value = len(masks), len(prediction.masks), iou(guess, truth)
        elif sample.target.boxes is not None and len(sample.target.boxes):
            count, written, value = len(sample.target.boxes), len(prediction.boxes), None
        else:  # a no-target expression
            count, written, value = 0, len(prediction.masks) + len(prediction.boxes), None
        rows[count].append((written, value))
    out = {}
    for count, items in sorted(rows.items()):
        figures = {
            "samples": float(len(items)),
            "count right": float(np.mean([written == count for written, _ in items])),
            "none written": float(np.mean([written == 0 for written, _ in items])),
        }
        values = np.array([v for _, v in items if v is not None])
        if len(values):
            figures |= {
                "mean IoU": float(values.mean()),
                "IoU >= 0.7": float((values >= 0.7).mean()),
                "IoU in [0.6, 0.7)": float(((values >= 0.6) & (values < 0.7)).mean()),
            }
        out[count] = figures
    return out


def mask_bias(samples: Sequence[TaskSample], predictions: Sequence[Prediction]) -> dict[str, float]:
    """RES figures (see the module docstring) over the samples whose answer has a mask."""
    grown: dict[str, list[float]] = defaultdict(list)
    offsets, ratios = [], []
    cross = ndimage.generate_binary_structure(2, 1)
    for sample, prediction in zip(samples, predictions):
        if not prediction.masks:
            continue
        truth = sample.target.masks[0].to_array().astype(bool)
        guess = prediction.masks[0].to_array().astype(bool)
        if not guess.any() or not truth.any():
            continue
        grown["as predicted"].append(iou(guess, truth))
        for px in (2, 5):
            grown[f"grown {px} px"].append(iou(ndimage.binary_dilation(guess, cross, px), truth))
            grown[f"shrunk {px} px"].append(iou(ndimage.binary_erosion(guess, cross, px), truth))
        (gy, gx), (ty, tx) = ndimage.center_of_mass(guess), ndimage.center_of_mass(truth)
        offsets.append((gx - tx, gy - ty))
        ratios.append(guess.sum() / truth.sum())
    if not offsets:
        return {"masks": 0.0}
    shift = np.array(offsets)
    error = shift.std(axis=0) / np.sqrt(len(shift))
    return {"masks": float(len(shift))} | {f"mean IoU, {k}": float(np.mean(v)) for k, v in grown.items()} | {
        "centroid offset x (px)": float(shift[:, 0].mean()),
        "centroid offset x, standard error": float(error[0]),
        "centroid offset y (px)": float(shift[:, 1].mean()),
        "centroid offset y, standard error": float(error[1]),
        "median centroid distance (px)": float(np.median(np.hypot(shift[:, 0], shift[:, 1]))),
        "median area ratio (predicted / true)": float(np.median(ratios)),
    }  # fmt: skip


def nlvr2_answers(samples: Sequence[TaskSample], predictions: Sequence[Prediction]) -> dict[str, float]:
    """NLVR2 figures (see the module docstring)."""
    answers: Counter[tuple[str, str]] = Counter()
    groups: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for sample, prediction in zip(samples, predictions):
        label, answer = sample.target.text, prediction.text.strip()
        answers[(label, answer)] += 1
        groups[sample.metadata.get("consistency_key", sample.sample_id)].append((answer == label, answer))
    out = {f"label {label}, answer {answer!r}": float(n) for (label, answer), n in sorted(answers.items())}
    sizes = [len(v) for v in groups.values()]
    return out | {
        "accuracy": float(np.mean([ok for v in groups.values() for ok, _ in v])),
        "consistency": float(np.mean([all(ok for ok, _ in v) for v in groups.values()])),
        "consistency answering at random": float(np.mean([0.5**n for n in sizes])),
        # Answers that follow the statement and not the images are alike across its pairs.
        "statements answered alike for all pairs": float(
            np.mean([len({a for _, a in v}) == 1 for v in groups.values()])
        ),
        "statements answered alike, answering at random": float(np.mean([2 * 0.5**n for n in sizes])),
    }


def answer(system: VistaLLMModule, samples: Sequence[TaskSample], batch_size: int) -> list[Prediction]:
    """Greedy predictions of ``samples`` (each with its own expression or statement)."""
    processor, out = system.processor, []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            batch = processor.collate([processor.encode(s, train=False) for s in chunk])
            out.extend(system.predict_batch(batch))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument(
        "--ckpt", type=Path, required=True, help="VistaLLMModule checkpoint (Lightning .ckpt)"
    )
    parser.add_argument("--data", type=Path, required=True, help="ShapesWorld folder (make-shapes --root)")
    parser.add_argument("--samples", type=int, default=256, help="the first samples of each test split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    # The checkpoint holds every weight: building must not need the base models' files.
    system = VistaLLMModule.load_from_checkpoint(args.ckpt, map_location="cpu", load_weights=False).eval()
    images = str(args.data / "coco" / "images" / "train2014")
    readers = {
        "gres": (GRefCocoReader(args.data / "grefcoco", GRefCocoOptions(("gres",), images)), "testA"),
        "grec": (GRefCocoReader(args.data / "grefcoco", GRefCocoOptions(("grec",), images)), "testA"),
        "res": (
            RefCocoReader(args.data / "refcoco", RefCocoOptions(tasks=("res",), image_dir=images)),
            "testA",
        ),
        "nlvr2": (Nlvr2Reader(args.data / "nlvr2"), "test1"),
    }
    print(f"{args.ckpt} on {args.data}, the first {args.samples} test samples of each task")
    for name, (reader, split) in readers.items():
        samples = [reader.sample(r, train=False) for r in reader.read(split, train=False)[: args.samples]]
        if not samples:
            parser.error(f"no {name} samples in {reader.root} split {split}")
        predictions = answer(system, samples, args.batch_size)
        if name in ("gres", "grec"):
            for count, figures in by_targets(samples, predictions).items():
                listing = ", ".join(
                    f"{k} {v:.3f}" if k != "samples" else f"{v:.0f} samples" for k, v in figures.items()
                )
                print(f"{name} {count} target(s): {listing}")
            continue
        figures = mask_bias(samples, predictions) if name == "res" else nlvr2_answers(samples, predictions)
        for key, value in figures.items():
            print(f"{name} {key:<44} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
