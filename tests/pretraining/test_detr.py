"""The DETR pretraining pool, objective, weight file and quality figures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

from lightning_gpv.geometry.boxes import box_convert
from lightning_gpv.models import shipped
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder
from lightning_gpv.models.gpv1.losses import localization_losses
from lightning_gpv.models.gpv1.matcher import HungarianMatcher
from lightning_gpv.pretraining.detr import (
    LABEL_COLUMN,
    AttributeHeads,
    DetrPool,
    DetrPretrainSettings,
    detection_losses,
    detection_quality,
    detr_tensors,
    evaluate_detr,
    image_processor,
    load_detr_tensors,
    make_detr_pool,
    pretrain_detr,
    scene_detections,
    thaw_batch_norm,
)
from lightning_gpv.pretraining.targets import COLOR_NAMES
from lightning_gpv.shapesworld.render import render_scene
from lightning_gpv.shapesworld.sample import SPARSE_STYLE, sample_scene
from lightning_gpv.shapesworld.scene import SHAPES, STREAMS, seed_rng
from lightning_gpv.tasks import Target, Task, TaskSample

STEM = "detr.backbone.model.embedder.embedder.convolution.weight"
"""The ResNet stem's convolution: frozen in GPV-1, so only pretraining can learn it."""


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread."""


def test_scene_detections_boxes_labels_and_pixels_of_a_known_scene() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 40:] = 200
    left = np.zeros((40, 80), dtype=np.uint8)
    left[0:20, 0:40] = 1  # the top-left quarter
    corner = np.zeros((40, 80), dtype=np.uint8)
    corner[30:40, 60:80] = 1  # the bottom-right eighth
    processor = image_processor(32)
    pixels, boxes, labels = scene_detections(processor, image, [left, corner], [(3, 1), (5, 2)])
    torch.testing.assert_close(boxes, torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.875, 0.875, 0.25, 0.25]]))
    assert labels.tolist() == [[3, 1], [5, 2]] and labels.dtype == torch.long
    assert pixels.shape == (32, 32, 3) and pixels.dtype == torch.uint8
    assert pixels[:, :15].max() == 0 and pixels[:, 17:].min() == 200  # resized, not cropped


def test_pool_holds_every_visible_box_and_the_processors_exact_pixels() -> None:
    pool = make_detr_pool(4, seed=3, styles=[SPARSE_STYLE], image_size=(48, 40), start=2)
    assert pool.images.shape == (4, 48, 40, 3) and pool.images.dtype == torch.uint8
    processor = image_processor((48, 40))
    for row, (boxes, labels) in enumerate(pool.targets()):
        scene = sample_scene(seed_rng(3, STREAMS["pretraining"], row + 2), style=SPARSE_STYLE)
        image, _, visible = render_scene(scene)
        height, width = image.shape[:2]
        expected = []
        for mask in visible:
            ys, xs = np.nonzero(mask)
            expected.append(
                [xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]
            )
        xyxy = torch.tensor(expected, dtype=torch.float32)
        torch.testing.assert_close(boxes, box_convert(xyxy, "xyxy", "cxcywh"))
        assert labels.tolist() == [
            [SHAPES.index(obj.shape) + 1, COLOR_NAMES.index(obj.color) + 1] for obj in scene.objects
        ]
        sample = TaskSample(Task.LOCALIZATION, [image], Target(), category="object")
        reference = processor.encode(sample, train=False).pixel_values
        assert torch.equal(pool.select(torch.tensor([row])).pixel_values()[0], reference)
    objects = pool.labels[..., 0] > 0
    assert (pool.labels[objects][:, 0] <= len(SHAPES)).all()
    assert (pool.labels[objects][:, 1] <= len(COLOR_NAMES)).all() and (pool.labels[objects] > 0).all()
    assert (pool.boxes[~objects] == 0).all() and (pool.labels[~objects] == 0).all()


def test_detection_losses_keep_gpv1s_localization_terms() -> None:
    torch.manual_seed(0)
    boxes = torch.rand(3, 6, 4) * 0.5 + 0.25
    logits = torch.randn(3, 6, 2)
    sizes = {"shape": len(SHAPES), "region_shape": len(SHAPES), "region_color": len(COLOR_NAMES)}
    class_logits = {name: torch.randn(3, 6, n + 1) for name, n in sizes.items()}
    truth = [torch.rand(k, 4) * 0.4 + 0.3 for k in (2, 0, 3)]
    values = (len(SHAPES), len(COLOR_NAMES))  # the label columns
    labels = [torch.stack([torch.randint(1, n + 1, (len(b),)) for n in values], dim=1) for b in truth]
    targets = list(zip(truth, labels))
    ours = detection_losses(boxes, logits, class_logits, targets, HungarianMatcher(), region_weight=0.5)
    gpv1 = localization_losses(logits, boxes, truth, HungarianMatcher())
    for name, reference in (("objectness", "loss_ce"), ("bbox", "loss_bbox"), ("giou", "loss_giou")):
        torch.testing.assert_close(ours[name], gpv1[reference])
    regions = ours["region_shape"] + ours["region_color"]
    total = ours["objectness"] + ours["shape"] + 0.5 * regions + 5 * ours["bbox"] + 2 * ours["giou"]
    torch.testing.assert_close(ours["total"], total)
    assert min(ours[name] for name in sizes) > 0

    # Queries 0 and 1 sit on image 0's two objects: logits naming their attributes (no object elsewhere)
    # cost ~0; each attribute's term reads its own label column.
    boxes, logits, targets = (
        boxes[:1].clone(),
        torch.tensor([[5.0, -5.0]] * 2 + [[-5.0, 5.0]] * 4)[None],
        [(truth[0], labels[0])],
    )
    boxes[0, :2] = truth[0]
    named = {}
    for name, n in sizes.items():
        named[name] = torch.full((1, 6, n + 1), -20.0)
        named[name][0, 2:, 0] = 20.0
        named[name][0, [0, 1], labels[0][:, LABEL_COLUMN[name]]] = 20.0
    right = detection_losses(boxes, logits, named, targets, HungarianMatcher())
    assert all(right[name] < 1e-6 for name in sizes)
    colours = named["region_color"].roll(1, dims=-1)
    wrong = detection_losses(boxes, logits, named | {"region_color": colours}, targets, HungarianMatcher())
    assert wrong["shape"] < 1e-6 and wrong["region_shape"] < 1e-6 and wrong["region_color"] > 10


def test_thawed_batch_norm_learns_then_folds_into_the_frozen_one() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), DetrFrozenBatchNorm2d(4))
    frozen = model[1]
    images = torch.randn(8, 3, 6, 6) * 3 + 1
    fold = thaw_batch_norm(model)
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm2d)
    model.train()
    model(images)  # running statistics move towards the batch's
    with torch.no_grad():
        norm.weight.fill_(2.0)
    model.eval()
    expected = model(images)
    fold()
    assert model[1] is frozen
    assert torch.equal(frozen.running_mean, norm.running_mean) and (frozen.weight == 2.0).all()
    torch.testing.assert_close(model(images), expected)


@pytest.fixture(scope="module")
def trained() -> tuple[DetrRegionEncoder, AttributeHeads, DetrPool, DetrPretrainSettings]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = make_detr_pool(16, seed=0, styles=[SPARSE_STYLE], image_size=64)
    settings = DetrPretrainSettings(steps=3, batch_size=8, warmup=1, region_weight=0.5)
    config = GPV1Config.tiny()
    encoder, heads = pretrain_detr(config.visual, config.hidden_size, pool, settings)
    torch.set_num_threads(threads)
    return encoder, heads, pool, settings


def test_pretrain_trains_the_whole_detr_and_writes_tensors_that_load_strictly(
    trained: tuple[DetrRegionEncoder, AttributeHeads, DetrPool, DetrPretrainSettings], tmp_path: Path
) -> None:
    encoder, heads, _, settings = trained
    config = GPV1Config.tiny()
    torch.manual_seed(settings.seed)
    initial = DetrRegionEncoder(config.visual, config.hidden_size).state_dict()
    state = encoder.state_dict()
    assert not torch.equal(state[STEM], initial[STEM])  # the stem GPV-1 keeps frozen was trained
    assert not torch.equal(state["objectness.weight"], initial["objectness.weight"])
    assert torch.equal(state["region_proj.weight"], initial["region_proj.weight"])  # GPV-1 trains it
    assert not dict(encoder.named_parameters())[STEM].requires_grad  # GPV-1's freezing is back
    assert isinstance(encoder.detr.backbone.model.embedder.embedder.normalization, DetrFrozenBatchNorm2d)
    statistics = STEM.replace("convolution.weight", "normalization.running_mean")
    assert not torch.equal(state[statistics], initial[statistics])  # learned statistics folded in

    path = tmp_path / "detr.safetensors"
    save_file(detr_tensors(encoder, heads), str(path))
    assert path.stat().st_size < 2_000_000
    weights = shipped.read_part(path, shipped.ENCODER_PREFIX)
    assert not any(k.startswith("region_proj.") for k in weights)
    heads_file = set(shipped.read_part(path, shipped.HEADS_PREFIX))
    assert heads_file == {f"{name}.{part}" for name in LABEL_COLUMN for part in ("weight", "bias")}
    # Heads read back from the file as they were; without region heads (region_weight 0) the file holds
    # DETR's shape head alone as a bare linear layer, the shipped file's layout.
    again = AttributeHeads.from_file_state(32, 64, shipped.read_part(path, shipped.HEADS_PREFIX))
    assert all(torch.equal(v, heads.state_dict()[k]) for k, v in again.state_dict().items())
    bare = AttributeHeads(32, 64)
    assert bare.file_state().keys() == {"weight", "bias"}
    assert AttributeHeads.from_file_state(32, 64, bare.file_state()).region_shape is None

    fresh = DetrRegionEncoder(config.visual, config.hidden_size)
    result = fresh.load_state_dict(weights, strict=False)
    assert sorted(result.missing_keys) == ["region_proj.bias", "region_proj.weight"]
    assert not result.unexpected_keys
    other = DetrRegionEncoder(config.visual, config.hidden_size)
    load_detr_tensors(other, path)
    for name, value in other.state_dict().items():
        if not name.startswith("region_proj."):
            assert torch.equal(value, state[name]), name
    # The config names the file: the build loads it the same way, region_proj keeps its own init.
    built = DetrRegionEncoder(replace(config.visual, checkpoint=str(path)), config.hidden_size)
    fresh_parts = ("region_proj.", "objectness.")  # GPV-1 trains its objectness head afresh, as the paper
    kept = [k for k in built.state_dict() if k in weights and not k.startswith(fresh_parts)]
    assert kept and all(torch.equal(built.state_dict()[k], other.state_dict()[k]) for k in kept)
    assert not torch.equal(built.state_dict()["objectness.weight"], other.state_dict()["objectness.weight"])
    broken = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in detr_tensors(encoder, heads).items() if k != shipped.ENCODER_PREFIX + STEM},
              str(broken))  # fmt: skip
    with pytest.raises(shipped.WeightFileError, match="broken.safetensors.*missing"):
        load_detr_tensors(other, broken)


def test_evaluate_detr_returns_figures_in_the_unit_interval(
    trained: tuple[DetrRegionEncoder, AttributeHeads, DetrPool, DetrPretrainSettings],
) -> None:
    encoder, heads, pool, _ = trained
    quality = evaluate_detr(encoder, heads, pool, batch_size=5)
    assert set(quality) == {
        "ap50",
        "recall50",
        "best_iou",
        "shape_acc",
        "region_shape_acc",
        "region_color_acc",
    }
    assert all(0.0 <= v <= 1.0 for v in quality.values()), quality
    assert quality["best_iou"] > 0  # a random DETR's boxes overlap some objects


def _predictions(pool: DetrPool, queries: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Ground truth in the first queries (score 0.9, right attributes), small boxes in a corner after it."""
    n = len(pool)
    boxes = torch.tensor([0.05, 0.05, 0.02, 0.02]).repeat(n, queries, 1)
    scores = torch.full((n, queries), 0.1)
    classes = {
        "shape": torch.zeros(n, queries, len(SHAPES) + 1),
        "region_shape": torch.zeros(n, queries, len(SHAPES) + 1),
        "region_color": torch.zeros(n, queries, len(COLOR_NAMES) + 1),
    }
    for b, (truth, labels) in enumerate(pool.targets()):
        boxes[b, : len(truth)] = truth
        scores[b, : len(truth)] = 0.9
        for name, logits in classes.items():
            logits[b, torch.arange(len(labels)), labels[:, LABEL_COLUMN[name]]] = 5.0
    return boxes, scores, classes


def test_a_perfect_predictor_scores_one_and_worse_ones_less() -> None:
    pool = make_detr_pool(6, seed=1, styles=[SPARSE_STYLE], image_size=32)
    boxes, scores, classes = _predictions(pool, queries=7)
    perfect = detection_quality(boxes, scores, classes, pool.targets())
    ones = dict.fromkeys(
        ("ap50", "recall50", "best_iou", "shape_acc", "region_shape_acc", "region_color_acc"), 1.0
    )
    assert perfect == pytest.approx(ones)

    # Right boxes ranked below the corner boxes: the top k miss them all, the ranking costs precision.
    reversed_rank = detection_quality(boxes, 1 - scores, classes, pool.targets())
    assert reversed_rank["recall50"] == 0.0 and reversed_rank["ap50"] < 0.6
    wrong_shapes = classes | {"shape": classes["shape"].roll(1, dims=-1)}
    wrong = detection_quality(boxes, scores, wrong_shapes, pool.targets())
    assert wrong["shape_acc"] == 0.0 and wrong["region_shape_acc"] == 1.0 and wrong["recall50"] == 1.0
    assert wrong["region_color_acc"] == 1.0
    # The same box twice finds one object once.
    doubled = boxes.clone()
    doubled[:, 1] = doubled[:, 0]
    several = [b for b, (t, _) in enumerate(pool.targets()) if len(t) > 1]
    assert several, "the pool should hold a scene with several objects"
    chosen = {name: logits[several] for name, logits in classes.items()}
    targets = [pool.targets()[b] for b in several]
    duplicate = detection_quality(doubled[several], scores[several], chosen, targets)
    assert duplicate["recall50"] < 1.0
