"""Where does VistaLLM lose the referred object's location? Linear box probes, stage by stage.

For ``N`` RefCOCO REC samples of a ShapesWorld folder, a teacher-forced pass and a greedy generation of a
VistaLLM system collect every stage's features; a ridge regression (closed form, standardized features,
lambda chosen on the last quarter of the training half) maps them to the ground-truth box, normalized
``xyxy`` in ``[0, 1]`` of the original image. Probes train on the first half of the samples and are scored
on the second (no image is in both). Rows, in the order the information flows:

* ``constant``: the mean training box for every sample; what a probe gets knowing nothing.
* ``pixel patch map``, ``encoder patch map``: expression-blind segmentation probes (:func:`patch_map_boxes`):
  one linear map, shared by the patches, from a patch's raw pixels or encoder token to "inside the box",
  and the box around the patches it selects. With one object this is the answer; with several it can
  find objects, not the referred one. Encoder against pixels: does the encoder keep where things are?
  (A box is not linear in a flattened grid, even of pixels: such probes score at ``constant``.)
* ``encoder mean``: the encoder's patch tokens averaged over the image (expression-blind).
* ``encoder oracle``: encoder tokens averaged over the patches whose centre is inside the true box. The
  choice of patches already says where the box is, so this is a ceiling; ``oracle patches alone`` pools
  one-hot patch tokens instead: the oracle's margin over it is what the encoder's content adds.
* ``qformer queries``: the QFormer's ``L`` query outputs before the projection, flattened; the
  expression enters the visual stream here.
* ``projected tokens``: the ``L`` visual tokens the LLM receives, flattened.
* ``llm @ first coord``: the LLM's last hidden state at the position that predicts the answer's first
  coordinate token (teacher forcing on the answer as trained: ``[<x0> <y0> <x1> <y1>]``).
* ``llm @ each coord``: the hidden state before each of the 4 coordinate tokens, each probed for its own
  coordinate (the true earlier coordinates are in the context).
* ``teacher-forced argmax``: no probe; the model's bins (argmax over the coordinate tokens) at those 4
  positions, bin centres.
* ``greedy answer``: no probe; the model's own greedy answer, parsed (no box: IoU 0).
* ``..., other image``: controls, the teacher-forced rows with every sample shown another sample's image
  (:func:`other_image`): what the expression and the earlier true coordinates give alone (box priors).

Reading the table: a probe measures what is *linearly* decodable at a stage; near ``constant``, the
location is absent (or not linear) there. A big drop between two consecutive rows is where the location
is lost; a row no better than its ``other image`` control reads nothing from the image. Linear probes only
bound from below (the LLM reads its visual tokens nonlinearly: a later row may beat an earlier one). A
probe far above ``teacher-forced argmax``: the LLM holds the box but does not write it; ``teacher-forced
argmax`` far above ``greedy answer``: decoding loses it (errors compounding, format failures).

    .venv/bin/python benchmarks/grounding_probes.py --ckpt RUN/checkpoints/last.ckpt \\
        --data outputs/demo/data [--split val] [--samples 512] [--json probes.json]
    .venv/bin/python benchmarks/grounding_probes.py --untrained [--random-init] --data WORLD --split train
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.nn.functional import unfold

from datamodules.refcoco import RefCocoOptions, RefCocoReader
from lightning_gpv.geometry.boxes import paired_box_iou
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMBatch
from lightning_gpv.systems.vistallm import VistaLLMModule
from lightning_gpv.tasks.samples import TaskSample

LAMBDAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
"""Ridge penalties tried on standardized features (the one with the least validation error is kept)."""


@dataclass
class StageFeatures:
    """What :func:`collect_features` gathers for ``n`` samples.

    Attributes:
        features: Stage name -> ``(n, d)`` float features, or ``(n, 4, d)`` for ``llm @ each coord``
            (one row per coordinate, in ``x0 y0 x1 y1`` order).
        patch_maps: Stage name -> ``(n, P, d)`` features of each of the ``P = grid * grid`` patches,
            row-major (probed patch by patch: :func:`patch_map_boxes`).
        boxes: ``(n, 4)`` ground-truth boxes, normalized ``xyxy`` in ``[0, 1]`` of the original image.
        decoded: Stage name -> ``(n, 4)`` boxes the model wrote, normalized ``xyxy``; NaN rows where the
            answer held no box.
        image_ids: The image of each sample (halves never share one).
    """

    features: dict[str, torch.Tensor]
    boxes: torch.Tensor
    decoded: dict[str, torch.Tensor]
    patch_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    image_ids: list[int] = field(default_factory=list)


def load_samples(root: Path, split: str, count: int) -> list[TaskSample]:
    """The first ``count`` REC samples of ``split`` in a ShapesWorld folder's RefCOCO (unc) files."""
    options = RefCocoOptions("refcoco", "unc", tasks=("rec",), image_dir=str(root / "coco/images/train2014"))
    reader = RefCocoReader(root / "refcoco", options)
    return [reader.sample(record, train=False) for record in reader.read(split, train=False)[:count]]


def normalized_box(box: Sequence[float], height: int, width: int) -> list[float]:
    """An absolute-pixel ``xyxy`` box as fractions of the image's width and height."""
    return [box[0] / width, box[1] / height, box[2] / width, box[3] / height]


def patch_inside(boxes: torch.Tensor, grid: int) -> torch.Tensor:
    """``(n, grid * grid)`` bool, row-major: the patches whose centre is inside each normalized ``xyxy``
    box ``(n, 4)`` (the processor resizes without crop: boxes are also fractions of the encoder's input)."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    ys, xs = centres.repeat_interleave(grid), centres.repeat(grid)
    return (xs >= boxes[:, :1]) & (xs <= boxes[:, 2:3]) & (ys >= boxes[:, 1:2]) & (ys <= boxes[:, 3:4])


def oracle_pool(tokens: torch.Tensor, boxes: torch.Tensor, grid: int) -> torch.Tensor:
    """``(n, d)`` mean of the patch tokens ``(n, grid * grid, d)`` (row-major, no prefix token) whose
    centre is inside each normalized ``xyxy`` box ``(n, 4)``; a box smaller than a patch pools the patch
    under its centre."""
    inside = patch_inside(boxes, grid)
    centre = ((boxes[:, 1] + boxes[:, 3]) / 2 * grid).long().clamp(0, grid - 1) * grid
    centre += ((boxes[:, 0] + boxes[:, 2]) / 2 * grid).long().clamp(0, grid - 1)
    empty = ~inside.any(1)
    inside[empty, centre[empty]] = True
    weights = inside.float() / inside.sum(1, keepdim=True)
    return torch.einsum("np,npd->nd", weights, tokens)


def mask_box(scores: torch.Tensor, threshold: float, grid: int) -> torch.Tensor:
    """``(n, 4)`` normalized ``xyxy`` boxes around the patches scoring at least ``threshold`` in ``(n, P)``
    row-major patch scores (the best patch alone where none does)."""
    chosen = scores >= threshold
    chosen |= ~chosen.any(1, keepdim=True) & (scores == scores.max(1, keepdim=True).values)
    index = torch.arange(grid * grid)
    cols, rows = index % grid, index // grid
    edges = [torch.where(chosen, v, grid).min(1).values for v in (cols, rows)]
    edges += [torch.where(chosen, v, -1).max(1).values + 1 for v in (cols, rows)]
    return torch.stack(edges, dim=1).float() / grid


def patch_map_boxes(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, grid: int
) -> tuple[torch.Tensor, float]:
    """An expression-blind segmentation probe: one ridge map from a patch's features ``(n, P, d)`` to
    whether its centre is inside the box, shared by all patches; a box is drawn around the patches above
    a threshold (the best one on the training half). Returns ``((m, 4) boxes, lambda)``."""
    n, patches, d = x_train.shape
    inside = patch_inside(y_train, grid).float().reshape(-1, 1)
    both = torch.cat([x_train, x_test]).reshape(-1, d)
    scores, lam = probe(x_train.reshape(-1, d), inside, both)
    scores = scores.view(-1, patches)
    fits = {
        t: float(paired_box_iou(mask_box(scores[:n], t, grid), y_train).mean()) for t in (0.1, 0.2, 0.3, 0.5)
    }
    return mask_box(scores[n:], max(fits, key=fits.__getitem__), grid), lam


def teacher_forced(model: VistaLLM, batch: VistaLLMBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's last hidden states ``(B, 4, D)`` at the positions predicting the answer's 4 coordinate
    tokens (teacher forcing), and the coordinate bins ``(B, 4)`` it gives them (argmax over the bins)."""
    embeds = model.embed_inputs(
        batch.input_ids, batch.pixel_values, batch.instruction_ids, batch.instruction_mask, batch.image_counts
    )
    out = model.llm(
        inputs_embeds=embeds, attention_mask=batch.attention_mask, output_hidden_states=True, use_cache=False
    )
    coord_ids = torch.tensor(model.coord_token_ids)
    is_coord = torch.isin(batch.labels, coord_ids)
    if is_coord.sum(1).lt(4).any():
        raise ValueError("an answer holds fewer than 4 coordinate tokens")
    # Position t predicts token t + 1: one before each of the first 4 coordinate labels.
    where = torch.stack([row.nonzero().flatten()[:4] for row in is_coord]) - 1
    at = torch.arange(len(batch))[:, None]
    bins = out.logits[at, where][..., coord_ids].argmax(-1)
    return out.hidden_states[-1][at, where].float(), bins


def other_image(image_ids: Sequence[int], i: int) -> int:
    """The sample whose image sample ``i`` sees in the controls: ``n/2`` samples on, or the next one after
    it with another image (``i`` itself when all samples share one)."""
    n = len(image_ids)
    far = ((i + n // 2 + step) % n for step in range(n))
    return next((j for j in far if image_ids[j] != image_ids[i]), i)


@torch.no_grad()
def collect_features(
    system: VistaLLMModule, samples: Sequence[TaskSample], batch_size: int = 16
) -> StageFeatures:
    """Encode ``samples`` (evaluation template), run the teacher-forced passes and a greedy generation, and
    gather every stage's features (see :class:`StageFeatures` and the module docstring)."""
    system.eval()
    model, processor = system.model, system.processor
    grid = system.config.vision.image_size // system.config.vision.patch_size
    num_bins = len(model.coord_token_ids)
    items = [processor.encode(s, train=False) for s in samples]
    if any(len(item.pixel_values) != 1 for item in items):
        raise ValueError("REC samples have one image each")
    boxes = torch.tensor(
        [normalized_box(s.target.boxes[0], *s.image_sizes[0]) for s in samples], dtype=torch.float32
    )
    one_hot = torch.eye(grid * grid)[None]
    image_ids = [int(s.image_ids[0]) if s.image_ids else i for i, s in enumerate(samples)]
    partners = [other_image(image_ids, i) for i in range(len(samples))]
    captured: dict[str, torch.Tensor] = {}
    hooks = [  # one pass through embed_inputs fills all three
        model.vision.register_forward_hook(lambda m, i, o: captured.__setitem__("vision", o)),
        model.tokenizer.projection.register_forward_hook(
            lambda m, i, o: captured.update(queries=i[0], projected=o)
        ),
    ]
    rows: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, len(samples), batch_size):
            span = range(start, min(start + batch_size, len(samples)))
            batch = processor.collate([items[i] for i in span])
            hidden, bins = teacher_forced(model, batch)
            tokens, queries, projected = captured["vision"], captured["queries"], captured["projected"]
            swapped = [replace(items[i], pixel_values=items[partners[i]].pixel_values) for i in span]
            other_hidden, other_bins = teacher_forced(model, processor.collate(swapped))
            greedy = []
            for prediction, sizes in zip(system.predict_batch(batch), batch.image_sizes):
                found = len(prediction.boxes) > 0
                greedy.append(normalized_box(prediction.boxes[0], *sizes[0]) if found else [math.nan] * 4)
            patches = tokens[:, tokens.shape[1] - grid * grid :]  # without the CLS prefix
            side = system.config.vision.patch_size
            stage_rows = {
                "pixel patch map": unfold(batch.pixel_values, side, stride=side).transpose(1, 2),
                "encoder patch map": patches,
                "encoder mean": patches.mean(1),
                "encoder oracle": oracle_pool(patches, boxes[span.start : span.stop], grid),
                # What the oracle's choice of patches alone tells: one-hot patch tokens, pooled alike.
                "oracle patches alone": oracle_pool(
                    one_hot.expand(len(span), -1, -1), boxes[span.start : span.stop], grid
                ),
                "qformer queries": queries.flatten(1),
                "projected tokens": projected.flatten(1),
                "llm @ first coord": hidden[:, 0],
                "llm @ each coord": hidden,
                "llm @ each coord, other image": other_hidden,
                "teacher-forced argmax": (bins.float() + 0.5) / num_bins,
                "teacher-forced argmax, other image": (other_bins.float() + 0.5) / num_bins,
                "greedy answer": torch.tensor(greedy, dtype=torch.float32),
            }
            for name, value in stage_rows.items():
                rows.setdefault(name, []).append(value.float())
    finally:
        for hook in hooks:
            hook.remove()
    stacked = {name: torch.cat(values) for name, values in rows.items()}
    decoded = {name: stacked.pop(name) for name in list(stacked) if "argmax" in name or "greedy" in name}
    patch_maps = {name: stacked.pop(name) for name in ("pixel patch map", "encoder patch map")}
    return StageFeatures(stacked, boxes, decoded, patch_maps, image_ids)


def split_halves(image_ids: Sequence[int]) -> torch.Tensor:
    """``(n,)`` bool, True for the training half: the images seen first, until half the samples."""
    counts = Counter(image_ids)  # in order of first appearance
    train, total = set(), 0
    for image in counts:
        if total >= len(image_ids) / 2:
            break
        train.add(image)
        total += counts[image]
    return torch.tensor([image in train for image in image_ids])


def fit_ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, ...]:
    """Ridge regression on standardized ``x`` ``(n, d)`` to ``y`` ``(n, k)``: ``(mean, std, W, bias)``.

    Solved in float64, in the primal ``(X^T X + lam I) W = X^T Y`` when ``d <= n`` and the dual
    ``W = X^T (X X^T + lam I)^-1 Y`` otherwise (flattened stages have thousands of dimensions)."""
    x, y = x.double(), y.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)  # constant features stay at 0
    z, bias = (x - mean) / std, y.mean(0)
    n, d = z.shape
    if d <= n:
        weight = torch.linalg.solve(z.T @ z + lam * torch.eye(d, dtype=z.dtype), z.T @ (y - bias))
    else:
        weight = z.T @ torch.linalg.solve(z @ z.T + lam * torch.eye(n, dtype=z.dtype), y - bias)
    return mean, std, weight, bias


def predict_ridge(params: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    """``(n, k)`` float32 predictions of a :func:`fit_ridge` fit for ``x`` ``(n, d)``."""
    mean, std, weight, bias = params
    return (((x.double() - mean) / std) @ weight + bias).float()


def probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Fit a ridge probe (lambda from :data:`LAMBDAS` by the squared error on the last quarter of the
    training rows), refit on all of them and predict ``x_test``: ``((m, k) predictions, lambda)``."""
    cut, lam = max(1, len(x_train) * 3 // 4), 1.0  # too few rows to choose: 1.0
    if cut < len(x_train):
        errors = [
            float((predict_ridge(fit_ridge(x_train[:cut], y_train[:cut], lam), x_train[cut:]) - y_train[cut:])
                  .pow(2).mean())
            for lam in LAMBDAS
        ]  # fmt: skip
        lam = LAMBDAS[min(range(len(LAMBDAS)), key=errors.__getitem__)]
    return predict_ridge(fit_ridge(x_train, y_train, lam), x_test), lam


def as_box(raw: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` regressed numbers to valid normalized ``xyxy`` boxes: clipped to ``[0, 1]``, each
    axis sorted so that ``x0 <= x1`` and ``y0 <= y1``; NaN rows stay NaN."""
    raw = raw.clamp(0, 1)
    x0, x1 = torch.minimum(raw[:, 0], raw[:, 2]), torch.maximum(raw[:, 0], raw[:, 2])
    y0, y1 = torch.minimum(raw[:, 1], raw[:, 3]), torch.maximum(raw[:, 1], raw[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def run_probes(collected: StageFeatures) -> list[dict[str, object]]:
    """One row per stage, in the order of the module docstring: ``stage``, ``dim``, ``iou`` and
    ``acc@0.5`` on the held-out half, ``lambda`` (probes only), ``n_train`` and ``n_test``."""
    train = split_halves(collected.image_ids)
    test = ~train
    y_train, y_test = collected.boxes[train], collected.boxes[test]
    rows: list[dict[str, object]] = []

    def add(stage: str, dim: str, boxes: torch.Tensor, lam: float | None) -> None:
        iou = paired_box_iou(boxes, y_test)
        acc = float((iou >= 0.5).float().mean())
        counts = {"n_train": int(train.sum()), "n_test": int(test.sum())}
        rows.append(
            {"stage": stage, "dim": dim, "iou": float(iou.mean()), "acc@0.5": acc, "lambda": lam, **counts}
        )

    add("constant", "0", y_train.mean(0).expand(len(y_test), 4), None)
    grid = math.isqrt(next(iter(collected.patch_maps.values())).shape[1]) if collected.patch_maps else 0
    for name, x in collected.patch_maps.items():
        predicted, lam = patch_map_boxes(x[train], y_train, x[test], grid)
        add(name, f"{grid}^2x{x.shape[2]}", predicted, lam)
    for name, x in collected.features.items():
        if x.dim() == 3:  # one probe per coordinate, each from its own position's hidden state
            parts = [probe(x[train, k], y_train[:, k : k + 1], x[test, k]) for k in range(4)]
            predicted = torch.cat([p for p, _ in parts], dim=1)
            add(name, f"4x{x.shape[2]}", as_box(predicted), max(lam for _, lam in parts))
        else:
            predicted, lam = probe(x[train], y_train, x[test])
            add(name, str(x.shape[1]), as_box(predicted), lam)
    for name, boxes in collected.decoded.items():
        add(name, "-", as_box(boxes[test]), None)
    rows.sort(key=lambda row: "other image" in str(row["stage"]))  # stable: the controls go last
    return rows


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """The rows as a fixed-width text table."""
    lines = [f"{'stage':<36}{'dim':>8}{'IoU':>8}{'Acc@0.5':>9}{'lambda':>9}"]
    for row in rows:
        lam = "-" if row["lambda"] is None else f"{row['lambda']:g}"
        lines.append(f"{row['stage']:<36}{row['dim']:>8}{row['iou']:>8.3f}{row['acc@0.5']:>9.3f}{lam:>9}")
    return "\n".join(lines)


def load_system(ckpt: Path | None, untrained: bool, random_init: bool) -> VistaLLMModule:
    """A checkpoint's system, or the untrained tiny one (its shipped encoder unless ``random_init``)."""
    if untrained:
        return VistaLLMModule(config="tiny", stage=1, load_weights=not random_init)
    # The checkpoint holds every weight: building must not need the base models' files.
    return VistaLLMModule.load_from_checkpoint(ckpt, map_location="cpu", load_weights=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", type=Path, help="VistaLLMModule checkpoint (Lightning .ckpt)")
    model.add_argument("--untrained", action="store_true", help="the untrained tiny model (stage 1)")
    parser.add_argument("--random-init", action="store_true", help="with --untrained: random encoder too")
    parser.add_argument("--data", type=Path, required=True, help="ShapesWorld folder (make-shapes --root)")
    parser.add_argument("--split", default="val", help="RefCOCO (unc) split")
    parser.add_argument("--samples", type=int, default=512, help="the split's first samples")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the untrained model's random init
    system = load_system(args.ckpt, args.untrained, args.random_init)
    samples = load_samples(args.data, args.split, args.samples)
    if len(samples) < 4:
        parser.error(f"{len(samples)} REC samples in {args.split}: probes need at least 4")
    rows = run_probes(collect_features(system, samples, args.batch_size))
    source = "untrained tiny" if args.untrained else str(args.ckpt)
    print(f"{source} on {args.data} {args.split}: {len(samples)} samples, "
          f"{rows[0]['n_train']} train / {rows[0]['n_test']} test")  # fmt: skip
    print(format_table(rows))
    if args.json is not None:
        meta = {"source": source, "data": str(args.data), "split": args.split, "samples": len(samples)}
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
