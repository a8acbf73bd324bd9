"""``make demo``: train and evaluate tiny GPV-1 and tiny VistaLLM on ShapesWorld through the Lightning CLI,
on a CPU.

``python -m lightning_gpv.demo [--out outputs/demo] [--quick]``:

1. generate a sparse ShapesWorld (:data:`STYLE`, 3,000 scenes) into ``OUT/data`` (``make_shapes``) and
   GPV-1's vocabularies into ``OUT/vocab`` (:mod:`lightning_gpv.build_vocab`);
2. for each model, write ``OUT/<model>_recipe.yaml`` (``recipes/tiny/gpv1_shapes.yaml``,
   ``recipes/tiny/vistallm_shapes.yaml``, pointed at ``OUT``) and fit it with the CLI
   (``lightning-gpv fit -c OUT/<model>_recipe.yaml``, run in-process; with ``--jobs 2``, the default on two
   or more cores, the two models run at the same time in two processes logging to ``OUT/<model>.log``);
3. test the trained model and the untrained one (same seed, same recipe) on the first 256 samples of each
   test split (ShapesWorld's ``val2014``, RefCOCO ``testA``, NLVR2 ``test1``), write ``OUT/metrics.json``
   (``{"gpv1": {"trained": {...}, "untrained": {...}}, "vistallm": {...}}``, each metric under its logged key
   ``test/{dataset}/{task}/{metric}``), print a table, and draw predictions (boxes, masks and text) into
   ``OUT/pictures/``.

An earlier ``OUT`` is never overwritten: it is moved to ``OUT-<timestamp>`` first (and the move printed).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_gpv.metrics.evaluation import flatten_results
from lightning_gpv.shapesworld import SceneStyle

RECIPES = Path(str(resources.files("lightning_gpv") / "recipes"))
"""The recipes shipped with the package (the repository's ``recipes/``; a wheel carries a copy)."""
STYLE = SceneStyle(max_objects=3, backgrounds=("plain",), sizes=("medium", "large"))
"""The demo's ShapesWorld: 1-3 medium or large objects on plain backgrounds, where tiny models trained from
scratch learn to localise in CPU minutes (in the full world VistaLLM's REC Acc@0.5 stays under 0.04 after
20 minutes of training, see docs/benchmarks.md)."""
TEST_SAMPLES = 256
"""Test samples per task loader (the first ones: test loaders do not shuffle), to bound the demo's time."""

NUM_IMAGES = 3000
Metrics = dict[str, dict[str, float]]

# Set in a demo child process (see ``run_parallel``): where StepReporter sends (model, phase, step, total),
# the shared count of models that are done, and the threads all the children share.
_REPORT: Any = None
_DONE: Any = None
_MODELS = 1
_THREADS = 1
_MODEL = ""
_CHECK_EVERY = 50
"""Training steps between two looks at ``_DONE`` (each look is a call to the parent's manager)."""


def _claim_free_threads() -> None:
    """Spread the children's threads over the models still running: when GPV-1 (the faster one) is done,
    VistaLLM takes its core (1.3x the steps per second with 2 threads)."""
    if _DONE is None:
        return
    import torch

    running = max(1, _MODELS - int(_DONE.value))
    threads = max(1, _THREADS * _MODELS // running)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class StepReporter(Callback):
    """Sends the training step of a demo child process to the parent, which draws the progress bars, and
    takes the threads of sibling processes that have finished."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if _REPORT is not None:
            _REPORT.put((_MODEL, "fit", trainer.global_step, trainer.estimated_stepping_batches))
        if trainer.global_step % _CHECK_EVERY == 0:
            _claim_free_threads()


def _report(phase: str) -> None:
    if _REPORT is not None:
        _REPORT.put((_MODEL, phase, 0, 0))
    _claim_free_threads()


def move_aside(out: Path) -> Path | None:
    """Move a non-empty ``out`` to ``out-<UTC timestamp>``; return the new path (None if nothing moved)."""
    from lightning_gpv import prediction_writer

    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    return prediction_writer.move_aside(out, prediction_writer.utc_stamp())


def tiny_recipe(name: str, data: Path, vocab: Path | None, path: Path) -> Path:
    """Copy ``recipes/tiny/<name>.yaml`` to ``path`` with its data (and vocabulary) folders replaced."""
    text = (RECIPES / "tiny" / f"{name}.yaml").read_text(encoding="utf-8")
    if vocab is not None:
        text = text.replace("data/shapesworld/gpv1_vocab", vocab.as_posix())
    text = text.replace("data/shapesworld", data.as_posix())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _test(model: Any, datamodule: Any) -> dict[str, float]:
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_model_summary=False,
                      limit_test_batches=-(-TEST_SAMPLES // datamodule.batch_size))  # fmt: skip
    results = flatten_results(trainer.test(model, datamodule=datamodule, verbose=False))
    return {key: value for key, value in results.items() if is_quality_metric(key)}


def _pictures(model: Any, datamodule: Any, folder: Path, per_task: int, scan: int = 200) -> list[Path]:
    """Draw ``per_task`` test predictions of every task (boxes, masks, text, targets) into ``folder``.

    Works for any system with a ``processor`` and a ``predict_step`` returning ``Prediction`` objects:
    samples are read from each test loader's dataset, encoded and collated by the model's processor.
    """
    import torch

    from lightning_gpv.visualize import draw_prediction_for, save_image

    model.eval()
    paths: list[Path] = []
    for loader in datamodule.test_dataloader():
        dataset = loader.dataset
        chosen: dict[str, list[Any]] = {}
        for index in range(min(len(dataset), scan)):
            sample = dataset.sample(index)
            group = chosen.setdefault(sample.task.value, [])
            if len(group) < per_task:
                group.append(sample)
        samples = [s for group in chosen.values() for s in group]
        if not samples:
            continue
        processor = model.processor
        batch = processor.collate([processor.encode(s, train=False) for s in samples])
        with torch.no_grad():
            predictions = model.predict_step(batch, 0)  # the demo runs on the CPU
        for sample, prediction in zip(samples, predictions):
            name = f"{sample.task.value}_{sample.sample_id}".replace("/", "_")
            paths.append(save_image(draw_prediction_for(sample, prediction), folder / f"{name}.png"))
    return paths


def is_quality_metric(key: str) -> bool:
    """Whether a logged test key (``test/{dataset}/{task}/{metric}``) scores answers: not a loss and not a
    parse rate."""
    parts = key.split("/")
    rates = ("parse_failure", "well_formed")
    return len(parts) == 4 and not parts[3].startswith("loss") and parts[3] not in rates


def fit_and_test(name: str, recipe: Path, overrides: list[str], out: Path, quick: bool) -> Metrics:
    """Fit ``recipe`` with the CLI, test the trained and the untrained model (same seed and recipe), and
    draw test predictions into ``out/pictures/<name>``; returns ``{"trained": ..., "untrained": ...}``,
    each ``{"test/{dataset}/{task}/{metric}": value}``."""
    print(f"\n== {name}: lightning-gpv fit -c {recipe} {' '.join(overrides)}")
    from lightning_gpv.cli import run_lightning_cli

    untrained = run_lightning_cli(["-c", str(recipe), *overrides], run=False, overwrite_config=True)
    trained = run_lightning_cli(["fit", "-c", str(recipe), *overrides], overwrite_config=True)
    print(f"== {name}: testing the trained and the untrained model")
    _report("test")
    after = _test(trained.model, trained.datamodule)
    before = _test(untrained.model, untrained.datamodule)
    _report("pictures")
    _pictures(trained.model, trained.datamodule, out / "pictures" / name, 2 if quick else 4)

    return {"trained": after, "untrained": before}


def _progress_overrides(bars: bool) -> list[str]:
    """CLI overrides that replace Lightning's progress bar by :class:`StepReporter` (``bars=False``)."""
    return (
        []
        if bars
        else ["--trainer.enable_progress_bar=false", f"--trainer.callbacks+={__name__}.StepReporter"]
    )


def run_gpv1(out: Path, data: Path, quick: bool, epochs: int | None = None, bars: bool = True) -> Metrics:
    """Build the vocabularies, fit tiny GPV-1 with the CLI, and test the trained and untrained models."""
    from lightning_gpv.build_vocab import build

    vocab = out / "vocab"
    build(vocab, coco_root=str(data / "coco"), vqa_root=str(data / "vqav2"), tiny=True)
    recipe = tiny_recipe("gpv1_shapes", data, vocab, out / "gpv1_recipe.yaml")
    overrides = [f"--trainer.default_root_dir={out / 'gpv1'}", *_progress_overrides(bars)]
    if epochs is not None:
        overrides.append(f"--trainer.max_epochs={epochs}")
    if quick:
        overrides += ["--trainer.max_steps=4", "--data.init_args.samples_per_epoch=32"]
    return fit_and_test("gpv1", recipe, overrides, out, quick)


def run_vistallm(out: Path, data: Path, quick: bool, epochs: int | None = None, bars: bool = True) -> Metrics:
    """Fit tiny VistaLLM (stage 1) with the CLI, and test the trained and untrained models."""
    recipe = tiny_recipe("vistallm_shapes", data, None, out / "vistallm_recipe.yaml")
    overrides = [f"--trainer.default_root_dir={out / 'vistallm'}", *_progress_overrides(bars)]
    if epochs is not None:
        overrides.append(f"--trainer.max_epochs={epochs}")
    if quick:
        overrides += ["--trainer.max_steps=4", "--data.init_args.samples_per_epoch=32",
                      "--model.init_args.max_new_tokens=24"]  # fmt: skip
    return fit_and_test("vistallm", recipe, overrides, out, quick)


RUNNERS: dict[str, Callable[..., Metrics]] = {"gpv1": run_gpv1, "vistallm": run_vistallm}


def _init_child(report: Any, done: Any, models: int, threads: int) -> None:
    global _REPORT, _DONE, _MODELS, _THREADS
    _REPORT, _DONE, _MODELS, _THREADS = report, done, models, threads
    import torch

    torch.set_num_threads(threads)


def _child(name: str, out: Path, data: Path, quick: bool, epochs: int | None) -> Metrics:
    """One model's part in a child process; everything it prints goes to ``OUT/<name>.log``."""
    global _MODEL
    _MODEL = name
    log = open(out / f"{name}.log", "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the process)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log.fileno(), 1)  # also what C extensions and warnings write
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    return RUNNERS[name](out, data, quick, epochs, bars=False)


def _child_main(name: str, args: tuple[Any, ...], shared: tuple[Any, ...], results: Any) -> None:
    """A demo child process: ``_child(name, *args)``, its metrics (or its error) put on ``results``."""
    _init_child(*shared)
    try:
        metrics = _child(name, *args)
    except BaseException as err:
        results.put((name, None, repr(err)))
        raise
    results.put((name, metrics, None))


def _stop(processes: Sequence[Any], grace: float = 20.0) -> None:
    """Stop the children still running: SIGTERM (Lightning ends the fit at the next step), SIGKILL after
    ``grace`` seconds."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def run_parallel(
    epochs: dict[str, int | None], out: Path, data: Path, quick: bool, threads: int
) -> dict[str, Metrics]:
    """Run the models of ``epochs`` (name -> epochs or None) at the same time, one process each.

    The tiny models use ``threads`` threads each (one core each on a 2-core machine), and a model still
    running takes the threads of those that are done. Each child's output goes to ``OUT/<name>.log``; here
    one progress bar per model shows its training steps. However this function ends (a child's error,
    Ctrl-C, the SIGTERM that :func:`main` turns into ``SystemExit``), no child outlives it.
    """
    import multiprocessing as mp

    from tqdm.auto import tqdm

    ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
    print(
        f"demo: fitting {', '.join(epochs)} in parallel; logs in "
        + ", ".join(str(out / f"{n}.log") for n in epochs)
    )
    with ctx.Manager() as manager:
        report, results = manager.Queue(), manager.Queue()
        done = manager.Value("i", 0)
        shared = (report, done, len(epochs), threads)
        processes = {
            name: ctx.Process(target=_child_main, args=(name, (out, data, quick, n), shared, results),
                              name=f"demo-{name}")
            for name, n in epochs.items()
        }  # fmt: skip
        outcomes: dict[str, tuple[Metrics | None, str | None]] = {}
        try:
            for process in processes.values():
                process.start()
            bars = {
                name: tqdm(desc=name, position=k, unit="step", dynamic_ncols=True)
                for k, name in enumerate(processes)
            }
            while len(outcomes) < len(processes):
                _collect(results, outcomes)
                for name, process in processes.items():
                    if name not in outcomes and not process.is_alive():
                        _collect(results, outcomes)  # its result may have arrived as it exited
                        outcomes.setdefault(name, (None, f"exit code {process.exitcode}"))
                done.value = len(outcomes)
                try:
                    name, phase, step, total = report.get(timeout=0.5)
                except queue.Empty:
                    continue
                bar = bars[name]
                if phase == "fit":
                    bar.total, bar.n = total, step
                    bar.refresh()
                else:
                    bar.set_postfix_str(phase)
            for bar in bars.values():
                bar.close()
        finally:
            _stop(list(processes.values()))
    for name, (_, error) in outcomes.items():
        if error is not None:
            raise RuntimeError(f"demo: {name} failed: {error}; see {out / f'{name}.log'}")
    return {name: metrics for name, (metrics, _) in outcomes.items() if metrics is not None}


def _collect(results: Any, outcomes: dict[str, tuple[Metrics | None, str | None]]) -> None:
    """Move every ``(name, metrics, error)`` waiting on ``results`` into ``outcomes``."""
    while True:
        try:
            name, metrics, error = results.get_nowait()
        except queue.Empty:
            return
        outcomes[name] = (metrics, error)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM as ``SystemExit``, so the demo's clean-up (stopping its children) runs."""
    raise SystemExit(128 + signum)


def table(metrics: dict[str, Metrics]) -> str:
    """Untrained, trained and gain per model and logged metric key (``test/`` left out)."""
    names = [name.removeprefix("test/") for runs in metrics.values() for name in runs.get("trained", {})]
    width = max([26, *map(len, names)])
    rows = [f"{'model':<10} {'metric':<{width}} {'untrained':>10} {'trained':>10} {'gain':>8}"]
    for model, runs in metrics.items():
        for name, value in sorted(runs.get("trained", {}).items()):
            base = runs.get("untrained", {}).get(name, float("nan"))
            label = name.removeprefix("test/")
            rows.append(f"{model:<10} {label:<{width}} {base:>10.3f} {value:>10.3f} {value - base:>+8.3f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lightning_gpv.demo`` (``make demo``); SIGTERM stops it like Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m lightning_gpv.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder (an earlier one is moved aside)")
    parser.add_argument(
        "--num-images", type=int, default=NUM_IMAGES, help=f"ShapesWorld scenes (default {NUM_IMAGES})"
    )
    parser.add_argument("--epochs", type=int, help="GPV-1 epochs of 300 steps (default: the recipe's 24)")
    parser.add_argument("--vistallm-epochs", type=int, help="VistaLLM epochs (default: the recipe's)")
    parser.add_argument("--quick", action="store_true", help="a few steps on 20 images (for tests)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per model (1 is fastest on 2 shared cores)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2 if (os.cpu_count() or 1) > 1 else 1,
        help="2: fit the two models at the same time, one process each (default with 2+ cores)",
    )
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """The demo's steps for parsed arguments (see the module docstring)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from lightning_gpv.shapesworld import make_shapes

    torch.set_num_threads(args.threads)
    start = time.monotonic()
    out = Path(args.out)
    moved = move_aside(out)
    if moved is not None:
        print(f"demo: the earlier run in {out} was moved to {moved}")
    out.mkdir(parents=True)
    num_images = 20 if args.quick else args.num_images
    data = Path(make_shapes(out / "data", num_images, seed=0, progress=True, style=STYLE))
    epochs = {"gpv1": args.epochs, "vistallm": args.vistallm_epochs}
    if args.jobs == 2:
        metrics = run_parallel(epochs, out, data, args.quick, args.threads)
    else:
        metrics = {name: RUNNERS[name](out, data, args.quick, n) for name, n in epochs.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"\n{table(metrics)}\n")
    print(f"demo: metrics in {out / 'metrics.json'}, pictures in {out / 'pictures'}; "
          f"{time.monotonic() - start:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    # Through the package module, not ``__main__``: the child processes and the CLI's StepReporter must
    # see the same module globals.
    from lightning_gpv.demo import main as package_main

    raise SystemExit(package_main())
