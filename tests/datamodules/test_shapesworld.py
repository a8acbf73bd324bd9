"""Every task from ShapesWorld files, and the throughput benchmark's smoke run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from datamodules import (
    AttCosegDataModule,
    CocoDataModule,
    CosegDataModule,
    GRefCocoDataModule,
    MultiTaskDataModule,
    Nlvr2DataModule,
    RefCocoDataModule,
    RefCocoOptions,
    VQAv2DataModule,
)
from lightning_gpv.tasks.catalogue import Task

SHAPESWORLD_TASKS = {
    Task.CAPTIONING, Task.VQA, Task.LOCALIZATION, Task.CLASSIFICATION, Task.REC, Task.RES, Task.REG,
    Task.GREC, Task.GRES, Task.NLVR2, Task.COSEG, Task.ATTCOSEG,
}  # fmt: skip


def test_every_task_from_shapesworld(shapes_root: Path, build) -> None:  # type: ignore[no-untyped-def]
    r = shapes_root
    before = build.snapshot(r)
    kids = [
        CocoDataModule(str(r / "coco")),
        VQAv2DataModule(str(r / "vqav2")),
        RefCocoDataModule(str(r / "refcoco"), RefCocoOptions(tasks=("rec", "res", "reg"))),
        GRefCocoDataModule(str(r / "grefcoco")),
        Nlvr2DataModule(str(r / "nlvr2")),
        CosegDataModule(str(r / "coseg" / "pascal"), train_split="all"),
        AttCosegDataModule(str(r / "attcoseg")),
    ]
    dm = MultiTaskDataModule(kids, batch_size=100_000)
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    assert {s.task for s in batch} == SHAPESWORLD_TASKS
    for s in batch:
        assert all(Path(p).is_file() for p in s.images)
        if s.image_sizes is not None:
            for m, k in zip(s.target.masks, s.target.mask_image):
                assert (m.height, m.width) == s.image_sizes[k]
    assert dm.num_skipped == 0
    assert build.snapshot(r) == before  # nothing written into the data folders


def test_throughput_benchmark_runs(
    load_benchmark: Callable[[str], ModuleType], shapes_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("data_throughput")
    bench.main(["--root", str(shapes_root), "--datamodule", "refcoco", "--workers", "0", "--epochs", "1"])
    out = capsys.readouterr().out
    assert "samples/s" in out and len(out.strip().splitlines()) == 3
