"""Input validation of every metric, and the scoring of non-finite predictions (never better than a miss)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gpv.metrics import (
    CIDErD,
    ClassificationAccuracy,
    CoSegScore,
    GRECScore,
    GRESScore,
    LocalizationAP,
    MaskIoU,
    NLVRScore,
    ReferringAccuracy,
    VQAAccuracy,
)
from lightning_gpv.metrics.grounding import grec_sample, query_ap

NAN = math.nan
INF = math.inf


def _b(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def _values(out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: v.item() for k, v in out.items()} if isinstance(out, dict) else {"value": out.item()}


def _not_better(bad: dict[str, float], *references: dict[str, float]) -> None:
    for ref in references:
        for key, value in bad.items():
            assert value <= ref[key] + 1e-12, (key, bad, ref)


# --- ReferringAccuracy --------------------------------------------------------------------------------------
def test_referring_accuracy_shapes_and_types() -> None:
    with pytest.raises(
        ValueError, match=r"ReferringAccuracy.update: pred_boxes must be \(N, 4\), got \(1, 8\)"
    ):
        ReferringAccuracy().update(torch.zeros(1, 8), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"target_boxes must be \(2, 4\) like pred_boxes, got \(1, 4\)"):
        ReferringAccuracy().update(torch.zeros(2, 4), torch.zeros(1, 4))
    with pytest.raises(TypeError, match="pred_boxes must be a numeric tensor, got NoneType"):
        ReferringAccuracy().update(None, torch.zeros(1, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"target_boxes must be finite"):
        ReferringAccuracy().update(_b([[0, 0, 10, 10]]), _b([[0, 0, NAN, 10]]))
    with pytest.raises(TypeError, match="ids must be a sequence"):
        ReferringAccuracy().update(_b([[0, 0, 10, 10]]), _b([[0, 0, 10, 10]]), ids="a")  # type: ignore[arg-type]


@pytest.mark.parametrize("iou_type", ["iou", "giou"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_referring_accuracy_non_finite_prediction_is_a_miss(iou_type: str, bad: float) -> None:
    target = _b([[0, 0, 10, 10]])
    scores = {}
    for name, pred in (
        ("bad", _b([[0, 0, bad, 10]])),
        ("nan_all", _b([[NAN, NAN, NAN, NAN]])),
        ("miss", _b([[50, 50, 60, 60]])),
    ):
        metric = ReferringAccuracy(iou_type=iou_type)  # type: ignore[arg-type]
        metric.update(pred, target)
        scores[name] = metric.compute().item()
    assert scores == {"bad": 0.0, "nan_all": 0.0, "miss": 0.0}


# --- GRECScore ----------------------------------------------------------------------------------------------
def _grec(pred: torch.Tensor, scores: list[float] | None, target: torch.Tensor) -> dict[str, float]:
    metric = GRECScore()
    metric.update([pred], [target], pred_scores=None if scores is None else [torch.tensor(scores)])
    return _values(metric.compute())


def test_grec_non_finite_prediction_is_a_miss() -> None:
    gt = _b([[0, 0, 10, 10]])
    empty = _grec(_b([]), [], gt)
    good, far = [0, 0, 10, 10], [50, 50, 60, 60]
    # (prediction, scores, the same with each non-finite entry replaced by a far box scored 0.9)
    for pred, scores, miss_pred in (
        ([[NAN, NAN, NAN, NAN]], [0.9], [far]),
        ([[0, 0, 10, NAN]], [0.9], [far]),
        ([good], [NAN], [far]),
        ([good], [INF], [far]),
        ([good, [NAN, 0, 10, 10]], [0.9, 0.9], [good, far]),
        ([good, good], [0.9, NAN], [good, far]),
    ):
        bad = _grec(_b(pred), scores, gt)
        assert bad["precision"] == 0.0
        _not_better(bad, _grec(_b(miss_pred), [0.9] * len(miss_pred), gt))
        if len(pred) == 1:
            _not_better(bad, empty)
        assert grec_sample(_b(pred), gt, torch.tensor(scores))[0] is False
    assert _grec(_b([[NAN, 0, 10, 10]]), None, gt)["precision"] == 0.0
    # No-target expression: a non-finite prediction is a (wrong) prediction, never "predicted empty".
    none = _b([])
    empty = _grec(none, [], none)
    miss = _grec(_b([[50, 50, 60, 60]]), [0.9], none)
    for pred, scores in ((_b([[NAN, NAN, NAN, NAN]]), [0.9]), (_b([[0, 0, 1, 1]]), [NAN])):
        bad = _grec(pred, scores, none)
        assert bad["precision"] == 0.0 and bad["N_acc"] == 0.0
        _not_better(bad, empty, miss)


def test_grec_inputs() -> None:
    gt = _b([[0, 0, 10, 10]])
    with pytest.raises(ValueError, match=r"GRECScore.update: target_boxes\[0\] must be finite"):
        GRECScore().update([gt], [_b([[0, 0, INF, 10]])])
    with pytest.raises(ValueError, match=r"pred_boxes\[0\] must be \(k, 4\), got \(1, 8\)"):
        GRECScore().update([torch.zeros(1, 8)], [gt])
    with pytest.raises(ValueError, match=r"pred_scores\[0\] must be \(1,\)"):
        GRECScore().update([gt], [gt], pred_scores=[torch.tensor([0.9, 0.8])])
    with pytest.raises(ValueError, match="target_boxes must have 1 entries"):
        GRECScore().update([gt], [gt, gt])
    with pytest.raises(TypeError, match="pred_boxes must be a sequence"):
        GRECScore().update(None, [gt])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grec_sample: target_boxes must be finite"):
        grec_sample(gt, _b([[NAN, 0, 1, 1]]))


# --- LocalizationAP -----------------------------------------------------------------------------------------
def _ap(boxes: torch.Tensor, scores: list[float], target: torch.Tensor) -> dict[str, float]:
    metric = LocalizationAP()
    metric.update([boxes], [torch.tensor(scores, dtype=torch.float64)], [target])
    return _values(metric.compute())


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_localization_ap_non_finite_is_a_miss(bad: float) -> None:
    gt = _b([[0, 0, 10, 10]])
    good, far = [0, 0, 10, 10], [50, 50, 60, 60]
    # A non-finite score ranks last and is a false positive (before: a NaN score ranked first, AP 1.0).
    bad_score = _ap(_b([good]), [bad], gt)
    assert bad_score["ap"] == 0.0
    _not_better(bad_score, _ap(_b([]), [], gt), _ap(_b([far]), [0.1], gt))
    bad_score = _ap(_b([far, good]), [0.9, bad], gt)
    _not_better(bad_score, _ap(_b([far, far]), [0.9, 0.1], gt), _ap(_b([far]), [0.9], gt))
    # A non-finite box overlaps nothing, at its own rank.
    bad_box = _ap(_b([[0, 0, bad, 10], good]), [0.9, 0.5], gt)
    assert bad_box == _ap(_b([far, good]), [0.9, 0.5], gt)
    assert _ap(_b([[bad, bad, bad, bad]]), [0.9], gt)["ap"] == 0.0
    for quirk in (True, False):
        metric = LocalizationAP(gpv1_box_quirk=quirk)
        metric.update([_b([[NAN, 0, 10, 10]])], [torch.tensor([0.9])], [gt], image_sizes=[(100, 100)])
        assert metric.compute()["ap"].item() == 0.0
    assert query_ap(torch.ones(2, 1), torch.tensor([NAN, 0.5])) == pytest.approx(1.0)


def test_localization_ap_inputs() -> None:
    gt = _b([[0, 0, 10, 10]])
    score = [torch.tensor([0.9])]
    with pytest.raises(ValueError, match=r"LocalizationAP.update: target_boxes\[0\] must be finite"):
        LocalizationAP().update([gt], score, [_b([[0, 0, 10, NAN]])])
    with pytest.raises(ValueError, match=r"pred_boxes\[0\] must be \(k, 4\), got \(4,\)"):
        LocalizationAP().update([torch.zeros(4)], score, [gt])
    with pytest.raises(
        ValueError, match=r"pred_scores\[0\] must be \(1,\) \(one score per box\), got \(2,\)"
    ):
        LocalizationAP().update([gt], [torch.tensor([0.9, 0.1])], [gt])
    with pytest.raises(ValueError, match="pred_scores must have 1 entries"):
        LocalizationAP().update([gt], score * 2, [gt])
    with pytest.raises(ValueError, match="image_sizes must have 1 entries"):
        LocalizationAP(gpv1_box_quirk=True).update([gt], score, [gt], image_sizes=[(10, 10), (10, 10)])
    with pytest.raises(TypeError, match=r"pred_scores\[0\] must be a numeric tensor, got NoneType"):
        LocalizationAP().update([gt], [None], [gt])  # type: ignore[list-item]


# --- Text metrics -------------------------------------------------------------------------------------------
def test_vqa_inputs() -> None:
    with pytest.raises(TypeError, match=r"VQAAccuracy.update: answers\[0\] must be a sequence of reference"):
        VQAAccuracy().update(["yes"], ["yes"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"answers\[0\] must be a sequence"):
        VQAAccuracy(variant="gpv1").update(["yes"], ["yes"])  # type: ignore[list-item]
    with pytest.raises(
        TypeError, match="predictions must be a sequence with one entry per sample, got the str"
    ):
        VQAAccuracy().update("yes", [["yes"] * 10])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"predictions\[0\] must be a str, got NoneType"):
        VQAAccuracy().update([None], [["yes"] * 10])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"answers\[0\]\[1\] must be a str"):
        VQAAccuracy().update(["yes"], [["yes", 3]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"answers\[0\] must hold at least one"):
        VQAAccuracy().update(["yes"], [[]])
    with pytest.raises(ValueError, match="answers must have 1 entries .like predictions., got 2"):
        VQAAccuracy().update(["yes"], [["yes"], ["no"]])
    with pytest.raises(TypeError, match="answer_types must be a sequence"):
        VQAAccuracy().update(["yes"], [["yes"]], answer_types="yes/no")  # type: ignore[arg-type]
    metric = VQAAccuracy()
    metric.update(("yes",), (("yes",) * 10,))  # tuples are sequences of strings
    assert metric.compute().item() == 1.0


def test_classification_and_nlvr_inputs() -> None:
    with pytest.raises(TypeError, match="ClassificationAccuracy.update: predictions must be a sequence"):
        ClassificationAccuracy().update(None, ["dog"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"targets\[0\] must be a str, got NoneType"):
        ClassificationAccuracy().update(["dog"], [None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="targets must be a sequence with one entry per sample, got the str"):
        ClassificationAccuracy().update(["dog"], "dog")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets must have 1 entries"):
        ClassificationAccuracy().update(["dog"], ["dog", "cat"])
    with pytest.raises(TypeError, match=r"NLVRScore.update: predictions\[0\] must be a str or bool"):
        NLVRScore().update([None], ["True"], ["dev-1-0-0"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="identifiers must be a sequence"):
        NLVRScore().update(["True"], ["True"], "dev-1-0-0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels must have 1 entries"):
        NLVRScore().update(["True"], ["True", "False"], ["dev-1-0-0"])


def test_cider_inputs() -> None:
    with pytest.raises(TypeError, match=r"CIDErD.update: references\[0\] must be a sequence of reference"):
        CIDErD(tokenizer=None).update(["a dog"], ["a dog"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"predictions\[0\] must be a str"):
        CIDErD(tokenizer=None).update([None], [["a dog"]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="references must have 1 entries"):
        CIDErD(tokenizer=None).update(["a dog"], [["a dog"], ["a cat"]])


# --- Mask metrics -------------------------------------------------------------------------------------------
def _square(size: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[x0:x1, x0:x1] = True
    return mask


_NAN_POLYGON = [[NAN, 0.0, 5.0, 0.0, 5.0, 5.0, 0.0, 5.0]]


def test_mask_metrics_non_finite_prediction_is_a_miss() -> None:
    for target in (_square(10, 0, 5), torch.zeros(10, 10, dtype=torch.bool)):
        empty, far = None, _square(10, 7, 10)
        for cls in (MaskIoU, GRESScore):
            scores = {}
            for name, pred in (("bad", _NAN_POLYGON), ("empty", empty), ("miss", far)):
                metric = cls()
                metric.update([pred], [target])
                scores[name] = _values(metric.compute())
            _not_better(scores["bad"], scores["empty"])
            if cls is GRESScore and not bool(target.any()):
                _not_better(scores["bad"], scores["miss"])
                assert scores["bad"]["gIoU"] == 0.0
        scores = {}
        for name, pred in (("bad", _NAN_POLYGON), ("empty", empty), ("miss", far)):
            metric = CoSegScore()
            metric.update([pred], [target], ["g"])
            scores[name] = _values(metric.compute())
        _not_better(scores["bad"], scores["empty"], scores["miss"])
        assert scores["bad"]["precision"] == 0.0


def test_mask_metrics_inputs() -> None:
    gt = _square(10, 0, 5)
    with pytest.raises(ValueError, match=r"MaskIoU.update: target_masks\[0\] has a non-finite polygon"):
        MaskIoU(canvas_size=(10, 10)).update([gt], [_NAN_POLYGON])
    with pytest.raises(TypeError, match="GRESScore.update: pred_masks must be a sequence"):
        GRESScore().update(None, [gt])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_masks must have 1 entries"):
        MaskIoU().update([gt], [gt, gt])
    with pytest.raises(TypeError, match=r"pred_masks\[0\] must be a bool H x W mask"):
        MaskIoU().update(["mask"], [gt])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"pred_masks\[0\].*bool or uint8"):
        MaskIoU().update([gt.float()], [gt])
    with pytest.raises(ValueError, match="groups must have 1 entries"):
        CoSegScore().update([gt], [gt], ["a", "b"])
    with pytest.raises(ValueError, match=r"CoSegScore.update: target_masks\[0\] must be a mask"):
        CoSegScore(canvas_size=(10, 10)).update([gt], [None], ["a"])
