"""``make demo`` (``python -m lightning_gpv.demo``) in its ``--quick`` setting: outputs and their layout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_gpv import demo
from lightning_gpv.demo import main

ROOT = Path(__file__).resolve().parents[1]
TESTED_TASKS = {
    "gpv1": {"localization", "vqa", "classification", "captioning", "rec"},
    "vistallm": {"captioning", "vqa", "rec", "res", "grec", "gres", "nlvr2", "attcoseg"},
}
"""The tasks of each tiny recipe's test loaders (VistaLLM: both stages) with test samples in the quick world
(its 20 images leave co-segmentation's test split empty)."""


def _quick_demo(root: Path, jobs: int) -> tuple[Path, str]:
    """Run ``--quick`` with ``--jobs jobs`` into ``root/demo`` (holding an earlier run); return the output
    folder and what the demo printed."""
    threads = torch.get_num_threads()
    out = root / "demo"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier run")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            assert main(["--quick", "--out", str(out), "--jobs", str(jobs)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def parallel_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _quick_demo(tmp_path_factory.mktemp("parallel"), jobs=2)


@pytest.fixture(scope="module")
def sequential_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _quick_demo(tmp_path_factory.mktemp("sequential"), jobs=1)


@pytest.mark.slow
def test_quick_demo_writes_metrics_and_pictures(parallel_demo: tuple[Path, str]) -> None:
    out, printed = parallel_demo
    moved = [p for p in out.parent.iterdir() if p.name.startswith("demo-")]
    assert len(moved) == 1 and (moved[0] / "earlier.txt").is_file()  # never silently overwritten
    assert f"moved to {moved[0]}" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"gpv1", "vistallm"}
    for model, tasks in TESTED_TASKS.items():
        assert set(metrics[model]) == {"trained", "untrained"}
        trained, untrained = metrics[model]["trained"], metrics[model]["untrained"]
        assert set(trained) == set(untrained), model
        # Uniform keys test/{dataset}/{task}/{metric}, the data set being one of the recipe's test splits.
        splits = {"coco.val2014", "vqav2.val2014", "refcoco_unc.testA", "refcoco+_unc.testA",
                  "grefcoco.testA", "nlvr2.test1", "attcoseg.test", "coseg.test"}  # fmt: skip
        assert all(key.split("/")[1].split("-")[0] in splits for key in trained), model
        assert {key.split("/")[2] for key in trained} == tasks, model
        assert all(isinstance(v, float) and 0.0 <= v <= 10.0 for v in trained.values())
    assert "coco.val2014-localization/localization/ap" in printed and "/rec/acc@0.5" in printed
    # The two models ran in their own processes (two cores here), each logging to its file.
    assert "Testing" in (out / "gpv1.log").read_text() and "Testing" in (out / "vistallm.log").read_text()
    assert json.loads((out / "data" / "shapesworld.json").read_text())["style"]["backgrounds"] == ["plain"]
    for model, tasks in TESTED_TASKS.items():
        trained = {p.name for p in (out / "pictures" / model / "trained").glob("*.png")}
        untrained = {p.name for p in (out / "pictures" / model / "untrained").glob("*.png")}
        assert trained == untrained and {name.split("_")[0] for name in trained} >= tasks
    page = (out / "index.html").read_text()
    assert f"open {(out / 'index.html').resolve()}" in printed
    for model, tasks in TESTED_TASKS.items():
        loss = json.loads((out / f"{model}_page.json").read_text())["curves"]
        assert loss and all(len(points) >= 2 for points in loss.values()), model  # --quick: 2-4 steps
        assert all(f"pictures/{model}/trained/{task}_" in page for task in tasks), model
    assert page.count("<polyline") >= 4  # two stages each: GPV-1's mixture and RefCOCO+, VistaLLM's 1 and 2
    # GPV-1's RefCOCO+ stage starts from the mixture's last checkpoint.
    mixture_ckpt = out / "gpv1" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"--init_weights={mixture_ckpt}" in (out / "gpv1.log").read_text()


@pytest.mark.parametrize("each_stage_tests_its_own", [False, True])
def test_fit_and_test_scores_each_loader_with_the_stage_model_asked_for(
    each_stage_tests_its_own: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    import lightning_gpv.cli
    import lightning_gpv.visualize.examples

    fits = iter(["untrained", "stage 1", "stage 2"])
    commands: list[list[str]] = []

    def fake_cli(args: list[str], run: bool = True, overwrite_config: bool = False) -> SimpleNamespace:
        commands.append(args)
        model = next(fits)
        checkpoint = SimpleNamespace(last_model_path=f"{model}/last.ckpt")
        trainer = SimpleNamespace(checkpoint_callback=checkpoint, callbacks=[])
        # Stage 1 tests localization and REC, stage 2 (REC fine-tuning) REC again.
        loaders = {"untrained": (), "stage 1": ("loc", "rec"), "stage 2": ("rec",)}[model]
        return SimpleNamespace(model=model, datamodule=loaders, trainer=trainer)

    def fake_test(model: str, loaders: tuple[str, ...], samples: int | None) -> dict[str, float]:
        return {
            f"test/{loader}": {"untrained": 0.0, "stage 1": 1.0, "stage 2": 2.0}[model] for loader in loaders
        }

    monkeypatch.setattr(lightning_gpv.cli, "run_lightning_cli", fake_cli)

    def fake_pictures(
        trained: str, untrained: str, loaders: tuple[str, ...], *args: object, **kwargs: object
    ) -> list[dict[str, str]]:
        return [{"task": loader, "trained_answer": trained} for loader in loaders]

    monkeypatch.setattr(lightning_gpv.visualize.examples, "compare_predictions", fake_pictures)
    monkeypatch.setattr(demo, "_test", fake_test)
    stages = [(Path("one.yaml"), ["--a"]), (Path("two.yaml"), ["--b"])]
    settings = demo.DemoSettings(quick=True)
    metrics = demo.fit_and_test(
        "m", stages, tmp_path, settings, each_stage_tests_its_own=each_stage_tests_its_own
    )

    assert commands[2] == ["fit", "-c", "two.yaml", "--b", "--init_weights=stage 1/last.ckpt"]
    own = {"test/loc": 1.0, "test/rec": 2.0}  # localization from stage 1, REC from the fine-tuned model
    assert metrics["trained"] == (own if each_stage_tests_its_own else {"test/loc": 2.0, "test/rec": 2.0})
    assert metrics["untrained"] == {"test/loc": 0.0, "test/rec": 0.0}
    # The page shows each task once, drawn by the model its metric comes from.
    rows = json.loads((tmp_path / "m_page.json").read_text())["examples"]
    drawn_by = "stage 1" if each_stage_tests_its_own else "stage 2"
    assert rows == [{"task": "loc", "trained_answer": drawn_by}, {"task": "rec", "trained_answer": "stage 2"}]


@pytest.mark.slow
def test_quick_demo_one_job_runs_the_models_in_turn(sequential_demo: tuple[Path, str]) -> None:
    out, _ = sequential_demo
    metrics = json.loads((out / "metrics.json").read_text())
    runs = {"trained", "untrained"}
    assert {model: set(results) for model, results in metrics.items()} == {"gpv1": runs, "vistallm": runs}
    assert not list(out.glob("*.log"))  # in-process: Lightning's own progress bars, no child logs


@pytest.mark.slow
def test_a_seed_gives_the_same_figures_with_either_jobs(
    parallel_demo: tuple[Path, str], sequential_demo: tuple[Path, str]
) -> None:
    """VistaLLM changes its thread count at a planned step, not when GPV-1 ends: the two runs repeat each
    other to the last bit, metrics and every training loss."""
    (parallel, _), (sequential, printed) = parallel_demo, sequential_demo
    switch = f"ThreadPlan: 2 torch threads from step {demo.QUICK_HANDOVER_STEP + 1}"
    assert switch in (parallel / "vistallm.log").read_text() and switch in printed
    metrics = [json.loads((out / "metrics.json").read_text()) for out in (parallel, sequential)]
    assert metrics[0] == metrics[1]
    for model in ("gpv1", "vistallm"):
        curves = [
            json.loads((out / f"{model}_page.json").read_text())["curves"] for out in (parallel, sequential)
        ]
        assert curves[0] == curves[1], model


@pytest.mark.parametrize(
    ("argv", "option"),
    [(["--threads", "0"], "--threads"), (["--epochs", "x"], "--epochs"),
     (["--test-samples", "-1"], "--test-samples"), (["--seed", "-3"], "--seed"),
     (["--num-images", "0"], "--num-images")],
)  # fmt: skip
def test_bad_arguments_are_named_before_anything_is_written(
    argv: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    assert f"argument {option}: expected an integer" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_thread_plan_takes_its_threads_after_its_step() -> None:
    threads = torch.get_num_threads()
    plan = demo.ThreadPlan(from_step=3, threads=2)
    try:
        torch.set_num_threads(1)
        plan.on_train_start(SimpleNamespace(global_step=0), None)
        for step in (1, 2):
            plan.on_train_batch_end(SimpleNamespace(global_step=step), None)
            assert torch.get_num_threads() == 1, step  # before the planned step
        plan.on_train_batch_end(SimpleNamespace(global_step=3), None)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        plan.on_train_start(SimpleNamespace(global_step=5), None)  # a fit resumed past the step
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="from_step"):
        demo.ThreadPlan(from_step=-1, threads=2)


def _descendants(pid: int) -> set[int]:
    """Process ids below ``pid`` (from /proc), children first."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent that does not reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the process tree")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_demo_stops_its_children_and_keeps_earlier_outputs(signum: int, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier run")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lightning_gpv.demo", "--quick", "--out", str(out), "--jobs", "2"]
    # A runner started in the background (`make test &`) hands its children SIGINT ignored, and Python
    # keeps an ignored SIGINT: the demo gets the disposition of a terminal's foreground job.
    demo_process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True,
                                    preexec_fn=_default_sigint)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not all((out / f"{name}.log").is_file() for name in ("gpv1", "vistallm")):  # children fitting
            assert demo_process.poll() is None and time.monotonic() < deadline, "the demo ended early"
            time.sleep(0.5)
        time.sleep(3)
        children = _descendants(demo_process.pid)
        assert len(children) >= 2
        demo_process.send_signal(signum)
        demo_process.wait(timeout=90)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [pid for pid in children if _running(pid)]
        assert demo_process.returncode != 0
    finally:
        if demo_process.poll() is None:
            demo_process.kill()
            demo_process.wait()
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    assert len(moved) == 1 and (moved[0] / "earlier.txt").read_text() == "an earlier run"
    assert not (out / "metrics.json").exists()  # no result written for a run that did not finish
