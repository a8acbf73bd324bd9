"""Lightning hook bodies shared by the systems."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lightning_gpv.metrics.evaluation import Evaluator
from lightning_gpv.tasks.processing import SampleProcessor


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any process (a collective under ``torch.distributed``)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    value = torch.tensor(int(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The module's trainer, or ``None`` when it is used outside one (``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def connect_datamodule(module: LightningModule, processor: SampleProcessor) -> None:
    """Hand ``processor`` to the trainer's data module unless it already has one.

    Called from the systems' ``setup`` so that a data module built without a processor (a notebook, a
    script passing ``datamodule=`` to ``Trainer.fit``) yields the model's batches. A data module connected
    earlier (constructor, the CLI) keeps its processor.
    """
    trainer = attached_trainer(module)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None or not hasattr(datamodule, "connect"):
        return
    if getattr(datamodule, "processor", None) is None:
        datamodule.connect(processor)


def _flatten(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def evaluation_loaders(trainer: Trainer) -> list[Any]:
    """The loaders of the evaluation running now (validation or test), in ``dataloader_idx`` order."""
    if trainer.testing:
        return _flatten(trainer.test_dataloaders)
    if trainer.state.fn == TrainerFn.VALIDATING:  # ``trainer.val_dataloaders`` prefers the fit loop's
        combined = trainer.validate_loop._combined_loader
        return _flatten(combined.iterables if combined is not None else None)
    return _flatten(trainer.val_dataloaders)


def loader_name(loader: Any, index: int) -> str:
    """The data set label of an evaluation loader: its dataset's ``name`` (``refcoco_unc.testA``), else
    ``loader{index}``."""
    name = getattr(getattr(loader, "dataset", None), "name", None)
    return name if isinstance(name, str) and name else f"loader{index}"


def evaluation_loader_names(trainer: Trainer) -> list[str]:
    """One distinct label per evaluation loader (see :func:`loader_name`). Loaders of the same data set and
    split are told apart by their reader's tasks (``refcoco_unc.val-rec``, ``refcoco_unc.val-res``), or
    else by their index (``coco.val2014#2``)."""
    loaders = evaluation_loaders(trainer)
    base = [loader_name(loader, i) for i, loader in enumerate(loaders)]
    names = list(base)
    for i, loader in enumerate(loaders):
        if base.count(base[i]) > 1:
            tasks = getattr(getattr(getattr(loader, "dataset", None), "reader", None), "tasks", None)
            if tasks:
                names[i] = f"{names[i]}-{'+'.join(getattr(t, 'value', str(t)) for t in tasks)}"
    return [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def is_last_batch(trainer: Trainer, batch_idx: int, dataloader_idx: int) -> bool:
    """Whether ``batch_idx`` is the last batch this evaluation runs of loader ``dataloader_idx`` (False when
    the number of batches is unknown)."""
    if trainer.sanity_checking:
        counts = trainer.num_sanity_val_batches
    elif trainer.testing:
        counts = trainer.num_test_batches
    else:
        counts = trainer.num_val_batches
    if dataloader_idx >= len(counts) or not math.isfinite(counts[dataloader_idx]):
        return False
    return batch_idx == int(counts[dataloader_idx]) - 1


def start_evaluation(module: LightningModule, evaluator: Evaluator) -> None:
    """Prepare ``evaluator`` for the loaders of the evaluation that starts now."""
    evaluator.start(evaluation_loader_names(module.trainer), module.device)


def finish_loader(
    module: LightningModule, evaluator: Evaluator, stage: str, batch_idx: int, dataloader_idx: int
) -> None:
    """After a batch: once a loader's last batch is in, compute and log its metrics. Logged from the step,
    Lightning files them under that loader (its column of the printed table, its dict of the results);
    the keys name their data set already, so Lightning's ``/dataloader_idx_N`` suffix is left out."""
    if is_last_batch(module.trainer, batch_idx, dataloader_idx):
        _log(module, evaluator.compute(dataloader_idx, stage))


def finish_evaluation(module: LightningModule, evaluator: Evaluator, stage: str) -> None:
    """At the end of the epoch: compute and log the loaders whose end was not seen (unknown length)."""
    for index in evaluator.pending():
        _log(module, evaluator.compute(index, stage))


def _log(module: LightningModule, values: Mapping[str, float]) -> None:
    # The evaluator has synced every value over the processes already.
    for key, value in values.items():
        module.log(key, value, sync_dist=False, batch_size=1, add_dataloader_idx=False)
