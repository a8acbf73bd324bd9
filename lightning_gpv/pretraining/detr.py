"""Pretrain GPV-1's tiny DETR on ShapesWorld with DETR's detection objective.

GPV-1 starts from a COCO-trained DETR; the tiny preset gets its DETR from here instead. A seeded, in-memory
ShapesWorld pool (the scenes of :mod:`lightning_gpv.pretraining.targets`, pretraining stream) is prepared by
the GPV-1 processor itself (:meth:`~lightning_gpv.models.gpv1.processor.GPV1Processor.encode` of a
localization sample naming every object), so images are resized and normalized, and boxes normalized,
exactly as GPV-1 sees them:

* images: ``(N, H, W, 3)`` uint8 resized pixels (the processor's normalized values, stored exactly as the
  uint8 they came from; :meth:`DetrPool.pixel_values` gives them back bit for bit);
* boxes: ``(N, M, 4)`` float32 visible box of every object, normalized ``cxcywh`` (padding rows 0);
* labels: ``(N, M, 2)`` int64 attribute classes of each object in :data:`ATTRIBUTES` order, shape
  ``SHAPES.index + 1`` and colour ``COLOR_NAMES.index + 1`` (0 on padding rows).

:func:`pretrain_detr` trains a random :class:`~lightning_gpv.models.gpv1.detr.DetrRegionEncoder` (every DETR
parameter, the ResNet stem and stage 1 included, its batch norm, and the objectness head) with DETR's
Hungarian loss as GPV-1 computes it for localization (every object relevant; L1 and GIoU weighted 5 and 2),
plus DETR's class cross-entropy from throwaway :class:`AttributeHeads`: the shape class on the decoder output
and, with ``region_weight > 0``, the shape and the colour on the RoI part of GPV-1's region descriptors. A
COCO-trained DETR's regions tell its 80 categories apart; with the shape class alone ours carry no colour (a
linear probe of them is at chance), so GPV-1 cannot tell "the red circle" from "the blue one" (the region
heads put it there: docs/benchmarks.md, "GPV-1's RefCOCO+ fine-tuning and richer DETRs"). ``region_proj``
is neither trained nor saved (GPV-1 trains it): :func:`detr_tensors` puts the rest under ``encoder.`` and the
heads under ``heads.``, so that :func:`evaluate_detr` can measure the file's quality again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF
from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

from lightning_gpv.geometry.boxes import box_convert, box_iou, generalized_box_iou
from lightning_gpv.models import shipped
from lightning_gpv.models.gpv1.config import DetrEncoderConfig, TextEncoderConfig
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder, RegionOutput
from lightning_gpv.models.gpv1.heads import NOT_RELEVANT, RELEVANT
from lightning_gpv.models.gpv1.matcher import HungarianMatcher
from lightning_gpv.models.gpv1.processor import IMAGENET_MEAN, IMAGENET_STD, GPV1Processor
from lightning_gpv.models.gpv1.text import load_tokenizer, write_wordpiece_vocab
from lightning_gpv.models.gpv1.vocab import AnswerVocabulary
from lightning_gpv.pretraining.schedule import (
    RunningMeans,
    adamw,
    batch_indices,
    optimizer_step,
    warmup_cosine,
)
from lightning_gpv.pretraining.targets import COLOR_NAMES
from lightning_gpv.shapesworld.render import render_scene
from lightning_gpv.shapesworld.sample import SceneStyle, sample_scene
from lightning_gpv.shapesworld.scene import SHAPES, STREAMS, seed_rng
from lightning_gpv.tasks import Target, Task, TaskSample

NOT_SAVED = ("region_proj.",)
"""Parameters of :class:`DetrRegionEncoder` the weight file leaves out (GPV-1 trains them from scratch)."""
POOL_IMAGES = 16_000
"""Training pool size the :class:`DetrPretrainSettings` defaults were measured with (6000 steps of 32 see
each image 12 times; 8000 images overfit measurably)."""
CATEGORY = "object"
"""Category named by the localization samples the processor prepares (its prompt is discarded)."""
ATTRIBUTES = ("shape", "color")
"""The attributes DETR classifies, in the order of the label columns."""


@dataclass
class DetrPool:
    """Images and their object boxes (see the module docstring for shapes and formats)."""

    images: torch.Tensor  # (N, H, W, 3) uint8
    boxes: torch.Tensor  # (N, M, 4) float32, normalized cxcywh
    labels: torch.Tensor  # (N, M, 2) int64, (SHAPES.index + 1, COLOR_NAMES.index + 1), 0 = padding

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, index: torch.Tensor) -> DetrPool:
        """The samples at ``index`` (a 1-D index tensor)."""
        return DetrPool(self.images[index], self.boxes[index], self.labels[index])

    def pixel_values(self) -> torch.Tensor:
        """``(N, 3, H, W)`` float32, ImageNet-normalized exactly as the GPV-1 processor does."""
        return TF.normalize(self.images.permute(0, 3, 1, 2).float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)

    def targets(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(k, 4)`` normalized ``cxcywh`` boxes and ``(k, 2)`` labels without the padding."""
        return [(b[lab[:, 0] > 0], lab[lab[:, 0] > 0]) for b, lab in zip(self.boxes, self.labels)]


def image_processor(image_size: int | tuple[int, int]) -> GPV1Processor:
    """A GPV-1 processor resizing to ``image_size`` (``side`` or ``(height, width)``), built as the tests
    build one: a small WordPiece vocabulary (the prompt ids are not used here) and a one-word answer
    vocabulary."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = write_wordpiece_vocab([CATEGORY], Path(folder) / "vocab.txt")
        tokenizer = load_tokenizer(TextEncoderConfig(tokenizer_name_or_path=str(vocab_file)))
    return GPV1Processor(tokenizer, AnswerVocabulary.build([CATEGORY]), image_size=size)


def _to_uint8(pixel_values: torch.Tensor) -> torch.Tensor:
    """Invert the processor's normalization: ``(3, H, W)`` float32 to ``(H, W, 3)`` uint8.

    The processor resizes uint8 pixels, so its values are ``(u / 255 - mean) / std`` for integers ``u``;
    storing ``u`` takes a quarter of the memory. Raises if the values do not come back bit for bit.
    """
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((pixel_values * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)
    again = TF.normalize(pixels.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)
    if not torch.equal(again, pixel_values):
        raise RuntimeError("the processor's pixel values are not normalized uint8 pixels")
    return pixels.permute(1, 2, 0).contiguous()


def scene_detections(
    processor: GPV1Processor,
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    labels: Sequence[tuple[int, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One rendered scene as GPV-1 sees it.

    Args:
        processor: Resizes and normalizes (:func:`image_processor`).
        image: ``(H, W, 3)`` uint8 picture.
        masks: Visible ``(H, W)`` 0/1 masks, one per object.
        labels: 1-based ``(shape, colour)`` classes of each object.

    Returns:
        ``(S_h, S_w, 3)`` uint8 resized image, ``(k, 4)`` float32 normalized ``cxcywh`` boxes (the tight box
        of the visible pixels, pixel-edge convention as the COCO annotations), ``(k, 2)`` int64 labels.
    """
    xywh = np.asarray([cv2.boundingRect(m.astype(np.uint8)) for m in masks], dtype=np.float32).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    sample = TaskSample(Task.LOCALIZATION, [image], Target(boxes=xyxy), category=CATEGORY)
    item = processor.encode(sample, train=False)
    assert item.boxes is not None  # a localization sample always has box targets
    classes = torch.as_tensor(list(labels), dtype=torch.long).reshape(-1, len(ATTRIBUTES))
    return _to_uint8(item.pixel_values), item.boxes, classes


def make_detr_pool(
    num_images: int,
    *,
    seed: int,
    styles: Sequence[SceneStyle],
    image_size: int | tuple[int, int],
    start: int = 0,
) -> DetrPool:
    """Render images ``start .. start + num_images - 1`` of the pretraining stream with their boxes.

    The scenes are those of :func:`lightning_gpv.pretraining.targets.make_pool` for the same ``seed``,
    ``styles`` and indices (image ``i`` uses ``styles[i % len(styles)]``); a held-out pool is the same call
    with a ``start`` past the training pool. ``image_size`` is the GPV-1 config's (96 in the tiny recipe).
    """
    processor = image_processor(image_size)
    rows = []
    for i in range(start, start + num_images):
        scene = sample_scene(seed_rng(seed, STREAMS["pretraining"], i), style=styles[i % len(styles)])
        image, _, visible = render_scene(scene)
        labels = [(SHAPES.index(obj.shape) + 1, COLOR_NAMES.index(obj.color) + 1) for obj in scene.objects]
        rows.append(scene_detections(processor, image, visible, labels))
    images, boxes, labels = zip(*rows)
    pad = torch.nn.utils.rnn.pad_sequence  # zero rows after each image's objects
    return DetrPool(
        torch.stack(images), pad(list(boxes), batch_first=True), pad(list(labels), batch_first=True)
    )


class AttributeHeads(nn.Module):
    """Throwaway class heads for pretraining and its quality check, each ``(B, R, n + 1)`` logits, class 0 =
    no object, ``c`` = the attribute's value ``c - 1``:

    * ``shape``: DETR's class head on the decoder output ``(B, R, d_model)``;
    * with ``region``, ``region_shape`` and ``region_color`` on the boxes' pooled backbone features
      ``(B, R, C)`` (the RoI part of GPV-1's region descriptors), so that the backbone keeps what GPV-1 asks
      about objects.

    Args:
        d_model: DETR's decoder width.
        roi_channels: Channels of the backbone map the RoI features pool.
        region: Whether the region heads exist.
    """

    def __init__(self, d_model: int, roi_channels: int, region: bool = False) -> None:
        super().__init__()
        self.shape = nn.Linear(d_model, len(SHAPES) + 1)
        self.region_shape = nn.Linear(roi_channels, len(SHAPES) + 1) if region else None
        self.region_color = nn.Linear(roi_channels, len(COLOR_NAMES) + 1) if region else None

    def file_state(self) -> dict[str, torch.Tensor]:
        """The heads' tensors as a weight file holds them: the shape head alone as a bare linear layer
        (``weight``, ``bias``: the layout of files without region heads, the shipped one included), else the
        state dict."""
        return (self.shape if self.region_shape is None else self).state_dict()

    @classmethod
    def from_file_state(
        cls, d_model: int, roi_channels: int, state: dict[str, torch.Tensor]
    ) -> AttributeHeads:
        """The heads a weight file's ``heads.`` tensors (:meth:`file_state`) describe, loaded strictly."""
        heads = cls(d_model, roi_channels, region="weight" not in state)
        (heads.shape if heads.region_shape is None else heads).load_state_dict(state)
        return heads

    def forward(self, out: RegionOutput) -> dict[str, torch.Tensor]:
        logits = {"shape": self.shape(out.detr_features)}
        if self.region_shape is None or self.region_color is None:
            return logits
        if out.roi_features is None:
            raise ValueError("the region heads need the RoI features (DetrEncoderConfig.use_roi_features)")
        return logits | {
            "region_shape": self.region_shape(out.roi_features),
            "region_color": self.region_color(out.roi_features),
        }


LABEL_COLUMN = {"shape": 0, "region_shape": 0, "region_color": 1}
"""The label column (:data:`ATTRIBUTES` order) each head of :class:`AttributeHeads` predicts."""


@dataclass
class DetrPretrainSettings:
    """How :func:`pretrain_detr` trains.

    Attributes:
        steps: Optimizer steps.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (linear warm-up over ``warmup`` steps, cosine decay to 0).
        weight_decay: AdamW weight decay (not on 1-D tensors: norms and biases).
        warmup: Warm-up steps.
        clip: Gradient-norm clipping.
        no_object_weight: Cross-entropy weight of the no-object class (DETR's ``eos_coef``).
        region_weight: Weight of the RoI features' shape and colour terms (:data:`REGION_HEADS`); 0: no
            region heads (the shipped file). At 12,000 steps 0.5 kept the boxes (held-out AP@0.5 0.966), 1
            cost them (0.921; docs/benchmarks.md).
        batch_norm: Train the ResNet's batch norm (:func:`thaw_batch_norm`); else it stays the
            identity that a random DETR's frozen batch norm is.
        seed: Seed of the initialization and the batch order.
    """

    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    clip: float = 1.0
    no_object_weight: float = 0.1
    region_weight: float = 0.0
    batch_norm: bool = True
    seed: int = 0


def thaw_batch_norm(module: nn.Module) -> Callable[[], None]:
    """Swap every frozen batch norm of ``module`` for a training ``nn.BatchNorm2d``; returns the function that
    folds what they learned (affine and running statistics) back into the frozen ones and puts those back.

    DETR's ResNet comes with frozen batch norm, statistics and all, from its ImageNet training; a ResNet
    learned from scratch here gets its statistics the same way, and GPV-1 keeps them frozen.
    """
    swapped: list[tuple[nn.Module, str, DetrFrozenBatchNorm2d, nn.BatchNorm2d]] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DetrFrozenBatchNorm2d):
                norm = nn.BatchNorm2d(child.weight.numel()).to(child.weight.device)
                _copy_norm(child, norm)
                setattr(parent, name, norm)
                swapped.append((parent, name, child, norm))

    def fold() -> None:
        for parent, name, frozen, norm in swapped:
            _copy_norm(norm, frozen)
            setattr(parent, name, frozen)

    return fold


@torch.no_grad()
def _copy_norm(source: nn.Module, target: nn.Module) -> None:
    for key in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, key).copy_(getattr(source, key))


LOSS_WEIGHTS = {"objectness": 1.0, "shape": 1.0, "bbox": 5.0, "giou": 2.0}
"""DETR's weights (class 1, L1 5, GIoU 2), the class weight shared by objectness and shape; the region heads'
terms are weighted ``region_weight`` (:class:`DetrPretrainSettings`)."""
REGION_HEADS = tuple(name for name in LABEL_COLUMN if name.startswith("region_"))
"""The heads of :class:`AttributeHeads` on the RoI features (``region_shape``, ``region_color``)."""


def detection_losses(
    boxes: torch.Tensor,
    objectness_logits: torch.Tensor,
    class_logits: dict[str, torch.Tensor],
    targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    matcher: HungarianMatcher,
    no_object_weight: float = 0.1,
    region_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """DETR's Hungarian loss with GPV-1's binary objectness and a class term per :class:`AttributeHeads` head.

    The objectness, L1 and GIoU terms are those of
    :func:`~lightning_gpv.models.gpv1.losses.localization_losses` (every object relevant); each head's term
    is DETR's class cross-entropy (matched queries their attribute value, the others class 0 weighted
    ``no_object_weight``). One matching serves all terms.

    Args:
        boxes, objectness_logits: ``(B, R, 4)`` normalized ``cxcywh``, ``(B, R, 2)`` (index 0 = object).
        class_logits: Per head (:data:`LABEL_COLUMN`), ``(B, R, C + 1)`` logits.
        targets: ``B`` pairs of ``(k, 4)`` normalized ``cxcywh`` boxes and ``(k, 2)`` labels (columns in
            :data:`ATTRIBUTES` order, values from 1).
        matcher, no_object_weight: The Hungarian matcher; the cross-entropy weight of "no object".
        region_weight: Weight of the :data:`REGION_HEADS` terms.

    Returns:
        ``objectness``, each head's term, ``bbox``, ``giou`` and the weighted ``total``.
    """
    indices = matcher(objectness_logits, boxes, [b for b, _ in targets])
    batch_idx = torch.cat([torch.full_like(p, n) for n, (p, _) in enumerate(indices)])
    pred_idx = torch.cat([p for p, _ in indices])
    relevance = torch.full(objectness_logits.shape[:2], NOT_RELEVANT, dtype=torch.long)
    relevance[batch_idx, pred_idx] = RELEVANT
    weight = torch.ones(2)
    weight[NOT_RELEVANT] = no_object_weight
    objectness = F.cross_entropy(objectness_logits.transpose(1, 2), relevance, weight=weight)
    picked = [lab[j] for (_, lab), (_, j) in zip(targets, indices)]
    matched_labels = torch.cat(picked).reshape(-1, len(ATTRIBUTES))
    parts = {"objectness": objectness}
    for name, logits in class_logits.items():
        classes = torch.zeros(logits.shape[:2], dtype=torch.long)
        classes[batch_idx, pred_idx] = matched_labels[:, LABEL_COLUMN[name]]
        weight = torch.ones(logits.shape[-1])
        weight[0] = no_object_weight
        parts[name] = F.cross_entropy(logits.transpose(1, 2), classes, weight=weight)
    num_boxes = max(sum(len(b) for b, _ in targets), 1)
    matched = boxes[batch_idx, pred_idx]
    truth = torch.cat([b[j] for (b, _), (_, j) in zip(targets, indices)])
    bbox = F.l1_loss(matched, truth, reduction="sum") / num_boxes
    giou = generalized_box_iou(box_convert(matched, "cxcywh", "xyxy"), box_convert(truth, "cxcywh", "xyxy"))
    parts["bbox"] = bbox
    parts["giou"] = (1 - giou.diagonal()).sum() / num_boxes
    weights = LOSS_WEIGHTS | dict.fromkeys(REGION_HEADS, region_weight)
    parts["total"] = sum(weights[name] * value for name, value in parts.items())
    return parts


def pretrain_detr(
    config: DetrEncoderConfig,
    hidden_size: int,
    pool: DetrPool,
    settings: DetrPretrainSettings,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    log_every: int = 200,
) -> tuple[DetrRegionEncoder, AttributeHeads]:
    """Train a random ``DetrRegionEncoder(config, hidden_size)`` and :class:`AttributeHeads` on ``pool``.

    Every parameter but ``region_proj`` trains, the ResNet stem and stage 1 included (GPV-1 keeps those
    frozen, so they must be learned here), and the ResNet's batch norm learns as in ImageNet training
    (:func:`thaw_batch_norm`) when ``settings.batch_norm``. Returns both modules in eval mode, every
    parameter's ``requires_grad`` back as ``DetrRegionEncoder`` sets it. ``log(step, values)`` receives
    the running mean of each loss every ``log_every`` steps (and the samples per second).
    """
    torch.manual_seed(settings.seed)
    encoder = DetrRegionEncoder(config, hidden_size)
    heads = AttributeHeads(int(encoder.detr.config.d_model), encoder.roi_channels, settings.region_weight > 0)
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    # Thawed first: the optimizer must hold the training norms' parameters.
    fold = thaw_batch_norm(encoder.detr.backbone) if settings.batch_norm else lambda: None
    params = [p for n, p in encoder.named_parameters() if not n.startswith(NOT_SAVED)]
    params += list(heads.parameters())
    for p in params:
        p.requires_grad_(True)
    for p in encoder.region_proj.parameters():
        p.requires_grad_(False)  # no loss reaches it; saves its backward
    optimizer = adamw(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = warmup_cosine(optimizer, warmup=settings.warmup, steps=settings.steps)
    matcher = HungarianMatcher()
    batches = batch_indices(len(pool), settings.batch_size, settings.seed)
    means = RunningMeans(log, log_every, settings.batch_size)
    encoder.train()
    heads.train()
    for step in range(settings.steps):
        part = pool.select(next(batches))
        out = encoder(part.pixel_values())
        parts = detection_losses(
            out.boxes, out.objectness_logits, heads(out), part.targets(), matcher,
            settings.no_object_weight, settings.region_weight,
        )  # fmt: skip
        optimizer_step(parts["total"], optimizer, scheduler, params, settings.clip)
        means.add(step, parts)
    fold()
    for n, p in encoder.named_parameters():
        p.requires_grad_(n not in frozen)
    encoder.eval()
    heads.eval()
    return encoder, heads


def detr_tensors(encoder: DetrRegionEncoder, heads: AttributeHeads) -> dict[str, torch.Tensor]:
    """The tensors of the weight file: the encoder's state (parameters and the frozen batch-norm buffers)
    without ``region_proj`` under ``encoder.``, the attribute heads under ``heads.``."""
    tensors = {
        shipped.ENCODER_PREFIX + k: v.detach().contiguous()
        for k, v in encoder.state_dict().items()
        if not k.startswith(NOT_SAVED)
    }
    return tensors | {
        shipped.HEADS_PREFIX + k: v.detach().contiguous() for k, v in heads.file_state().items()
    }


def load_detr_tensors(encoder: DetrRegionEncoder, path: str | Path) -> None:
    """Load a DETR weight file into ``encoder``: strictly, except that ``region_proj`` keeps its own (random)
    weights (what ``DetrEncoderConfig.checkpoint`` does at build time).

    Raises:
        shipped.WeightFileError: The file is missing, or a tensor is missing, unexpected or of another shape.
    """
    shipped.load_encoder(encoder, path, skip=NOT_SAVED)


def _greedy_match(iou: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(P, G)`` IoU of score-ordered predictions with ground truth to ``(P,)`` int64: the ground truth each
    prediction claims (the free one it overlaps most, at least ``threshold``), -1 for none (COCO/VOC rule)."""
    claimed = torch.full((iou.shape[0],), -1, dtype=torch.long)
    free = torch.ones(iou.shape[1], dtype=torch.bool)
    for p in range(iou.shape[0]):
        candidates = torch.where(free, iou[p], torch.full_like(iou[p], -1.0))
        if candidates.numel() and float(candidates.max()) >= threshold:
            g = int(candidates.argmax())
            claimed[p], free[g] = g, False
    return claimed


def detection_quality(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_logits: dict[str, torch.Tensor],
    targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    threshold: float = 0.5,
) -> dict[str, float]:
    """Class-agnostic detection quality of ``N`` images' predictions, all in ``[0, 1]``.

    Args:
        boxes: ``(N, R, 4)`` predicted normalized ``cxcywh``.
        scores: ``(N, R)`` objectness probabilities (the ranking).
        class_logits: Per head of :class:`AttributeHeads` (:data:`LABEL_COLUMN`), ``(N, R, C + 1)`` (class 0,
            no object, is never predicted).
        targets: ``N`` pairs of ``(k, 4)`` normalized ``cxcywh`` boxes and ``(k, 2)`` labels (columns in
            :data:`ATTRIBUTES` order).
        threshold: IoU at which a prediction finds a ground-truth box (each box is found once).

    Returns:
        ``ap50``: average precision of all predictions of the pool ranked by score (all-point
        interpolation); ``recall50``: share of ground-truth boxes found by the ``k`` best-scored
        predictions of their image; ``best_iou``: mean over ground-truth boxes of their largest IoU with
        those ``k``; ``<head>_acc`` per head (``shape_acc``, ``region_shape_acc``, ``region_color_acc``):
        share of the found boxes whose prediction names their attribute.
    """
    ranked: list[tuple[float, bool]] = []
    total = found = 0
    correct = dict.fromkeys(class_logits, 0)
    best = 0.0
    for b, (truth, labels) in enumerate(targets):
        order = scores[b].argsort(descending=True, stable=True)
        iou = box_iou(box_convert(boxes[b, order], "cxcywh", "xyxy"), box_convert(truth, "cxcywh", "xyxy"))
        claimed = _greedy_match(iou, threshold)
        ranked += [(float(s), bool(c >= 0)) for s, c in zip(scores[b, order], claimed)]
        k = len(truth)
        total += k
        if k == 0:
            continue
        # The top k on their own: a ground-truth box claimed by a better-ranked duplicate stays claimed.
        top = _greedy_match(iou[:k], threshold)
        hit = top >= 0
        found += int(hit.sum())
        for name, logits in class_logits.items():
            predicted = logits[b, order[:k], 1:].argmax(-1) + 1
            correct[name] += int((predicted[hit] == labels[top[hit], LABEL_COLUMN[name]]).sum())
        best += float(iou[:k].max(dim=0).values.sum())
    if not ranked or total == 0:
        return {"ap50": 0.0, "recall50": 0.0, "best_iou": 0.0} | {f"{n}_acc": 0.0 for n in class_logits}
    ranked.sort(key=lambda pair: -pair[0])
    hits = torch.tensor([hit for _, hit in ranked], dtype=torch.float64)
    tp = hits.cumsum(0)
    precision = tp / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    # Precision envelope (the best precision at any larger recall), summed at each recall step.
    envelope = precision.flip(0).cummax(0).values.flip(0)
    ap = float((envelope * hits).sum()) / total
    return {
        "ap50": ap,
        "recall50": found / total,
        "best_iou": best / total,
    } | {f"{name}_acc": correct[name] / max(found, 1) for name in class_logits}


@torch.no_grad()
def evaluate_detr(
    encoder: DetrRegionEncoder, heads: AttributeHeads, pool: DetrPool, batch_size: int = 256
) -> dict[str, float]:
    """:func:`detection_quality` of ``encoder`` (objectness ranking, boxes) and ``heads`` (attributes) on
    ``pool`` (a held-out one). Leaves both in eval mode."""
    encoder.eval()
    heads.eval()
    boxes, scores = [], []
    classes: dict[str, list[torch.Tensor]] = {}
    for lo in range(0, len(pool), batch_size):
        out = encoder(pool.select(torch.arange(lo, min(lo + batch_size, len(pool)))).pixel_values())
        boxes.append(out.boxes)
        scores.append(out.objectness_logits.softmax(-1)[..., RELEVANT])
        for name, logits in heads(out).items():
            classes.setdefault(name, []).append(logits)
    logits = {name: torch.cat(parts) for name, parts in classes.items()}
    return detection_quality(torch.cat(boxes), torch.cat(scores), logits, pool.targets())
