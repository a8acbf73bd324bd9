"""``benchmarks/answer_breakdown.py``: GRES/GREC by number of targets, RES mask bias, NLVR2 answers."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from lightning_gpv.geometry import Mask
from lightning_gpv.tasks import Target, Task, TaskSample
from lightning_gpv.tasks.samples import Prediction

IMAGE = np.zeros((40, 60, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def breakdown(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("answer_breakdown")


def _square(top: int, left: int, side: int = 10) -> Mask:
    mask = np.zeros((40, 60), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return Mask.from_array(mask)


def test_gres_answers_are_scored_by_their_number_of_targets(breakdown: ModuleType) -> None:
    one, other = _square(5, 5), _square(20, 40)
    samples = [
        TaskSample(Task.GRES, [IMAGE], Target(masks=[one]), expression="a", sample_id="a"),
        TaskSample(Task.GRES, [IMAGE], Target(masks=[one, other]), expression="b", sample_id="b"),
        TaskSample(Task.GRES, [IMAGE], Target(masks=[one, other]), expression="c", sample_id="c"),
        TaskSample(Task.GRES, [IMAGE], Target(), expression="d", sample_id="d"),
    ]
    predictions = [
        Prediction(Task.GRES, masks=[_square(5, 5)]),  # exact
        Prediction(Task.GRES, masks=[one]),  # one of two equal squares: IoU 0.5
        Prediction(Task.GRES, masks=[one, other]),  # both
        Prediction(Task.GRES, masks=[one]),  # a mask for a no-target expression
    ]
    figures = breakdown.by_targets(samples, predictions)
    assert figures[1] == {"samples": 1.0, "count right": 1.0, "none written": 0.0, "mean IoU": 1.0,
                          "IoU >= 0.7": 1.0, "IoU in [0.6, 0.7)": 0.0}  # fmt: skip
    assert figures[2]["count right"] == 0.5 and figures[2]["mean IoU"] == pytest.approx(0.75)
    assert figures[2]["IoU >= 0.7"] == 0.5
    assert figures[0] == {"samples": 1.0, "count right": 0.0, "none written": 0.0}


def test_grec_counts_boxes(breakdown: ModuleType) -> None:
    two = Target(boxes=[[0, 0, 5, 5], [9, 9, 20, 20]])
    samples = [TaskSample(Task.GREC, [IMAGE], two, expression="e")] * 2
    predictions = [Prediction(Task.GREC, boxes=[[0, 0, 5, 5]]), Prediction(Task.GREC)]  # one box; "no target"
    figures = breakdown.by_targets(samples, predictions)
    assert figures == {2: {"samples": 2.0, "count right": 0.0, "none written": 0.5}}


def test_a_shifted_mask_shows_as_a_centroid_offset(breakdown: ModuleType) -> None:
    samples = [TaskSample(Task.RES, [IMAGE], Target(masks=[_square(10, 10)]), expression="f")] * 2
    predictions = [Prediction(Task.RES, masks=[_square(7, 14)]), Prediction(Task.RES)]  # 4 right, 3 up
    figures = breakdown.mask_bias(samples, predictions)
    assert figures["masks"] == 1.0  # the answer without a mask is left out
    assert figures["centroid offset x (px)"] == pytest.approx(4.0)
    assert figures["centroid offset y (px)"] == pytest.approx(-3.0)
    assert figures["median centroid distance (px)"] == pytest.approx(5.0)
    assert figures["median area ratio (predicted / true)"] == pytest.approx(1.0)
    assert figures["mean IoU, as predicted"] == pytest.approx(42 / 158)
    assert figures["mean IoU, shrunk 5 px"] == 0.0


def test_nlvr2_consistency_needs_every_pair_of_a_statement(breakdown: ModuleType) -> None:
    pairs = [IMAGE, IMAGE]
    samples = [
        TaskSample(Task.NLVR2, pairs, Target(text=label), question="q", metadata={"consistency_key": key})
        for key, label in (("s1", "True"), ("s1", "False"), ("s2", "True"), ("s2", "False"))
    ]
    answers = ["True", "False", "True", "True"]
    figures = breakdown.nlvr2_answers(samples, [Prediction(Task.NLVR2, text=a) for a in answers])
    assert figures["accuracy"] == 0.75 and figures["consistency"] == 0.5
    assert figures["consistency answering at random"] == 0.25
    assert figures["statements answered alike for all pairs"] == 0.5  # s2: "True" twice
    assert figures["statements answered alike, answering at random"] == 0.5
    assert figures["label False, answer 'True'"] == 1.0 and figures["label True, answer 'True'"] == 2.0
