"""Pretrain a tiny ViT image encoder on ShapesWorld with dense per-patch objectives.

The encoder is the VistaLLM vision tower (:func:`~lightning_gpv.models.vistallm.vision.build_vision_encoder`,
random init), read where the QFormer reads it. Linear heads on its layer-normed patch tokens predict, per
patch (targets in :mod:`lightning_gpv.pretraining.targets`):

* the shape of the object covering it (cross-entropy on object patches) and its colour (cross-entropy,
  background a class of its own);
* that object's visible box, normalised ``(x0, y0, x1, y1)`` (L1, object patches only): every patch of an
  object then carries where the whole object is, which is what a referring expression asks for;
* the foreground occupancy of ``K x K`` cells inside it (binary cross-entropy): the outline, for masks.

The heads are linear so that what they read is linearly available to the QFormer, whose cross-attention
starts with the same kind of LayerNorm. Only the encoder is used later; the heads are saved beside it so
that the quality recorded with the file can be measured again (:func:`evaluate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightning_gpv.geometry.boxes import paired_box_iou
from lightning_gpv.models.vistallm.config import VisionConfig
from lightning_gpv.models.vistallm.vision import VisionEncoder, build_vision_encoder
from lightning_gpv.pretraining.schedule import (
    RunningMeans,
    adamw,
    batch_indices,
    optimizer_step,
    warmup_cosine,
)
from lightning_gpv.pretraining.targets import COLOR_NAMES, PatchTargets
from lightning_gpv.shapesworld.scene import SHAPES

BOX_WEIGHT = 5.0
"""Weight of the box L1 loss (fractions of the image) against the two cross-entropies."""


class PatchHeads(nn.Module):
    """Linear per-patch read-outs of encoder tokens.

    Args:
        width: Token width ``D_v``.
        cells: Occupancy cells per patch side ``K``.
    """

    def __init__(self, width: int, cells: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.shape = nn.Linear(width, len(SHAPES) + 1)
        self.color = nn.Linear(width, len(COLOR_NAMES) + 1)
        self.box = nn.Linear(width, 4)
        self.fine = nn.Linear(width, cells * cells)
        self.cells = cells

    def forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, G*G, D_v)`` patch tokens (row-major) to ``shape (N, G, G, 13)``, ``color (N, G, G, 9)``
        logits, ``boxes (N, G, G, 4)`` normalised xyxy, ``fine (N, G*K, G*K)`` occupancy logits."""
        n, p, _ = patches.shape
        grid = math.isqrt(p)
        x = self.norm(patches).view(n, grid, grid, -1)
        k = self.cells
        fine = self.fine(x).view(n, grid, grid, k, k).permute(0, 1, 3, 2, 4).reshape(n, grid * k, grid * k)
        return {"shape": self.shape(x), "color": self.color(x), "boxes": self.box(x).sigmoid(), "fine": fine}


def patch_tokens(encoder: VisionEncoder, pixel_values: torch.Tensor, grid: int) -> torch.Tensor:
    """The ``(N, G*G, D_v)`` patch tokens of ``encoder`` (any prefix token, such as CLS, dropped)."""
    tokens = encoder(pixel_values)
    return tokens[:, tokens.shape[1] - grid * grid :]


def normalise(images: torch.Tensor, config: VisionConfig) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 to ``(N, 3, S, S)`` float normalised with the tower's mean and std."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def losses(outputs: dict[str, torch.Tensor], targets: PatchTargets) -> dict[str, torch.Tensor]:
    """The four objectives (see the module docstring) and their weighted ``total``."""
    objects = targets.shape > 0
    if objects.any():
        box = F.l1_loss(outputs["boxes"][objects], targets.boxes[objects])
        # On object patches only: background patches (most of them) would drown the shape classes.
        shape = F.cross_entropy(outputs["shape"][objects], targets.shape[objects])
    else:
        box = shape = outputs["boxes"].sum() * 0
    parts = {
        "shape": shape,
        "color": F.cross_entropy(outputs["color"].flatten(0, 2), targets.color.flatten()),
        "box": box,
        "fine": F.binary_cross_entropy_with_logits(outputs["fine"], targets.fine),
    }
    parts["total"] = parts["shape"] + parts["color"] + BOX_WEIGHT * parts["box"] + parts["fine"]
    return parts


@torch.no_grad()
def evaluate(
    encoder: VisionEncoder, heads: PatchHeads, pool: PatchTargets, config: VisionConfig, batch_size: int = 256
) -> dict[str, float]:
    """Quality on ``pool``: ``shape_acc`` and ``color_acc`` on object patches, ``background_acc``,
    ``box_iou`` (mean IoU of the patches' boxes with their object's) and ``box_acc50`` (share above 0.5),
    ``fine_iou`` (foreground cells)."""
    encoder.eval()
    heads.eval()
    grid = pool.shape.shape[1]
    sums = dict.fromkeys(("shape", "color", "background", "iou", "acc50", "inter", "union"), 0.0)
    objects_total = background_total = 0
    for lo in range(0, len(pool), batch_size):
        part = pool.select(torch.arange(lo, min(lo + batch_size, len(pool))))
        out = heads(patch_tokens(encoder, normalise(part.images, config), grid))
        objects = part.shape > 0
        objects_total += int(objects.sum())
        background_total += int((~objects).sum())
        sums["shape"] += float((out["shape"][..., 1:].argmax(-1) + 1 == part.shape)[objects].sum())
        sums["color"] += float((out["color"].argmax(-1) == part.color)[objects].sum())
        sums["background"] += float((out["color"].argmax(-1) == 0)[~objects].sum())
        iou = paired_box_iou(out["boxes"][objects], part.boxes[objects])
        sums["iou"] += float(iou.sum())
        sums["acc50"] += float((iou > 0.5).sum())
        predicted = out["fine"] > 0
        truth = part.fine > 0.5
        sums["inter"] += float((predicted & truth).sum())
        sums["union"] += float((predicted | truth).sum())
    n = max(objects_total, 1)
    return {
        "shape_acc": sums["shape"] / n,
        "color_acc": sums["color"] / n,
        "background_acc": sums["background"] / max(background_total, 1),
        "box_iou": sums["iou"] / n,
        "box_acc50": sums["acc50"] / n,
        "fine_iou": sums["inter"] / max(sums["union"], 1.0),
    }


@dataclass
class PretrainSettings:
    """How :func:`pretrain` trains.

    Attributes:
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (linear warm-up over ``warmup`` steps, cosine decay to 0).
        weight_decay: AdamW weight decay (not on norms and biases).
        warmup: Warm-up steps.
        seed: Seed of the initialisation and the batch order.
    """

    steps: int = 12000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 200
    seed: int = 0


def pretrain(
    config: VisionConfig,
    pool: PatchTargets,
    settings: PretrainSettings,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    log_every: int = 200,
) -> tuple[VisionEncoder, PatchHeads]:
    """Train a random ``config`` encoder and its heads on ``pool``; returns both (in eval mode).

    ``log(step, values)`` receives the running mean of each loss every ``log_every`` steps (and the
    samples per second).
    """
    torch.manual_seed(settings.seed)
    encoder = build_vision_encoder(config, load_weights=False)
    grid = pool.shape.shape[1]
    heads = PatchHeads(encoder.width, pool.fine.shape[1] // grid)
    params = [p for module in (encoder, heads) for p in module.parameters()]
    optimizer = adamw(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = warmup_cosine(optimizer, warmup=settings.warmup, steps=settings.steps)
    batches = batch_indices(len(pool), settings.batch_size, settings.seed)
    means = RunningMeans(log, log_every, settings.batch_size)
    encoder.train()
    heads.train()
    for step in range(settings.steps):
        part = pool.select(next(batches))
        out = heads(patch_tokens(encoder, normalise(part.images, config), grid))
        parts = losses(out, part)
        optimizer_step(parts["total"], optimizer, scheduler, params, 1.0)
        means.add(step, parts)
    encoder.eval()
    heads.eval()
    return encoder, heads
