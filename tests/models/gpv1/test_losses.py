from __future__ import annotations

import math

import torch

from lightning_gpv.models.gpv1.losses import GPV1Criterion, GPV1LossConfig, localization_losses, text_nll
from lightning_gpv.models.gpv1.matcher import HungarianMatcher
from lightning_gpv.models.gpv1.vocab import CLS_ID, PAD_ID, STOP_ID


def test_text_nll_sums_tokens_and_ignores_padding() -> None:
    logits = torch.zeros(2, 4, 6)  # uniform: each predicted token costs log 6
    ids = torch.tensor([[CLS_ID, 4, 5, STOP_ID], [CLS_ID, 4, STOP_ID, PAD_ID]])
    nll = text_nll(logits, ids)
    torch.testing.assert_close(nll, torch.tensor([3 * math.log(6), 2 * math.log(6)]))
    torch.testing.assert_close(text_nll(logits, ids, ignore_padding=False)[1], torch.tensor(3 * math.log(6)))


def test_localization_losses_vanish_for_perfect_predictions() -> None:
    target = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])
    boxes = torch.cat([target.flip(0), torch.tensor([[0.5, 0.5, 0.1, 0.1]])])[None]
    logits = torch.tensor([[[20.0, -20.0], [20.0, -20.0], [-20.0, 20.0]]])
    out = localization_losses(logits, boxes, [target], HungarianMatcher())
    for v in out.values():
        assert float(v) < 1e-5


def test_localization_loss_values_by_hand() -> None:
    target = [torch.tensor([[0.5, 0.5, 0.2, 0.2]])]
    boxes = torch.tensor([[[0.6, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    logits = torch.zeros(1, 2, 2)
    out = localization_losses(logits, boxes, target, HungarianMatcher(), no_object_weight=0.1)
    torch.testing.assert_close(out["loss_bbox"], torch.tensor(0.1))
    # matched box: IoU = 0.1*0.2 overlap... [0.4,0.6]x[0.4,0.6] vs [0.5,0.7]x[0.4,0.6]: inter .02, union .06
    torch.testing.assert_close(out["loss_giou"], torch.tensor(1 - (0.02 / 0.06 - 0.0)), atol=1e-5, rtol=0)
    # uniform logits: CE is log 2 for both queries whatever their weights
    torch.testing.assert_close(out["loss_ce"], torch.tensor(math.log(2)))


def test_criterion_mixes_tasks_with_weights() -> None:
    crit = GPV1Criterion(GPV1LossConfig())
    logits = torch.zeros(3, 3, 6)
    ids = torch.tensor([[CLS_ID, 4, STOP_ID], [CLS_ID, 5, STOP_ID], [PAD_ID, PAD_ID, PAD_ID]])
    out = crit(
        tasks=["vqa", "captioning", "localization"],
        answer_logits=logits,
        answer_ids=ids,
        has_text=torch.tensor([True, True, False]),
        relevance_logits=torch.zeros(3, 2, 2),
        boxes=torch.full((3, 2, 4), 0.5),
        target_boxes=[torch.zeros(0, 4), torch.zeros(0, 4), torch.tensor([[0.5, 0.5, 0.5, 0.5]])],
        has_boxes=torch.tensor([False, False, True]),
    )
    two = 2 * math.log(6)
    torch.testing.assert_close(out["loss_text/vqa"], torch.tensor(two))
    torch.testing.assert_close(out["loss_text/captioning"], torch.tensor(two))
    expected = two + 0.05 * two + out["loss_ce"] + 5 * out["loss_bbox"] + 2 * out["loss_giou"]
    torch.testing.assert_close(out["loss"], expected)
    assert float(out["loss_bbox"]) < 1e-6


def test_criterion_without_text_or_boxes() -> None:
    crit = GPV1Criterion()
    out = crit(
        tasks=["vqa"],
        answer_logits=None,
        answer_ids=None,
        has_text=torch.tensor([False]),
        relevance_logits=torch.zeros(1, 2, 2, requires_grad=True),
        boxes=torch.zeros(1, 2, 4),
        target_boxes=[torch.zeros(0, 4)],
        has_boxes=torch.tensor([False]),
    )
    assert set(out) == {"loss"} and float(out["loss"]) == 0.0
