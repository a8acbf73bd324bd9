"""Can GPV-1 tell the referred object from the others? Attribute probes of its regions, stage by stage.

For RefCOCO+ REC samples of a ShapesWorld folder, a GPV-1 system (a recipe, optionally a checkpoint) encodes
each image and expression; the region a DETR query puts on the referred object (the best IoU, at least 0.5)
is followed through the model. A logistic regression (standardized features) predicts the referred object's
colour and shape, read from the expression (samples naming neither are left out of that probe); it trains on
the first three quarters of the samples and is scored on the rest. Rows, in the order the information flows:

* ``pixels``: the mean normalized RGB of the central half of the true box (a control: colour is there).
* ``roi (C5)``: the RoI-aligned, layer-normed backbone features of the region.
* ``detr decoder``: the DETR query's decoder output.
* ``region``: the two projected together (``region_proj``): what the co-attention receives.
* ``co-attended``: the region after the co-attention with the expression. It has read the expression, which
  names the attribute: above ``region`` it may read the words rather than the pixels.

Then the ranking itself, as hit rates at IoU 0.5 of the box each score ranks first: ``oracle`` (some box
hits), ``relevance`` (what the REC metric ranks by), ``objectness`` and ``relatedness`` (its two terms), and
``query sensitivity``: the mean absolute change of the relatedness logit margin of the image's regions when
the expression is swapped for one about another object of the same image (0: the expression is ignored).
A stage near ``majority`` has lost the attribute; a relevance no better than objectness reads nothing from
the expression.

    .venv/bin/python benchmarks/gpv1_region_probes.py --recipe outputs/demo/gpv1_recipe.yaml \\
        [--ckpt outputs/demo/gpv1/lightning_logs/version_0/checkpoints/last.ckpt] [--batches 150]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from datamodules.refcoco import RefCocoDataModule
from lightning_gpv.cli import read_checkpoint, run_lightning_cli
from lightning_gpv.geometry.boxes import box_convert
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.shapesworld.scene import COLORS, SHAPES
from lightning_gpv.systems.gpv1 import GPV1Module

STAGES = ("pixels", "roi (C5)", "detr decoder", "region", "co-attended")
ATTRIBUTES = {"color": tuple(COLORS), "shape": SHAPES}


def attribute_labels(expression: str) -> dict[str, int | None]:
    """The colour and shape an expression names (indices into :data:`ATTRIBUTES`), None for none named."""
    words = expression.lower().split()
    return {
        name: next((values.index(w) for w in words if w in values), None)
        for name, values in ATTRIBUTES.items()
    }


def central_pixels(pixels: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Mean ``(3,)`` of ``(3, H, W)`` normalized pixels over the central half of a normalized cxcywh box."""
    _, height, width = pixels.shape
    cx, cy, w, h = box.tolist()
    x0, x1 = int(max((cx - w / 4) * width, 0)), int((cx + w / 4) * width) + 1
    y0, y1 = int(max((cy - h / 4) * height, 0)), int((cy + h / 4) * height) + 1
    return pixels[:, y0:y1, x0:x1].mean(dim=(1, 2))


@torch.no_grad()
def collect(module: torch.nn.Module, loader: object, batches: int) -> dict[str, object]:
    """Stage features and labels of the samples whose referred object some query finds, and ranking counts."""
    model = module.model
    features: dict[str, list[torch.Tensor]] = {s: [] for s in STAGES}
    labels: list[dict[str, int | None]] = []
    hits = dict.fromkeys(("samples", "oracle", "relevance", "objectness", "relatedness"), 0)
    sensitivity: list[float] = []
    for b, batch in enumerate(loader):
        if b >= batches:
            break
        pixels = batch.pixel_values
        regions = model.visual(pixels)
        roi = regions.roi_features
        if roi is None:
            raise ValueError("the model's regions have no RoI features (visual.use_roi_features: false)")
        text = model.query_encoder(batch.input_ids, batch.attention_mask)
        _, attended = model.coattention(text, regions.features, batch.attention_mask == 0)
        enc = model.encode(pixels, batch.input_ids, batch.attention_mask)
        margin = enc.relatedness_logits[..., 0] - enc.relatedness_logits[..., 1]
        for i, sample in enumerate(batch.samples):
            target = batch.target_boxes[i]
            if target.numel() == 0:
                continue
            iou = box_iou(
                box_convert(regions.boxes[i], "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")
            )
            hit = iou[:, 0] >= 0.5
            hits["samples"] += 1
            hits["oracle"] += int(hit.any())
            for name, logits in (
                ("relevance", enc.relevance_logits[i]),
                ("objectness", enc.objectness_logits[i]),
                ("relatedness", enc.relatedness_logits[i]),
            ):
                hits[name] += int(hit[int((logits[:, 0] - logits[:, 1]).argmax())])
            # Another expression of the batch about another object of the same image.
            for j, other in enumerate(batch.samples):
                same_image = other.images[0] == sample.images[0]
                if j != i and same_image and not torch.equal(batch.target_boxes[j], target):
                    sensitivity.append(float((margin[i] - margin[j]).abs().mean()))
                    break
            if not bool(hit.any()):
                continue
            k = int(iou[:, 0].argmax())
            features["pixels"].append(central_pixels(pixels[i], target[0]))
            features["roi (C5)"].append(roi[i, k])
            features["detr decoder"].append(regions.detr_features[i, k])
            features["region"].append(regions.features[i, k])
            features["co-attended"].append(attended[i, k])
            labels.append(attribute_labels(sample.expression or ""))
    return {"features": features, "labels": labels, "hits": hits, "sensitivity": sensitivity}


def logistic_probe(x: torch.Tensor, y: torch.Tensor, steps: int = 500) -> tuple[float, float]:
    """Held-out accuracy of a logistic regression on the first three quarters, and the majority's."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    cut = int(0.75 * len(x))
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(linear(x[:cut]), y[:cut]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = float((linear(x[cut:]).argmax(1) == y[cut:]).float().mean())
    majority = float(torch.bincount(y[cut:]).max()) / max(len(y) - cut, 1)
    return accuracy, majority


def report(collected: dict[str, object]) -> str:
    """The probe table and the ranking figures, as printed."""
    lines = [f"{'stage':<14}" + "".join(f"{name + ' acc (majority)':>26}" for name in ATTRIBUTES)]
    features, labels = collected["features"], collected["labels"]
    for stage in STAGES:
        cells = []
        for name in ATTRIBUTES:
            keep = [n for n, lab in enumerate(labels) if lab[name] is not None]
            if len(keep) < 20:
                cells.append(f"{'too few samples':>26}")
                continue
            x = torch.stack([features[stage][n] for n in keep]).float()
            y = torch.tensor([labels[n][name] for n in keep])
            accuracy, majority = logistic_probe(x, y)
            cells.append(f"{f'{accuracy:.3f} ({majority:.3f})':>26}")
        lines.append(f"{stage:<14}" + "".join(cells))
    hits = dict(collected["hits"])
    n = max(hits.pop("samples"), 1)
    lines.append("top-1 hit rate at IoU 0.5: " + ", ".join(f"{k} {v / n:.3f}" for k, v in hits.items()))
    sensitivity = collected["sensitivity"]
    mean = sum(sensitivity) / max(len(sensitivity), 1)
    lines.append(f"query sensitivity (mean |margin change|, {len(sensitivity)} pairs): {mean:.3f}")
    return "\n".join(lines)


def load(recipe: Path, ckpt: Path | None) -> tuple[GPV1Module, DataLoader]:
    """The recipe's GPV-1 system in eval mode (the checkpoint's weights when given) and a loader over its
    RefCOCO data module's training split; exits with a line naming the recipe when it has neither."""
    cli = run_lightning_cli(["-c", str(recipe), "--trainer.logger=false"], run=False)
    module, datamodule = cli.model, cli.datamodule
    if not isinstance(module, GPV1Module):
        sys.exit(f"{recipe}: a {type(module).__name__} recipe; this probe needs a GPV1Module one")
    if ckpt is not None:
        module.load_state_dict(read_checkpoint(ckpt, "--ckpt")["state_dict"])
    module.eval()
    children = getattr(datamodule, "datamodules", [datamodule])
    refcoco = [dm for dm in children if isinstance(dm, RefCocoDataModule)]
    if not refcoco:
        sys.exit(f"{recipe}: no RefCOCO data module in the recipe")
    child = refcoco[0]
    child.connect(module.processor)
    # The training split in evaluation mode and in file order: first prompts, no augmentation, and the
    # expressions of one image side by side (for the query sensitivity).
    return module, child.loader(child.dataset(child.train_split, False), shuffle=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument(
        "--recipe", type=Path, required=True, help="a GPV-1 recipe with a RefCOCO+ data module"
    )
    parser.add_argument("--ckpt", type=Path, help="GPV1Module checkpoint (default: the untrained model)")
    parser.add_argument("--batches", type=int, default=150, help="training batches of the RefCOCO+ loader")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    module, loader = load(args.recipe, args.ckpt)
    print(report(collect(module, loader, args.batches)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
