"""Names of evaluation loaders: one distinct data set label each."""

from __future__ import annotations

from types import SimpleNamespace

from lightning_gpv.systems.hooks import evaluation_loader_names
from lightning_gpv.tasks import Task


def _loader(name: str | None, tasks: tuple[Task, ...] | None = None) -> SimpleNamespace:
    reader = SimpleNamespace(tasks=tasks) if tasks is not None else None
    return SimpleNamespace(dataset=SimpleNamespace(name=name, reader=reader))


def test_loaders_of_one_split_are_told_apart_by_task_then_index() -> None:
    loaders = [
        _loader("refcoco_unc.val", (Task.REC,)),
        _loader("refcoco_unc.val", (Task.RES,)),
        _loader("vqav2.val2014", (Task.VQA,)),
        _loader("coco.val2014"),
        _loader("coco.val2014"),
        _loader(None),
    ]
    trainer = SimpleNamespace(testing=True, test_dataloaders=loaders)
    assert evaluation_loader_names(trainer) == [  # type: ignore[arg-type]
        "refcoco_unc.val-rec",
        "refcoco_unc.val-res",
        "vqav2.val2014",
        "coco.val2014#3",
        "coco.val2014#4",
        "loader5",
    ]
