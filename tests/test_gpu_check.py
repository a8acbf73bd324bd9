"""``benchmarks/gpu_check.py`` and ``benchmarks/gpu_check.sh`` without a GPU: argument checks, the dry run,
the files ``prepare`` writes and the plan-vs-measured comparison."""

from __future__ import annotations

import importlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("gpu_check")


def test_dry_run_prints_the_steps_and_the_plan(
    check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert check.main(["prepare", str(out), "--dry-run", "--gpu-memory", "80"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(",", 1)[0].lstrip("[") for line in lines if line.startswith("[")]
    assert names == ["data", "tiny_vistallm_bf16", "tiny_gpv1_bf16", "fsdp_vistallm", "throughput", "compare"]
    assert "[compare, 30 s]" in "\n".join(lines)
    throughput = next(line for line in lines if line.startswith("[throughput"))
    assert "--preset 7b --mode full --batch-size 8 --llm-layers 32" in throughput
    assert "--trainer.precision=bf16-mixed" in next(line for line in lines if line.startswith("[tiny_gpv1"))
    plan = lines[-1]
    assert plan.startswith("plan: 7b full, 32 LLM layers, batch 8 x 226 tokens, bf16, no FSDP: predicted ")
    assert plan.endswith("of 80.0 GiB (--gpu-memory), fits")
    assert not out.exists()  # a dry run writes nothing


def test_fsdp2_adds_its_fit(check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["prepare", str(tmp_path), "--dry-run", "--gpu-memory", "80", "--fsdp2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    names = [line.split(",", 1)[0].lstrip("[") for line in lines]
    assert names[3:5] == ["fsdp_vistallm", "fsdp2_vistallm"] and len(names) == 7
    assert "recipes/fsdp2_strategy.yaml --trainer.accelerator=gpu" in lines[4]
    assert "lightning_gpv.strategies_fsdp2.VistaLLMFSDP2Strategy" in check.FSDP2_STRATEGY
    import yaml

    strategy = yaml.safe_load(check.FSDP2_STRATEGY)["trainer"]["strategy"]
    module, name = strategy["class_path"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name).__name__ == name


def test_the_plan_picks_as_many_layers_as_fit(check: ModuleType) -> None:
    layers, plan = check.throughput_plan("7b", "full", 8, memory=40.0)
    assert 1 < layers < 32 and plan.fits
    _, deeper = check.throughput_plan("7b", "full", 8, memory=80.0)
    assert deeper.total > plan.total


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["prepare", "out", "--steps", "0"], "--steps"),
        (["prepare", "out", "--batch-size", "x"], "--batch-size"),
        (["prepare", "out", "--gpu-memory", "-1"], "--gpu-memory"),
        (["prepare", "out", "--mode", "stage3"], "--mode"),
    ],
)
def test_bad_arguments_are_named(
    check: ModuleType, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        check.main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err


def test_prepare_and_compare(check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["compare", str(tmp_path)]) == 1  # nothing measured yet
    assert check.main(["prepare", str(tmp_path), "--gpu-memory", "80"]) == 0
    steps = [line.split("\t") for line in (tmp_path / "steps.tsv").read_text().splitlines()]
    assert all(len(step) == 3 and int(step[1]) > 0 for step in steps)
    assert 45 + sum(int(step[1]) for step in steps) <= 8 * 60  # prepare's 45 s included
    recipe = (tmp_path / "recipes" / "vistallm_shapes.yaml").read_text()
    assert str(tmp_path / "data") in recipe and "data/shapesworld" not in recipe
    plan = json.loads((tmp_path / "plan.json").read_text())
    measured = {"device": "NVIDIA H100", "batch_size": 8, "seq_len": 226, "tokens_per_s": 1000.0,
                "samples_per_s": 4.4, "mfu": 0.4, "peak_memory_gib": 2 * plan["total_gib"],
                "peak_reserved_gib": 3.0}  # fmt: skip
    (tmp_path / "throughput.json").write_text(json.dumps(measured))
    capsys.readouterr()
    assert check.main(["compare", str(tmp_path)]) == 0
    text = (tmp_path / "plan_vs_measured.txt").read_text()
    assert "1000.0 tokens/s, 4.4 samples/s, MFU 0.4" in text
    assert f"plan vs measured: predicted {plan['total_gib']:.1f} GiB (weights " in text
    assert json.loads((tmp_path / "plan_vs_measured.json").read_text())["ratio"] == pytest.approx(2, rel=0.01)


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)
