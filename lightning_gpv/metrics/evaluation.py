"""One evaluation layer for every model family: which metrics score a task, and how a prediction updates them.

* :func:`~lightning_gpv.metrics.tables.evaluation_table` maps each task of a family to its metrics.
* :class:`Evaluator` holds the metrics of one stage, separately for each evaluation loader (data set and
  split), and computes them with log keys ``{stage}/{dataset}/{task}/{metric}``. Samples whose metadata
  carry a COCO-SCE subset (``metadata["sce"]`` = ``"seen"``/``"unseen"``) also count under the task
  ``{task}_seen`` / ``{task}_unseen``. Per task it also reports ``parse_failure`` (the share of answers the
  output parser could not fully read: ``Prediction.dropped`` non-empty) and any family check handed to it
  (VistaLLM's ``well_formed``); evaluation losses are ``{stage}/{dataset}/{name}``.
* Which metrics compute is agreed across processes: the sample counts per task (and the loss sums) are
  summed over ranks first, so every rank computes, and syncs, the same metrics in the same order, also a
  rank that saw no sample of a task (it contributes empty states). Counts and rates include the samples a
  ``DistributedSampler`` repeats to even out the ranks; the metrics themselves drop them by sample id.
* On request (``records_dir``) every sample's id, prediction, target and score are written as JSON lines to
  ``records_dir/{stage}/{dataset}.jsonl`` (gathered on rank 0, written to a temporary name, then renamed;
  the latest evaluation of a stage replaces the file).

The systems call :meth:`Evaluator.start` at the start of an evaluation epoch with the loaders' names,
:meth:`Evaluator.update` per batch, and :meth:`Evaluator.compute` once a loader is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchmetrics import Metric

from lightning_gpv.metrics.tables import EvalItem, EvaluationTable
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Prediction, Target

SUBSETS = ("seen", "unseen")
"""COCO-SCE subsets (``metadata["sce"]``) scored separately besides the whole task."""


# ------------------------------------------------------------------------------------------------------
# The evaluator

_KEYS: tuple[tuple[Task, str | None], ...] = tuple((t, s) for t in Task for s in (None, *SUBSETS))
"""Every (task, subset) a sample can count under, in a fixed order shared by all ranks."""


def _key_name(task: Task, subset: str | None) -> str:
    return task.value if subset is None else f"{task.value}_{subset}"


def _target_json(target: Target) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target.text is not None:
        out["text"] = target.text
    if target.answers:
        out["answers"] = list(target.answers)
    if len(target.boxes):
        out["boxes"] = np.round(target.boxes.astype(np.float64), 2).tolist()
    if target.masks:
        out["masks"] = [m.to_coco() for m in target.masks]
    if target.selected_images:
        out["selected_images"] = list(target.selected_images)
    return out


class _LoaderState:
    """Metrics, counts and records of one evaluation loader."""

    def __init__(self, name: str, num_checks: int, num_losses: int, device: torch.device) -> None:
        self.name = name
        self.metrics: dict[tuple[int, int], Metric] = {}
        # counts | parse failures | one row per check | loss sums | loss weights, summed over ranks at compute
        k = len(_KEYS)
        self.counts = torch.zeros(k, dtype=torch.float64, device=device)
        self.failures = torch.zeros(k, dtype=torch.float64, device=device)
        self.checks = torch.zeros(num_checks, k, dtype=torch.float64, device=device)
        self.loss_sums = torch.zeros(num_losses, dtype=torch.float64, device=device)
        self.loss_weights = torch.zeros(num_losses, dtype=torch.float64, device=device)
        self.records: list[dict[str, Any]] = []
        self.done = False


class Evaluator:
    """The metrics of one evaluation stage, per loader and per task.

    Args:
        table: Task -> metrics (:func:`evaluation_table`); tasks outside it get only counts and rates.
        checks: Extra per-answer rates, name -> predicate (e.g. VistaLLM's ``well_formed``), logged as
            ``{task}/{name}``.
        loss_names: The evaluation losses the family reports (``update_losses`` takes these only).
        records_dir: Folder for per-sample JSON lines, ``{stage}/{dataset}.jsonl``, written when a loader is
            computed; each evaluation of a stage replaces the file (after ``fit`` it holds the last
            validation), and a loader without samples writes none. ``None`` keeps no records.
    """

    def __init__(
        self,
        table: EvaluationTable,
        *,
        checks: Mapping[str, Callable[[Prediction], bool]] | None = None,
        loss_names: Sequence[str] = ("loss",),
        records_dir: str | Path | None = None,
    ) -> None:
        self.table = dict(table)
        self.checks = dict(checks or {})
        self.loss_names = tuple(loss_names)
        self.records_dir = Path(records_dir) if records_dir is not None else None
        self.loaders: list[_LoaderState] = []
        self.device = torch.device("cpu")

    def start(self, names: Sequence[str], device: torch.device | str = "cpu") -> None:
        """Forget everything and prepare one state per loader, ``names`` in ``dataloader_idx`` order."""
        self.device = torch.device(device)
        self.loaders = [_LoaderState(n, len(self.checks), len(self.loss_names), self.device) for n in names]

    def _loader(self, index: int) -> _LoaderState:
        if not 0 <= index < len(self.loaders):
            raise IndexError(f"dataloader_idx {index} but {len(self.loaders)} loaders were started")
        return self.loaders[index]

    def _metric(self, state: _LoaderState, key: int, spec_index: int) -> Metric:
        metric = state.metrics.get((key, spec_index))
        if metric is None:
            task = _KEYS[key][0]
            metric = self.table[task][spec_index].factory().to(self.device)
            state.metrics[(key, spec_index)] = metric
        return metric

    def update(self, loader: int, items: Sequence[EvalItem]) -> None:
        """Add the scored samples of one batch of loader ``loader``."""
        state = self._loader(loader)
        groups: dict[int, list[EvalItem]] = {}
        for item in items:
            task = item.prediction.task
            subset = item.metadata.get("sce")
            for key in (
                _KEYS.index((task, None)),
                *([_KEYS.index((task, subset))] if subset in SUBSETS else []),
            ):
                groups.setdefault(key, []).append(item)
        for key, group in groups.items():
            task = _KEYS[key][0]
            state.counts[key] += len(group)
            state.failures[key] += sum(bool(it.prediction.dropped) for it in group)
            for row, check in enumerate(self.checks.values()):
                state.checks[row, key] += sum(bool(check(it.prediction)) for it in group)
            for i, spec in enumerate(self.table.get(task, ())):
                spec.update(self._metric(state, key, i), group)
        if self.records_dir is not None:
            state.records.extend(self._record(item) for item in items)

    def update_losses(self, loader: int, losses: Mapping[str, torch.Tensor | float], weight: int) -> None:
        """Add a batch's mean losses (``weight`` = its samples) to the running means of loader ``loader``."""
        state = self._loader(loader)
        for name, value in losses.items():
            if name not in self.loss_names:
                raise KeyError(f"loss {name!r} is not one of {self.loss_names}")
            index = self.loss_names.index(name)
            # A tensor sum on the loss's device: no host sync per batch (float() would wait for the GPU).
            state.loss_sums[index] += torch.as_tensor(value, dtype=torch.float64, device=self.device) * weight
            state.loss_weights[index] += weight

    def _record(self, item: EvalItem) -> dict[str, Any]:
        task = item.prediction.task
        scores = [spec.score(item) for spec in self.table.get(task, ()) if spec.score is not None]
        return {
            "id": item.prediction.sample_id,
            "task": task.value,
            "prediction": item.prediction.to_json(),
            "target": _target_json(item.target),
            "score": scores[0] if scores else None,
        }

    def compute(self, loader: int, stage: str) -> dict[str, float]:
        """Every metric of loader ``loader``: ``{"{stage}/{dataset}/{task}/{metric}": value, ...}``.

        Collective under ``torch.distributed``: every rank must call it for the same loaders in the same
        order (they do: each rank runs the same number of batches per loader). The loader's states are
        then emptied.
        """
        state = self._loader(loader)
        packed = torch.cat([state.counts, state.failures, state.checks.reshape(-1), state.loss_sums,
                            state.loss_weights])  # fmt: skip
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(packed)
        k, c, n = len(_KEYS), len(self.checks), len(self.loss_names)
        counts, failures, checks, loss_sums, loss_weights = torch.split(packed, [k, k, c * k, n, n])
        checks = checks.reshape(c, k)
        prefix = f"{stage}/{state.name}"
        out: dict[str, float] = {}
        for index, name in enumerate(self.loss_names):
            if loss_weights[index] > 0:
                out[f"{prefix}/{name}"] = float(loss_sums[index] / loss_weights[index])
        for key, (task, subset) in enumerate(_KEYS):
            if counts[key] == 0:
                continue
            label = f"{prefix}/{_key_name(task, subset)}"
            for i, spec in enumerate(self.table.get(task, ())):
                value = self._metric(state, key, i).compute()
                named = value.items() if isinstance(value, dict) else [(spec.name or task.value, value)]
                for name, item in named:
                    out[f"{label}/{name}"] = float(item)
            out[f"{label}/parse_failure"] = float(failures[key] / counts[key])
            for row, check in enumerate(self.checks):
                out[f"{label}/{check}"] = float(checks[row, key] / counts[key])
        if counts.sum() > 0:  # the same decision on every rank: the write gathers from all of them
            self._write_records(state, stage)
        state.metrics.clear()
        state.records = []
        state.done = True
        return out

    def pending(self) -> list[int]:
        """Loaders started but not computed yet (e.g. a loader whose length is unknown)."""
        return [i for i, s in enumerate(self.loaders) if not s.done]

    def _write_records(self, state: _LoaderState, stage: str) -> None:
        if self.records_dir is None:
            return
        records = state.records
        rank = 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
            rank = dist.get_rank()
        if rank != 0:
            return
        seen: set[tuple[str, str]] = set()
        unique = []
        for record in records:  # a DistributedSampler repeats samples to even out the ranks
            key = (record["task"], record["id"])
            if key not in seen:
                seen.add(key)
                unique.append(record)
        path = self.records_dir / stage / f"{state.name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with tmp.open("w", encoding="utf-8") as f:
            for record in unique:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, path)


def flatten_results(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One dict from what ``Trainer.validate``/``test`` return (one dict per loader; the keys name their
    data set). A ``/dataloader_idx_N`` suffix, which Lightning adds to what a system logs per loader
    without naming it, is dropped."""
    out: dict[str, float] = {}
    for result in results:
        for key, value in result.items():
            out[key.split("/dataloader_idx_")[0]] = float(value)
    return out


__all__ = ["SUBSETS", "Evaluator", "flatten_results"]
