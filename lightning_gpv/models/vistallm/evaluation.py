"""Per-task evaluation of VistaLLM predictions: one torchmetrics object per task, plus answer well-formedness.

:class:`TaskMetrics` routes each :class:`~lightning_gpv.tasks.samples.Prediction` to its task's metric
(the table :data:`METRICS`) and to a ``well_formed`` rate (the answer parsed cleanly into the expected
kind: one box for REC, 32-point masks for RES, ...). ``compute()`` returns ``{"<task>/<name>": value}``
for the tasks that received predictions since the last ``reset()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric

from lightning_gpv.metrics.captioning import CIDErD
from lightning_gpv.metrics.vqa import VQAAccuracy
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Prediction, Target

Update = Callable[[Metric, Sequence[Prediction], Sequence[Target], Sequence[Sequence[tuple[int, int]]]], None]


def _references(target: Target) -> list[str]:
    return list(target.answers) or ([target.text] if target.text else [""])


def _update_text(metric: Metric, preds: Sequence[Prediction], targets: Sequence[Target],
                 sizes: Sequence[Sequence[tuple[int, int]]]) -> None:  # fmt: skip
    metric.update(
        [p.text for p in preds], [_references(t) for t in targets], ids=[p.sample_id for p in preds]
    )


METRICS: dict[Task, tuple[str, Callable[[], Metric], Update]] = {
    Task.CAPTIONING: ("cider", CIDErD, _update_text),
    Task.VQA: ("accuracy", VQAAccuracy, _update_text),
}
"""Task -> (logged name, metric factory, update function)."""


def well_formed(prediction: Prediction, num_points: int) -> bool:
    """Whether an answer parsed cleanly into what its task expects.

    REC: exactly one box; GREC: any number of boxes; RES, CoSeg, AttCoSeg: at least one mask, each with
    ``num_points`` points; GRES: any number of such masks; AttCoSeg also names two images; other tasks:
    non-empty text. Nothing may have been dropped by the parser.
    """
    if prediction.dropped:
        return False
    task = prediction.task
    masks_ok = all(len(m.polygons[0]) == num_points for m in prediction.masks if m.polygons)
    if task is Task.REC:
        return len(prediction.boxes) == 1
    if task is Task.GREC:
        return True
    if task is Task.GRES:
        return masks_ok
    if task in (Task.RES, Task.COSEG):
        return bool(prediction.masks) and masks_ok
    if task is Task.ATTCOSEG:
        return len(prediction.selected_images) == 2 and len(prediction.masks) == 2 and masks_ok
    return bool(prediction.text.strip())


class TaskMetrics(nn.Module):
    """The metrics of every task VistaLLM evaluates, for one stage (validation or test).

    Args:
        config: The model config (``num_mask_points`` for well-formedness).
    """

    def __init__(self, config: VistaLLMConfig) -> None:
        super().__init__()
        self.num_points = config.num_mask_points
        self.metrics = nn.ModuleDict({task.value: factory() for task, (_, factory, _) in METRICS.items()})
        self.well_formed = nn.ModuleDict({task.value: MeanMetric() for task in Task})
        self._seen: set[Task] = set()

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Tasks with a quality metric."""
        return tuple(METRICS)

    def update(
        self,
        predictions: Sequence[Prediction],
        targets: Sequence[Target],
        image_sizes: Sequence[Sequence[tuple[int, int]]],
    ) -> None:
        """Add a batch: predictions, their targets and the ``(height, width)`` of each sample's images."""
        by_task: dict[Task, list[int]] = {}
        for i, prediction in enumerate(predictions):
            by_task.setdefault(prediction.task, []).append(i)
        for task, index in by_task.items():
            self._seen.add(task)
            preds = [predictions[i] for i in index]
            ok = torch.tensor([float(well_formed(p, self.num_points)) for p in preds])
            self.well_formed[task.value].update(ok)
            if task in METRICS:
                _, _, update = METRICS[task]
                update(
                    self.metrics[task.value],
                    preds,
                    [targets[i] for i in index],
                    [image_sizes[i] for i in index],
                )

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"<task>/<metric>": value, "<task>/well_formed": rate}`` for the tasks seen since ``reset``."""
        out: dict[str, torch.Tensor] = {}
        for task in sorted(self._seen, key=lambda t: t.value):
            if task in METRICS:
                name = METRICS[task][0]
                value = self.metrics[task.value].compute()
                for key, item in value.items() if isinstance(value, dict) else [(name, value)]:
                    out[f"{task.value}/{key}"] = torch.as_tensor(item, dtype=torch.float32)
            out[f"{task.value}/well_formed"] = self.well_formed[task.value].compute().float()
        return out

    def reset(self) -> None:
        """Forget every update."""
        for metric in [*self.metrics.values(), *self.well_formed.values()]:
            metric.reset()
        self._seen.clear()
