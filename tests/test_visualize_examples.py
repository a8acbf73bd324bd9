"""Texts the demo page shows beside the pictures of two models' predictions."""

from __future__ import annotations

import numpy as np

from lightning_gpv.tasks import Prediction, Target, Task, TaskSample
from lightning_gpv.visualize.examples import MAX_TEXT, prediction_text, truth_text

IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)


def test_truth_text_prefers_answers_then_boxes_then_masks() -> None:
    vqa = TaskSample(task=Task.VQA, images=[IMAGE], question="q?", target=Target(text="red", answers=["red"]))
    assert truth_text(vqa) == "red"
    boxes = Target(boxes=np.asarray([[1, 2, 5.4, 6]], dtype=np.float32))
    rec = TaskSample(task=Task.REC, images=[IMAGE], expression="the circle", target=boxes)
    assert truth_text(rec) == "box [1, 2, 5, 6]"
    none = TaskSample(task=Task.GREC, images=[IMAGE], expression="the star", target=Target())
    assert truth_text(none) == "no target"


def test_prediction_text_is_cut_and_falls_back_to_the_best_box() -> None:
    assert prediction_text(Prediction(task=Task.CAPTIONING, text="x" * 1000)) == "x" * MAX_TEXT
    boxes = np.asarray([[0, 0, 2, 2], [1, 1, 7, 7]], dtype=np.float32)
    ranked = Prediction(task=Task.LOCALIZATION, boxes=boxes, scores=np.asarray([0.1, 0.9], dtype=np.float32))
    assert prediction_text(ranked) == "best box [1, 1, 7, 7]"
    assert prediction_text(Prediction(task=Task.LOCALIZATION)) == ""
