"""``make demo``: train and evaluate tiny GPV-1 and tiny VistaLLM on ShapesWorld through the Lightning CLI,
on a CPU.

``python -m lightning_gpv.demo [--out outputs/demo] [--seed 0] [--test-samples 256] [--quick]``:

1. generate a sparse ShapesWorld (:data:`STYLE`, 3,000 scenes) into ``OUT/data`` (``make_shapes``) and
   GPV-1's vocabularies into ``OUT/vocab`` (:mod:`lightning_gpv.build_vocab`);
2. fit the tiny recipes with the CLI (``lightning-gpv fit -c OUT/<recipe>.yaml``, copies of
   ``recipes/tiny/*.yaml`` pointed at ``OUT``): GPV-1 (``gpv1_shapes``, its DETR pretrained and frozen for the
   first epochs) then its RefCOCO+ fine-tuning (``gpv1_shapes_refcocoplus``), and VistaLLM stage 1
   (``vistallm_shapes``, single-image tasks, the image encoder frozen) then stage 2
   (``vistallm_shapes_stage2``, multi-image tasks, only the tokenizer trains), both models starting from the
   weights the package ships (``docs/pretrained.md``). With ``--jobs 2``, the default on two or more
   cores, the two models run at the same time in two processes logging to ``OUT/<model>.log``;
3. test the trained models (each task on the model of the last stage that trained it for GPV-1, the final
   model for VistaLLM) and the untrained one (same seed, same recipe) on the first ``--test-samples`` of
   each test split, write ``OUT/metrics.json`` (``{"gpv1": {"trained": {...}, "untrained": {...}},
   "vistallm": {...}}``, each metric under its logged key ``test/{dataset}/{task}/{metric}``), print a table,
   draw both models' predictions into ``OUT/pictures/<model>/{trained,untrained}/`` and write the page
   ``OUT/index.html`` (per task: metrics, pictures side by side, ground truth; the loss curves).

An earlier ``OUT`` is never overwritten: it is moved to ``OUT-<timestamp>`` first (and the move printed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_gpv.demo_processes import StepReporter, report_phase, run_parallel
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.metrics.evaluation import flatten_results
from lightning_gpv.shapesworld.sample import SPARSE_STYLE

RECIPES = Path(str(resources.files("lightning_gpv") / "recipes"))
"""The recipes shipped with the package (the repository's ``recipes/``; a wheel carries a copy)."""
STYLE = SPARSE_STYLE
"""The demo's ShapesWorld: 1-3 medium or large objects on plain backgrounds, where tiny models trained from
scratch learn to localise in CPU minutes (in the full world VistaLLM's REC Acc@0.5 stays under 0.04 after
20 minutes of training, see docs/benchmarks.md)."""
TEST_SAMPLES = 256
"""Test samples per task loader (the first ones: test loaders do not shuffle), to bound the demo's time;
``--test-samples 0`` tests whole splits."""
QUICK_TEST_SAMPLES = 32
"""Test samples per task loader with ``--quick``."""

NUM_IMAGES = 3000
HANDOVER_STEP = 1800
"""VistaLLM's stage-1 training step from which it runs on GPV-1's threads as well as its own: with the
default options GPV-1 (trained, tested and drawn) is done by about then (step 1,750 of 4,200 with ``--jobs
2`` on 2 cores, a ratio of the two models' speeds that a faster or slower machine keeps). The step is fixed
in advance, not read from GPV-1's progress, because torch adds up in another order on two threads than on
one: a hand-over whenever GPV-1 ends would make a seed's figures depend on the machine's speed and on
``--jobs``. The price is time, never figures: where GPV-1 runs longer (more ``--epochs`` or scenes,
``--test-samples 0``) both models share the cores for a while, and on one core VistaLLM runs two threads."""
QUICK_HANDOVER_STEP = 2
""":data:`HANDOVER_STEP` with ``--quick`` (4 steps a fit)."""
Metrics = dict[str, dict[str, float]]


@dataclass(frozen=True)
class DemoSettings:
    """What every model's part of the demo shares.

    Attributes:
        quick: A few steps on the tiny world (for tests).
        seed: ``seed_everything`` of every fit (the world itself is always generated with seed 0).
        test_samples: Test samples per task loader (the first ones); ``None``: whole test splits.
        threads: Torch threads of each model; VistaLLM takes GPV-1's as well from :attr:`handover_step` on,
            with either ``--jobs``.
    """

    quick: bool = False
    seed: int = 0
    test_samples: int | None = None
    threads: int = 1

    @property
    def handover_step(self) -> int:
        """VistaLLM's stage-1 step from which it runs on both models' threads."""
        return QUICK_HANDOVER_STEP if self.quick else HANDOVER_STEP


class ThreadPlan(Callback):
    """After ``from_step`` training steps of a fit, run on ``threads`` torch threads (a process-wide
    setting, kept after the fit; a fit resumed past ``from_step`` takes them at its start).

    Args:
        from_step: Global steps done before the thread count changes (0: from the first step).
        threads: Torch threads from then on.
    """

    def __init__(self, from_step: int, threads: int) -> None:
        if from_step < 0 or threads < 1:
            raise ValueError(f"ThreadPlan: from_step must be >= 0 and threads >= 1 ({from_step}, {threads})")
        self.from_step = from_step
        self.threads = threads

    def _follow(self, step: int) -> None:
        if step >= self.from_step and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
            print(f"ThreadPlan: {self.threads} torch threads from step {step + 1}", flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._follow(trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._follow(trainer.global_step)


class LossHistory(Callback):
    """Keeps ``(global step, training loss)`` of every step, for the demo page's curves."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.points.append((int(trainer.global_step), float(loss)))


def move_aside(out: Path) -> Path | None:
    """Move a non-empty ``out`` to ``out-<UTC timestamp>``; return the new path (None if nothing moved)."""
    from lightning_gpv import prediction_writer

    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    return prediction_writer.move_aside(out, prediction_writer.utc_stamp())


def tiny_recipe(name: str, data: Path, vocab: Path | None, path: Path, outputs: Path | None = None) -> Path:
    """Copy ``recipes/tiny/<name>.yaml`` to ``path`` with its data (and vocabulary) folders replaced, and its
    ``outputs/tiny_<model>`` folders (checkpoints, the stage-1 checkpoint a stage-2 recipe starts from) moved
    to ``<outputs>/<model>`` (``outputs`` defaults to the copy's folder)."""
    text = (RECIPES / "tiny" / f"{name}.yaml").read_text(encoding="utf-8")
    if vocab is not None:
        text = text.replace("data/shapesworld/gpv1_vocab", vocab.as_posix())
    text = text.replace("data/shapesworld", data.as_posix())
    outputs = path.parent if outputs is None else outputs
    text = text.replace("outputs/tiny_", f"{outputs.as_posix()}/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _test(model: Any, datamodule: Any, samples: int | None) -> dict[str, float]:
    limit = 1.0 if samples is None else -(-samples // datamodule.batch_size)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_model_summary=False, limit_test_batches=limit)  # fmt: skip
    results = flatten_results(trainer.test(model, datamodule=datamodule, verbose=False))
    return {key: value for key, value in results.items() if is_quality_metric(key)}


def is_quality_metric(key: str) -> bool:
    """Whether a logged test key (``test/{dataset}/{task}/{metric}``) scores answers: not a loss and not a
    parse rate."""
    parts = key.split("/")
    rates = ("parse_failure", "well_formed")
    return len(parts) == 4 and not parts[3].startswith("loss") and parts[3] not in rates


def _loss_points(cli: Any) -> list[tuple[int, float]]:
    return next((c.points for c in cli.trainer.callbacks if isinstance(c, LossHistory)), [])


def fit_and_test(
    name: str,
    stages: list[tuple[Path, list[str]]],
    out: Path,
    settings: DemoSettings,
    *,
    each_stage_tests_its_own: bool = False,
) -> Metrics:
    """Fit the recipes of ``stages`` (``(recipe, CLI overrides)``; a later one starts from the earlier one's
    ``last.ckpt`` through ``--init_weights``), then test the trained models and the untrained one (the first
    recipe, same seed) on every stage's test loaders, draw both models' predictions into
    ``out/pictures/<name>`` and write ``out/<name>_page.json`` (loss curves and example rows for the page).

    The final model answers every stage's loaders (VistaLLM: one model for all tasks); with
    ``each_stage_tests_its_own`` each stage's model answers its own stage's loaders, a later stage's scores
    replacing an earlier one's for the same loader (GPV-1: the paper reports RefCOCO+ from a model fine-tuned
    on it, the COCO tasks from the model before).

    Returns ``{"trained": ..., "untrained": ...}``, each ``{"test/{dataset}/{task}/{metric}": value}``.
    """
    from lightning_gpv.cli import run_lightning_cli
    from lightning_gpv.visualize.examples import compare_predictions

    torch.set_num_threads(settings.threads)  # whichever model ran before in this process
    first, first_overrides = stages[0]
    untrained = run_lightning_cli(["-c", str(first), *first_overrides], run=False, overwrite_config=True)
    fits: list[Any] = []
    for k, (recipe, overrides) in enumerate(stages, start=1):
        if fits:
            overrides = [*overrides, f"--init_weights={fits[-1].trainer.checkpoint_callback.last_model_path}"]
        print(
            f"\n== {name} (stage {k} of {len(stages)}): lightning-gpv fit -c {recipe} {' '.join(overrides)}"
        )
        fits.append(run_lightning_cli(["fit", "-c", str(recipe), *overrides], overwrite_config=True))
    print(f"== {name}: testing the trained and the untrained model")
    report_phase("test")
    answering = [fit.model if each_stage_tests_its_own else fits[-1].model for fit in fits]
    after: dict[str, float] = {}
    before: dict[str, float] = {}
    for fit, trained in zip(fits, answering):
        after |= _test(trained, fit.datamodule, settings.test_samples)
        before |= _test(untrained.model, fit.datamodule, settings.test_samples)
    report_phase("pictures")
    examples: list[dict[str, Any]] = []
    for fit, trained in reversed(list(zip(fits, answering))):
        # A task a later stage drew again (its pictures replaced) keeps only the later stage's rows.
        drawn = {row["task"] for row in examples}
        rows = compare_predictions(trained, untrained.model, fit.datamodule, out / "pictures" / name,
                                   per_task=2 if settings.quick else 3)  # fmt: skip
        examples = [row for row in rows if row["task"] not in drawn] + examples
    curves = {
        f"stage {k}" if len(fits) > 1 else "training": _loss_points(fit) for k, fit in enumerate(fits, 1)
    }
    page = {"curves": curves, "examples": examples}
    (out / f"{name}_page.json").write_text(json.dumps(page, indent=1) + "\n", encoding="utf-8")
    return {"trained": after, "untrained": before}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _common_overrides(bars: bool, settings: DemoSettings) -> list[str]:
    """CLI overrides of every fit: the seed, :class:`LossHistory`, and :class:`StepReporter` instead of
    Lightning's progress bar (``bars=False``)."""
    history = [f"--seed_everything={settings.seed}", f"--trainer.callbacks+={_class_path(LossHistory)}"]
    if bars:
        return history
    return [
        *history,
        "--trainer.enable_progress_bar=false",
        f"--trainer.callbacks+={_class_path(StepReporter)}",
    ]


def _thread_plan(from_step: int, threads: int) -> str:
    """The CLI override that adds a :class:`ThreadPlan` to a fit's callbacks."""
    plan = {"class_path": _class_path(ThreadPlan), "init_args": {"from_step": from_step, "threads": threads}}
    return f"--trainer.callbacks+={json.dumps(plan, separators=(',', ':'))}"


def run_gpv1(
    out: Path, data: Path, settings: DemoSettings, epochs: int | None = None, bars: bool = True
) -> Metrics:
    """Build the vocabularies, fit tiny GPV-1 with the CLI on its five-task mixture, then fine-tune it on
    RefCOCO+, and test the trained (each task on the model of the last stage that trained it) and untrained
    models."""
    from lightning_gpv.build_vocab import build

    vocab = out / "vocab"
    build(vocab, coco_root=str(data / "coco"), vqa_root=str(data / "vqav2"), tiny=True)
    mixture = tiny_recipe("gpv1_shapes", data, vocab, out / "gpv1_recipe.yaml", out)
    refcocoplus = tiny_recipe(
        "gpv1_shapes_refcocoplus", data, vocab, out / "gpv1_refcocoplus_recipe.yaml", out
    )
    first = [f"--trainer.default_root_dir={out / 'gpv1'}", *_common_overrides(bars, settings)]
    second = [f"--trainer.default_root_dir={out / 'gpv1_refcocoplus'}", *_common_overrides(bars, settings)]
    if epochs is not None:
        first.append(f"--trainer.max_epochs={epochs}")
    if settings.quick:
        short = ["--trainer.max_steps=4", "--data.init_args.samples_per_epoch=32"]
        first, second = first + short, second + short
    stages = [(mixture, first), (refcocoplus, second)]
    return fit_and_test("gpv1", stages, out, settings, each_stage_tests_its_own=True)


def run_vistallm(
    out: Path, data: Path, settings: DemoSettings, epochs: int | None = None, bars: bool = True
) -> Metrics:
    """Fit tiny VistaLLM with the CLI, stage 1 (single-image tasks, image encoder frozen) then stage 2
    (multi-image tasks, only the tokenizer trains), and test the trained and untrained models."""
    stage1 = tiny_recipe("vistallm_shapes", data, None, out / "vistallm_recipe.yaml", out)
    stage2 = tiny_recipe("vistallm_shapes_stage2", data, None, out / "vistallm_stage2_recipe.yaml", out)
    both = len(RUNNERS) * settings.threads  # GPV-1's threads and its own
    first = [f"--trainer.default_root_dir={out / 'vistallm'}", *_common_overrides(bars, settings),
             _thread_plan(settings.handover_step, both)]  # fmt: skip
    second = [f"--trainer.default_root_dir={out / 'vistallm_stage2'}", *_common_overrides(bars, settings),
              _thread_plan(0, both)]  # fmt: skip
    if epochs is not None:
        first.append(f"--trainer.max_epochs={epochs}")
    if settings.quick:
        short = ["--trainer.max_steps=4", "--data.init_args.samples_per_epoch=32",
                 "--model.init_args.max_new_tokens=24"]  # fmt: skip
        first, second = first + short, second + short
    return fit_and_test("vistallm", [(stage1, first), (stage2, second)], out, settings)


RUNNERS: dict[str, Callable[..., Metrics]] = {"gpv1": run_gpv1, "vistallm": run_vistallm}


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


def _integer(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[least, most]`` (argparse names the option when it is not)."""
    expected = f"an integer >= {least}" if most is None else f"an integer from {least} to {most}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < least or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lightning_gpv.demo`` (``make demo``); SIGTERM stops it like Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_gpv.demo", description=first_paragraph(__doc__)
    )
    parser.add_argument("--out", default="outputs/demo", help="output folder (an earlier one is moved aside)")
    positive = _integer(1)
    parser.add_argument(
        "--num-images", type=positive, default=NUM_IMAGES, help=f"ShapesWorld scenes (default {NUM_IMAGES})"
    )
    parser.add_argument("--epochs", type=positive, help="GPV-1 epochs of 300 steps (default: 24)")
    parser.add_argument("--vistallm-epochs", type=positive, help="VistaLLM epochs (default: the recipe's)")
    parser.add_argument("--quick", action="store_true", help="a few steps on 20 images (for tests)")
    seed = _integer(0, 2**32 - 1)  # numpy's range, which seed_everything seeds as well
    parser.add_argument("--seed", type=seed, default=0, help="training seed of both models (default 0)")
    parser.add_argument(
        "--test-samples",
        type=_integer(0),
        help=f"test samples per task (default {TEST_SAMPLES}, 32 with --quick; 0: whole test splits)",
    )
    parser.add_argument(
        "--threads",
        type=positive,
        default=1,
        help="torch threads per model (1 is fastest on 2 shared cores); VistaLLM takes GPV-1's as well from "
        f"its stage-1 step {HANDOVER_STEP} on ({QUICK_HANDOVER_STEP} with --quick), with either --jobs",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2 if (os.cpu_count() or 1) > 1 else 1,
        help="2: fit the two models at the same time, one process each (default with 2+ cores)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
    from lightning_gpv.shapesworld import make_shapes
    from lightning_gpv.visualize.page import write_demo_page

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
    samples = args.test_samples
    if samples is None:
        samples = QUICK_TEST_SAMPLES if args.quick else TEST_SAMPLES
    settings = DemoSettings(
        quick=args.quick, seed=args.seed, test_samples=samples or None, threads=args.threads
    )
    if args.jobs == 2:
        jobs = {name: (RUNNERS[name], (out, data, settings, n)) for name, n in epochs.items()}
        metrics = run_parallel(jobs, out)
    else:
        metrics = {name: RUNNERS[name](out, data, settings, n) for name, n in epochs.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    seconds = time.monotonic() - start
    page = write_demo_page(out, metrics, [f"python -m lightning_gpv.demo {' '.join(args.argv)}".strip(),
                                          f"{seconds:.0f} s on {os.cpu_count()} CPU cores"])  # fmt: skip
    print(f"\n{table(metrics)}\n")
    print(f"demo: metrics in {out / 'metrics.json'}, pictures in {out / 'pictures'}; {seconds:.0f} s")
    print(f"demo: open {page.resolve()} for the pictures and the loss curves")
    return 0


if __name__ == "__main__":
    # Through the package module, not ``__main__``: the callbacks' class paths go into each fit's saved
    # config.yaml (``__main__.LossHistory`` would not load again with ``lightning-gpv fit -c``), the child
    # processes unpickle the runners by that name, and ``_loss_points`` needs one copy of LossHistory.
    from lightning_gpv.demo import main as package_main

    raise SystemExit(package_main())
