"""Pretrain the tiny VistaLLM instruction-guided tokenizer (QFormer, queries, projection) on ShapesWorld
referring expressions, over the frozen pretrained image encoder.

VistaLLM starts from InstructBLIP's pretrained QFormer; the tiny one has no such ancestor, and trained only
through a random LLM's coordinate-token loss it learns to pick the referred object far too slowly for CPU
minutes (``benchmarks/grounding_probes.py``: the referred box is readable from the encoder's patches but not
from the query outputs). Here the tokenizer learns it from a direct signal: a linear head on each visual
token (after the projection, in the LLM's embedding space) predicts the referred object's box, normalised
``(x0, y0, x1, y1)``, and the mean over the ``L`` tokens is trained with L1 and GIoU losses. The head is
discarded; only the tokenizer is kept, so the LLM still has to learn to write the box.

Samples are rendered in memory: scenes of :func:`~lightning_gpv.shapesworld.scene.seed_rng`'s pretraining
stream from image ``start`` on, expressions of the RefCOCO, RefCOCO+ and RefCOCOg styles that single out one
object (:func:`~lightning_gpv.shapesworld.referring.single_expressions`), encoded by the VistaLLM processor
(its instruction templates, its image resizing), so nothing of the data sets the demo tests on is seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_gpv.geometry.boxes import box_convert, generalized_box_iou, paired_box_iou
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.pretraining.schedule import RunningMeans, optimizer_step, warmup_cosine
from lightning_gpv.shapesworld.referring import single_expressions
from lightning_gpv.shapesworld.render import render_record
from lightning_gpv.shapesworld.sample import SceneStyle, sample_scene
from lightning_gpv.shapesworld.scene import STREAMS, seed_rng
from lightning_gpv.tasks import Target, Task, TaskSample

EXPRESSION_STYLES = ("refcoco", "refcoco+", "refcocog")
EXPRESSIONS_PER_OBJECT = 2
"""Expressions kept per object and style (the first ones, in the generator's stable order)."""


@dataclass
class ReferringPool:
    """Encoded referring expressions.

    Attributes:
        pixel_values: ``(N_img, 3, S, S)`` images as the processor normalises them.
        image_index: ``(N,)`` image of each expression.
        instruction_ids: ``N`` QFormer instruction id tensors (unpadded).
        boxes: ``(N, 4)`` referred box, normalised xyxy (fractions of the image width and height).
    """

    pixel_values: torch.Tensor
    image_index: torch.Tensor
    instruction_ids: list[torch.Tensor]
    boxes: torch.Tensor

    def __len__(self) -> int:
        return len(self.instruction_ids)

    def batch(self, index: Sequence[int], pad_id: int) -> tuple[torch.Tensor, ...]:
        """``(pixel_values (B, 3, S, S), instruction_ids (B, T), instruction_mask (B, T), boxes (B, 4))``."""
        ids = [self.instruction_ids[i] for i in index]
        width = max(len(row) for row in ids)
        padded = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for k, row in enumerate(ids):
            padded[k, : len(row)] = row
            mask[k, : len(row)] = 1
        picked = torch.as_tensor(list(index))
        return self.pixel_values[self.image_index[picked]], padded, mask, self.boxes[picked]


def make_referring_pool(
    processor: VistaLLMProcessor, num_images: int, *, seed: int, style: SceneStyle, start: int = 0
) -> ReferringPool:
    """Render images ``start .. start + num_images - 1`` and encode up to :data:`EXPRESSIONS_PER_OBJECT`
    expressions per object and style (scenes of one object have none, as in RefCOCO)."""
    generator = torch.Generator().manual_seed(seed)
    pixels: list[torch.Tensor] = []
    image_index: list[int] = []
    instruction_ids: list[torch.Tensor] = []
    boxes: list[list[float]] = []
    for i in range(start, start + num_images):
        rng = seed_rng(seed, STREAMS["pretraining"], i)
        image, record, _ = render_record(sample_scene(rng, style=style))
        if len(record.instances) < 2:
            continue
        height, width = image.shape[:2]
        for inst in record.instances:
            x, y, w, h = inst.bbox
            texts = [
                t
                for s in EXPRESSION_STYLES
                for t in single_expressions(record, inst, s, rng)[:EXPRESSIONS_PER_OBJECT]
            ]
            for text in texts:
                target = Target(boxes=np.asarray([[x, y, x + w, y + h]], dtype=np.float32))
                sample = TaskSample(task=Task.REC, images=[image], expression=text, target=target)
                with torch.random.fork_rng():
                    torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
                    item = processor.encode(sample, train=True)  # a random instruction template
                instruction_ids.append(item.instruction_ids)
                image_index.append(len(pixels))
                boxes.append([x / width, y / height, (x + w) / width, (y + h) / height])
        pixels.append(processor.image_tensor(image))
    return ReferringPool(
        pixel_values=torch.stack(pixels),
        image_index=torch.as_tensor(image_index, dtype=torch.long),
        instruction_ids=instruction_ids,
        boxes=torch.as_tensor(boxes, dtype=torch.float32),
    )


class BoxHead(nn.Module):
    """Per visual token box read-out, averaged over the ``L`` tokens of an image.

    Args:
        width: Visual token width (the LLM's embedding width ``D``).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.box = nn.Linear(width, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, L, D)`` visual tokens to ``(N, 4)`` normalised xyxy boxes (predicted as centre and size, so
        that every box is well-formed, as GIoU needs)."""
        cxcywh = self.box(self.norm(tokens)).sigmoid().mean(dim=1)
        return box_convert(cxcywh, "cxcywh", "xyxy")


def _predict(
    model: VistaLLM, head: BoxHead, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        features = model.vision(pixels)
    return head(model.tokenizer(features, ids, mask))


def box_losses(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 plus ``1 - GIoU`` of ``(N, 4)`` normalised xyxy boxes (DETR's 5 : 2 weights)."""
    giou = torch.diag(generalized_box_iou(predicted, target))
    return 5.0 * F.l1_loss(predicted, target) + 2.0 * (1 - giou).mean()


@torch.no_grad()
def evaluate_tokenizer(
    model: VistaLLM, head: BoxHead, pool: ReferringPool, pad_id: int, batch_size: int = 128
) -> dict[str, float]:
    """``box_iou`` (mean) and ``box_acc50`` (share above 0.5) of the head's boxes on ``pool``."""
    model.eval()
    head.eval()
    ious = []
    for lo in range(0, len(pool), batch_size):
        pixels, ids, mask, boxes = pool.batch(range(lo, min(lo + batch_size, len(pool))), pad_id)
        ious.append(paired_box_iou(_predict(model, head, pixels, ids, mask), boxes))
    iou = torch.cat(ious)
    return {"box_iou": float(iou.mean()), "box_acc50": float((iou > 0.5).float().mean())}


@dataclass
class TokenizerSettings:
    """How :func:`pretrain_tokenizer` trains (AdamW, linear warm-up then cosine decay to 0)."""

    steps: int = 12000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0


def pretrain_tokenizer(
    model: VistaLLM,
    pool: ReferringPool,
    pad_id: int,
    settings: TokenizerSettings,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    log_every: int = 250,
) -> BoxHead:
    """Train ``model.tokenizer`` (in place) and a :class:`BoxHead` on ``pool``; the image encoder stays
    frozen. Returns the head (eval mode)."""
    torch.manual_seed(settings.seed)
    model.vision.requires_grad_(False)
    head = BoxHead(model.tokenizer.projection.out_features)
    params = [*model.tokenizer.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    scheduler = warmup_cosine(optimizer, warmup=settings.warmup, steps=settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    model.tokenizer.train()
    head.train()
    means = RunningMeans(log, log_every, settings.batch_size)
    for step in range(settings.steps):
        index = torch.randint(len(pool), (settings.batch_size,), generator=generator).tolist()
        pixels, ids, mask, boxes = pool.batch(index, pad_id)
        loss = box_losses(_predict(model, head, pixels, ids, mask), boxes)
        optimizer_step(loss, optimizer, scheduler, params, 1.0)
        means.add(step, {"loss": loss})
    model.eval()
    head.eval()
    return head
