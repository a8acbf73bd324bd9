"""Two models on the same test samples: pictures of both predictions and the texts a page shows beside them.

:func:`compare_predictions` reads the first samples of each task from a data module's test loaders, runs the
trained and the untrained system on them (``predict_step`` on the system's own processor batches, on the
CPU), draws each prediction with the ground truth (:func:`~lightning_gpv.visualize.draw_prediction_for`)
and returns JSON-ready rows for :func:`lightning_gpv.visualize.page.write_page`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_gpv.tasks.samples import Prediction, TaskSample
from lightning_gpv.visualize.drawing import save_image
from lightning_gpv.visualize.samples import draw_prediction_for, sample_text, target_text

MAX_TEXT = 400
"""Longest answer kept in a row (a 32-point mask answer is about 130 tokens)."""


def truth_text(sample: TaskSample) -> str:
    """The ground truth as a line of text: the answer(s), else the target boxes (xyxy pixels), else the
    number of target masks (drawn in green on the pictures), else "no target"."""
    text = target_text(sample)
    if text:
        return text
    target = sample.target
    if len(target.boxes):
        return "; ".join("box [" + ", ".join(f"{v:.0f}" for v in box) + "]" for box in target.boxes)
    if target.masks:
        return f"{len(target.masks)} mask(s), drawn in green"
    if target.selected_images:
        return f"images {target.selected_images}"
    return "no target"


def prediction_text(prediction: Prediction) -> str:
    """What the model wrote (cut to :data:`MAX_TEXT`), or its boxes when it wrote no text (GPV-1)."""
    if prediction.text:
        return prediction.text[:MAX_TEXT]
    if len(prediction.boxes):
        best = (
            prediction.boxes[0]
            if prediction.scores is None
            else prediction.boxes[int(np.argmax(prediction.scores))]
        )
        return "best box [" + ", ".join(f"{v:.0f}" for v in best) + "]"
    return ""


def _chosen_samples(loader: Any, per_task: int, scan: int) -> list[TaskSample]:
    dataset = loader.dataset
    chosen: dict[str, list[TaskSample]] = {}
    for index in range(min(len(dataset), scan)):
        sample = dataset.sample(index)
        group = chosen.setdefault(sample.task.value, [])
        if len(group) < per_task:
            group.append(sample)
    return [s for group in chosen.values() for s in group]


@torch.no_grad()
def _predict(system: Any, samples: Sequence[TaskSample]) -> list[Prediction]:
    system.eval()
    processor = system.processor
    batch = processor.collate([processor.encode(s, train=False) for s in samples])
    return list(system.predict_step(batch, 0))


def compare_predictions(
    trained: Any, untrained: Any, datamodule: Any, folder: Path, per_task: int = 3, scan: int = 200
) -> list[dict[str, str]]:
    """Draw ``per_task`` test samples of every task with both systems' predictions.

    Args:
        trained, untrained: Systems with a ``processor`` and a ``predict_step`` returning ``Prediction``s.
        datamodule: Its ``test_dataloader()`` gives one loader or a list of them (one per data set).
        folder: Pictures go to ``folder/trained/`` and ``folder/untrained/`` (same file names).
        per_task: Samples per task (the first ones of each test loader, within ``scan`` samples).
        scan: Samples of each loader looked at.

    Returns:
        One row per sample: ``task``, ``sample_id``, ``prompt``, ``truth``, ``trained_answer``,
        ``untrained_answer``, ``trained_image``, ``untrained_image`` (paths as strings).
    """
    loaders = datamodule.test_dataloader()
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    rows: list[dict[str, str]] = []
    for loader in loaders:
        samples = _chosen_samples(loader, per_task, scan)
        if not samples:
            continue
        after, before = _predict(trained, samples), _predict(untrained, samples)
        for sample, mine, baseline in zip(samples, after, before, strict=True):
            name = f"{sample.task.value}_{sample.sample_id}".replace("/", "_") + ".png"
            trained_image = save_image(draw_prediction_for(sample, mine), folder / "trained" / name)
            untrained_image = save_image(draw_prediction_for(sample, baseline), folder / "untrained" / name)
            rows.append(
                {
                    "task": sample.task.value,
                    "sample_id": str(sample.sample_id),
                    "prompt": sample_text(sample),
                    "truth": truth_text(sample),
                    "trained_answer": prediction_text(mine),
                    "untrained_answer": prediction_text(baseline),
                    "trained_image": str(trained_image),
                    "untrained_image": str(untrained_image),
                }
            )
    return rows
