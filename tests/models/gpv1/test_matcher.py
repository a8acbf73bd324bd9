from __future__ import annotations

import itertools

import torch

from lightning_gpv.geometry.boxes import box_convert, generalized_box_iou
from lightning_gpv.models.gpv1.matcher import HungarianMatcher

BOXES = torch.tensor([[[0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])  # cxcywh
CONFIDENT = torch.zeros(1, 3, 2)


def test_matches_boxes_to_their_nearest_target() -> None:
    targets = [torch.tensor([[0.71, 0.69, 0.2, 0.2], [0.19, 0.2, 0.21, 0.2]])]
    ((pred, tgt),) = HungarianMatcher()(CONFIDENT, BOXES, targets)
    assert pred.tolist() == [0, 1] and tgt.tolist() == [1, 0]


def test_one_to_one_even_when_one_prediction_is_best_for_all() -> None:
    targets = [torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.21, 0.2, 0.2, 0.2]])]
    ((pred, tgt),) = HungarianMatcher()(CONFIDENT, BOXES, targets)
    assert len(set(pred.tolist())) == 2 and sorted(tgt.tolist()) == [0, 1]
    assert 0 in pred.tolist()


def test_class_cost_breaks_ties() -> None:
    two = torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]]])
    logits = torch.tensor([[[-3.0, 3.0], [3.0, -3.0]]])  # the second is confidently relevant
    ((pred, _),) = HungarianMatcher()(logits, two, [torch.tensor([[0.5, 0.5, 0.4, 0.4]])])
    assert pred.tolist() == [1]
    ((pred, _),) = HungarianMatcher(cost_class=0.0)(logits, two, [torch.tensor([[0.5, 0.5, 0.4, 0.4]])])
    assert pred.tolist() in ([0], [1])


def test_global_optimum_not_greedy() -> None:
    # L1 costs (only cx differs): A-X 0.05, A-Y 0.25, B-X 0.10, B-Y 0.40. Greedy takes A-X then B-Y
    # (0.45); the optimum is A-Y + B-X (0.35).
    preds = torch.tensor([[[0.25, 0.5, 0.2, 0.2], [0.10, 0.5, 0.2, 0.2]]])
    targets = [torch.tensor([[0.20, 0.5, 0.2, 0.2], [0.50, 0.5, 0.2, 0.2]])]
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)
    ((pred, tgt),) = matcher(torch.zeros(1, 2, 2), preds, targets)
    assert dict(zip(pred.tolist(), tgt.tolist())) == {0: 1, 1: 0}


def test_assignment_minimizes_the_documented_cost() -> None:
    torch.manual_seed(0)
    logits, boxes = torch.randn(1, 4, 2), torch.rand(1, 4, 4) * 0.4 + 0.3
    targets = [torch.rand(3, 4) * 0.4 + 0.3]
    ((pred, tgt),) = HungarianMatcher()(logits, boxes, targets)
    prob = logits.softmax(-1)[0, :, 0]
    xyxy = lambda b: box_convert(b, "cxcywh", "xyxy")  # noqa: E731
    giou = generalized_box_iou(xyxy(boxes[0]), xyxy(targets[0]))
    cost = 5 * (boxes[0][:, None] - targets[0][None]).abs().sum(-1) - prob[:, None] - 2 * giou
    best = min(sum(cost[p, t] for t, p in enumerate(perm)) for perm in itertools.permutations(range(4), 3))
    assert torch.isclose(cost[pred, tgt].sum(), torch.as_tensor(best))


def test_empty_targets_and_batches() -> None:
    boxes = BOXES.repeat(2, 1, 1)
    out = HungarianMatcher()(
        torch.zeros(2, 3, 2), boxes, [torch.zeros(0, 4), torch.tensor([[0.5, 0.5, 0.9, 0.9]])]
    )
    assert out[0][0].numel() == 0 and out[1][0].tolist() == [2]


def test_more_targets_than_predictions() -> None:
    targets = [torch.rand(5, 4) * 0.5 + 0.25]
    ((pred, tgt),) = HungarianMatcher()(CONFIDENT, BOXES, targets)
    assert len(pred) == 3 and len(set(tgt.tolist())) == 3
