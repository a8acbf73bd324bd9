"""``lightning-gpv validate`` in two processes (DDP, gloo on CPU) where one rank receives no sample of a task
finishes and reports the numbers of one process, for both families."""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DistributedSampler

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datamodules.base import TaskDataModule  # noqa: E402
from datamodules.coco import CocoDataModule, CocoOptions  # noqa: E402
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions  # noqa: E402
from lightning_gpv.demo import tiny_recipe  # noqa: E402
from lightning_gpv.systems.gpv1 import GPV1Module  # noqa: E402
from lightning_gpv.systems.vistallm import VistaLLMModule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _first_of_second_task(tasks: list[str]) -> int:
    """Samples to keep so that the last one is the only sample of the second task in the split."""
    return next(i for i, task in enumerate(tasks) if task != tasks[0]) + 1


def _rank_tasks(tasks: list[str], world: int = 2) -> list[set[str]]:
    return [
        {tasks[i] for i in DistributedSampler(range(len(tasks)), world, rank, shuffle=False)}
        for rank in range(world)
    ]


def _validate(
    recipe: Path, data: Path, ckpt: Path, out: Path, devices: int, *extra: str
) -> tuple[dict[str, float], list[str]]:
    """The logged metrics of a ``validate`` run, and VistaLLM's token-budget warnings (what follows ``in this
    val run:``)."""
    cmd = [sys.executable, "-m", "lightning_gpv.cli", "validate", "-c", str(recipe), "-c", str(data),
           "--init_weights", str(ckpt), "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
           "--trainer.limit_val_batches=1.0", "--trainer.enable_progress_bar=false",
           "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
           f"--trainer.default_root_dir={out}", *extra]  # fmt: skip
    if devices > 1:
        cmd.append("--trainer.strategy=ddp")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    budget = [
        line.split("in this val run: ", 1)[1]
        for line in done.stderr.splitlines()
        if "in this val run: " in line
    ]
    (metrics,) = out.rglob("metrics.csv")
    values: dict[str, float] = {}
    with metrics.open() as f:
        for row in csv.DictReader(f):
            values.update(
                {k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")}
            )
    return values, budget


def _compare(single: dict[str, float], double: dict[str, float], padded: bool) -> None:
    # Losses are means of per-batch means (the batches differ); with a padded last sample the rates count it.
    skip = ("/loss", "parse_failure", "well_formed") if padded else ("/loss",)
    keys = {k for k in single if not any(s in k for s in skip)}
    assert keys and keys == {k for k in double if not any(s in k for s in skip)}
    assert {k: double[k] for k in keys} == pytest.approx({k: single[k] for k in keys}, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpv1", "vistallm"])
def test_two_process_validate_with_a_rank_missing_a_task(
    family: str, shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, vocab = shapes_and_vocab
    images = data / "coco" / "images" / "train2014"
    if family == "gpv1":  # the tiny recipe's image size and tokenizer
        text = {"tokenizer_name_or_path": str(vocab / "vocab.txt"), "vocab_size": 512}
        config = {"preset": "tiny", "image_size": [96, 96], "text": text}
        module: LightningModule = GPV1Module(config, vocab_path=str(vocab / "answers"))
        dm: TaskDataModule = CocoDataModule(
            str(data / "coco"), CocoOptions(tasks=("captioning", "localization"))
        )
        split, recipe = "val2014", tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
        extra: tuple[str, ...] = ()
    else:
        split, recipe = "val", tiny_recipe("vistallm_shapes", data, None, tmp_path / "recipe.yaml")
        config = yaml.safe_load(recipe.read_text())["model"]["init_args"]["config"]  # the recipe's model
        module = VistaLLMModule(config, load_weights=False)
        dm = RefCocoDataModule(
            str(data / "refcoco"), RefCocoOptions(tasks=("rec", "res"), image_dir=str(images))
        )
        extra = ("--model.init_args.max_new_tokens=12",)
    dataset = dm.dataset(split, False)
    tasks = [dataset.sample(i).task.value for i in range(len(dataset))]
    keep = _first_of_second_task(tasks)
    per_rank = _rank_tasks(tasks[:keep])
    assert per_rank[0] != per_rank[1] and any(len(t) == 1 for t in per_rank)  # a rank misses a task

    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    options = dataclasses.asdict(dm.options)
    options["tasks"] = list(options["tasks"])
    init_args = {"root": dm.root, "options": options, "max_samples": keep, "batch_size": 2,
                 "train_split": None, "val_split": split}  # fmt: skip
    override = tmp_path / "data.yaml"
    data_class = f"{type(dm).__module__}.{type(dm).__name__}"
    override.write_text(yaml.safe_dump({"data": {"class_path": data_class, "init_args": init_args}}))

    single, single_budget = _validate(recipe, override, ckpt, tmp_path / "one", 1, *extra)
    double, double_budget = _validate(recipe, override, ckpt, tmp_path / "two", 2, *extra)
    _compare(single, double, padded=keep % 2 == 1)
    if family == "vistallm":  # 12 tokens cut the untrained answers: one warning, counted over both ranks
        assert len(single_budget) == 1 and len(double_budget) == 1, (single_budget, double_budget)
        if keep % 2 == 0:
            assert double_budget == single_budget
    missing = tasks[keep - 1]  # the task one rank never saw is scored all the same
    assert any(k.split("/")[2] == missing for k in double), sorted(double)
