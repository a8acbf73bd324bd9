"""Per-task evaluation of VistaLLM predictions: one torchmetrics object per task, plus answer well-formedness.

:class:`TaskMetrics` routes each :class:`~lightning_gpv.tasks.samples.Prediction` to its task's metric
(the table :data:`METRICS`) and to a ``well_formed`` rate (the answer parsed cleanly into the expected
kind: one box for REC, 32-point masks for RES, ...). ``compute()`` returns ``{"<task>/<name>": value}``
for the tasks that received predictions since the last ``reset()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric

from lightning_gpv.geometry import Mask
from lightning_gpv.metrics import (
    CIDErD,
    CoSegScore,
    GRECScore,
    GRESScore,
    MaskIoU,
    NLVRScore,
    ReferringAccuracy,
    VQAAccuracy,
)
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Prediction, Target

Sizes = Sequence[tuple[int, int]]
Preds = Sequence[Prediction]
Targets = Sequence[Target]
SizeRows = Sequence[Sizes]
Metas = Sequence[dict[str, Any]]
Update = Callable[[Metric, Preds, Targets, SizeRows, Metas], None]
"""``update(metric, predictions, targets, image sizes per sample, metadata per sample)`` of one task."""


def _references(target: Target) -> list[str]:
    return list(target.answers) or ([target.text] if target.text else [""])


def _ids(preds: Sequence[Prediction]) -> list[str]:
    return [p.sample_id for p in preds]


def _union(masks: Sequence[Mask], size: tuple[int, int]) -> torch.Tensor | None:
    """Union of masks as an ``(H, W)`` bool tensor, or ``None`` when there is none."""
    if not masks:
        return None
    out = np.zeros(size, dtype=bool)
    for mask in masks:
        out |= mask.to_array()
    return torch.from_numpy(out)


def _per_image(
    masks: Sequence[Mask], owners: np.ndarray, image: int, size: tuple[int, int]
) -> torch.Tensor | None:
    return _union([m for m, o in zip(masks, owners) if int(o) == image], size)


def _update_text(metric: Metric, preds: Preds, targets: Targets, sizes: SizeRows, meta: Metas) -> None:
    metric.update([p.text for p in preds], [_references(t) for t in targets], ids=_ids(preds))


def _update_rec(metric: Metric, preds: Preds, targets: Targets, sizes: SizeRows, meta: Metas) -> None:
    """Top-1 box against the target box; no parsed box counts as a miss (an empty box)."""
    pred = torch.tensor(np.stack([p.boxes[0] if len(p.boxes) else np.zeros(4, np.float32) for p in preds]))
    target = torch.tensor(
        np.stack([t.boxes[0] if len(t.boxes) else np.zeros(4, np.float32) for t in targets])
    )
    metric.update(pred, target, ids=_ids(preds))


def _update_grec(metric: Metric, preds: Preds, targets: Targets, sizes: SizeRows, meta: Metas) -> None:
    metric.update([torch.from_numpy(p.boxes) for p in preds], [torch.from_numpy(t.boxes) for t in targets],
                  ids=_ids(preds))  # fmt: skip


def _update_res(metric: Metric, preds: Preds, targets: Targets, sizes: SizeRows, meta: Metas) -> None:
    """Union of the predicted masks against the union of the target masks, at the original resolution."""
    metric.update([_union(p.masks, s[0]) for p, s in zip(preds, sizes)],
                  [_union(t.masks, s[0]) for t, s in zip(targets, sizes)], ids=_ids(preds))  # fmt: skip


def _update_nlvr(metric: Metric, preds: Preds, targets: Targets, sizes: SizeRows, meta: Metas) -> None:
    identifiers = []
    for p, m in zip(preds, meta):
        identifier = str(m.get("identifier", ""))
        if len(identifier.split("-")) != 4:  # not an NLVR2 identifier: one sentence group per sample
            identifier = "x-" + p.sample_id.replace("-", "_") + "-0-0"
        identifiers.append(identifier)
    metric.update([p.text.strip().rstrip(".") for p in preds], [t.text or "" for t in targets], identifiers)


def _update_coseg(metric: Metric, preds: Preds, targets: Targets, sizes: SizeRows, meta: Metas) -> None:
    """One row per input image; CoSeg groups by object class, AttCoSeg by sample."""
    pred_masks, target_masks, groups, ids = [], [], [], []
    for p, t, image_sizes, m in zip(preds, targets, sizes, meta):
        group = str(m.get("group", m.get("group_id", p.sample_id)))
        for i, size in enumerate(image_sizes):
            pred_masks.append(_per_image(p.masks, p.mask_image, i, size))
            target = _per_image(t.masks, t.mask_image, i, size)
            target_masks.append(target if target is not None else torch.zeros(size, dtype=torch.bool))
            groups.append(group)
            ids.append(f"{p.sample_id}/{i}")
    metric.update(pred_masks, target_masks, groups, ids=ids)


METRICS: dict[Task, tuple[str, Callable[[], Metric], Update]] = {
    Task.CAPTIONING: ("cider", CIDErD, _update_text),
    Task.VQA: ("accuracy", VQAAccuracy, _update_text),
    Task.REC: ("acc@0.5", ReferringAccuracy, _update_rec),
    Task.RES: ("miou", MaskIoU, _update_res),
    Task.GREC: ("grec", GRECScore, _update_grec),
    Task.GRES: ("gres", GRESScore, _update_res),
    Task.NLVR2: ("nlvr2", NLVRScore, _update_nlvr),
    Task.COSEG: ("coseg", CoSegScore, _update_coseg),
    Task.ATTCOSEG: ("coseg", CoSegScore, _update_coseg),
}
"""Task -> (logged name of a scalar metric, metric factory, update function). Metrics returning a dict
are logged under their own keys (``res/mIoU``, ``grec/precision``, ``coseg/jaccard``, ...)."""


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


class TaskCounts(Metric):
    """Samples seen per task, summed over processes (which tasks to compute is decided on every rank)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("counts", default=torch.zeros(len(Task), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self.counts[list(Task).index(task)] += 1

    def compute(self) -> torch.Tensor:
        return self.counts


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
        self.counts = TaskCounts()

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Tasks with a quality metric."""
        return tuple(METRICS)

    def update(
        self,
        predictions: Sequence[Prediction],
        targets: Sequence[Target],
        image_sizes: Sequence[Sizes],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Add a batch: predictions, their targets, the ``(height, width)`` of each sample's images and the
        samples' metadata (NLVR2 ``identifier``, CoSeg ``group``)."""
        meta = list(metadata) if metadata is not None else [{} for _ in predictions]
        by_task: dict[Task, list[int]] = {}
        for i, prediction in enumerate(predictions):
            by_task.setdefault(prediction.task, []).append(i)
        self.counts.update([p.task for p in predictions])
        for task, index in by_task.items():
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
                    [meta[i] for i in index],
                )

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"<task>/<metric>": value, "<task>/well_formed": rate}`` for the tasks seen since ``reset``.

        Under DDP the tasks are those any process saw, so every process computes (and syncs) the same
        metrics; a process that saw none of a task's samples contributes empty states.
        """
        out: dict[str, torch.Tensor] = {}
        counts = self.counts.compute()
        seen = [task for task, n in zip(Task, counts.tolist()) if n > 0]
        for task in sorted(seen, key=lambda t: t.value):
            if task in METRICS:
                name = METRICS[task][0]
                value = self.metrics[task.value].compute()
                for key, item in value.items() if isinstance(value, dict) else [(name, value)]:
                    out[f"{task.value}/{key}"] = torch.as_tensor(item, dtype=torch.float32)
            out[f"{task.value}/well_formed"] = self.well_formed[task.value].compute().float()
        return out

    def reset(self) -> None:
        """Forget every update."""
        for metric in [*self.metrics.values(), *self.well_formed.values(), self.counts]:
            metric.reset()
