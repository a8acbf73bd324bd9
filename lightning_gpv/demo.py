"""``make demo``: train and evaluate tiny GPV-1 and tiny VistaLLM on ShapesWorld through the Lightning CLI,
on a CPU.

``python -m lightning_gpv.demo [--out outputs/demo] [--quick]``:

1. generate ShapesWorld into ``OUT/data`` (``make_shapes``) and GPV-1's vocabularies into ``OUT/vocab``
   (:mod:`lightning_gpv.build_vocab`);
2. for each model, write ``OUT/<model>_recipe.yaml`` (``recipes/tiny/gpv1_shapes.yaml``,
   ``recipes/tiny/vistallm_shapes.yaml``, pointed at ``OUT``) and fit it with the CLI
   (``lightning-gpv fit -c OUT/<model>_recipe.yaml``, run in-process);
3. test the trained model and the untrained one (same seed, same recipe) on the test splits (ShapesWorld's
   ``val2014``, RefCOCO ``testA``, NLVR2 ``test1``), write ``OUT/metrics.json``
   (``{"gpv1": {"trained": {...}, "untrained": {...}}, "vistallm": {...}}``), print a table, and draw
   predictions (boxes, masks and text) into ``OUT/pictures/``.

An earlier ``OUT`` is never overwritten: it is moved to ``OUT-<timestamp>`` first (and the move printed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
GPV1_METRICS = {
    "vqa_accuracy": "test/vqa",
    "cider_d": "test/captioning",
    "localization_ap": "test/localization",
    "classification_accuracy": "test/classification",
}
"""metrics.json name -> the logged test metric of GPV1Module."""
VISTALLM_METRICS = {
    "cider_d": "test/captioning/cider",
    "vqa_accuracy": "test/vqa/accuracy",
    "rec_acc@0.5": "test/rec/acc@0.5",
    "res_miou": "test/res/mIoU",
    "nlvr2_accuracy": "test/nlvr2/accuracy",
}
"""metrics.json name -> the logged test metric of VistaLLMModule."""


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
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False)  # fmt: skip
    results = trainer.test(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for r in results for k, v in r.items()}


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


def fit_and_test(
    name: str, recipe: Path, overrides: list[str], metric_names: dict[str, str], out: Path, quick: bool
) -> dict[str, dict[str, float]]:
    """Fit ``recipe`` with the CLI, test the trained and the untrained model (same seed and recipe), and
    draw test predictions into ``out/pictures/<name>``; returns ``{"trained": ..., "untrained": ...}``
    with the metrics renamed by ``metric_names`` (metrics.json name -> logged test metric)."""
    print(f"\n== {name}: lightning-gpv fit -c {recipe} {' '.join(overrides)}")
    from lightning_gpv.cli import run_lightning_cli

    untrained = run_lightning_cli(["-c", str(recipe), *overrides], run=False, overwrite_config=True)
    trained = run_lightning_cli(["fit", "-c", str(recipe), *overrides], overwrite_config=True)
    print(f"== {name}: testing the trained and the untrained model")
    after = _test(trained.model, trained.datamodule)
    before = _test(untrained.model, untrained.datamodule)
    _pictures(trained.model, trained.datamodule, out / "pictures" / name, 2 if quick else 4)

    def named(metrics: dict[str, float]) -> dict[str, float]:
        return {label: metrics[key] for label, key in metric_names.items() if key in metrics}

    return {"trained": named(after), "untrained": named(before)}


def run_gpv1(out: Path, data: Path, quick: bool, epochs: int | None = None) -> dict[str, dict[str, float]]:
    """Build the vocabularies, fit tiny GPV-1 with the CLI, and test the trained and untrained models."""
    from lightning_gpv.build_vocab import build

    vocab = out / "vocab"
    build(vocab, coco_root=str(data / "coco"), vqa_root=str(data / "vqav2"), tiny=True)
    recipe = tiny_recipe("gpv1_shapes", data, vocab, out / "gpv1_recipe.yaml")
    overrides = [f"--trainer.default_root_dir={out / 'gpv1'}"]
    if epochs is not None:
        overrides.append(f"--trainer.max_epochs={epochs}")
    if quick:
        overrides += ["--trainer.max_steps=4", "--data.init_args.samples_per_epoch=32"]
    return fit_and_test("gpv1", recipe, overrides, GPV1_METRICS, out, quick)


def run_vistallm(
    out: Path, data: Path, quick: bool, epochs: int | None = None
) -> dict[str, dict[str, float]]:
    """Fit tiny VistaLLM (stage 1) with the CLI, and test the trained and untrained models."""
    recipe = tiny_recipe("vistallm_shapes", data, None, out / "vistallm_recipe.yaml")
    overrides = [f"--trainer.default_root_dir={out / 'vistallm'}"]
    if epochs is not None:
        overrides.append(f"--trainer.max_epochs={epochs}")
    if quick:
        overrides += ["--trainer.max_steps=4", "--data.init_args.samples_per_epoch=32",
                      "--model.init_args.max_new_tokens=24"]  # fmt: skip
    return fit_and_test("vistallm", recipe, overrides, VISTALLM_METRICS, out, quick)


def table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    rows = [f"{'model':<10} {'metric':<26} {'untrained':>10} {'trained':>10} {'gain':>8}"]
    for model, runs in metrics.items():
        for name, value in runs.get("trained", {}).items():
            base = runs.get("untrained", {}).get(name, float("nan"))
            rows.append(f"{model:<10} {name:<26} {base:>10.3f} {value:>10.3f} {value - base:>+8.3f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_gpv.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder (an earlier one is moved aside)")
    parser.add_argument("--num-images", type=int, default=300, help="ShapesWorld scenes (default 300)")
    parser.add_argument("--epochs", type=int, help="GPV-1 epochs of 300 steps (default: the recipe's 12)")
    parser.add_argument("--vistallm-epochs", type=int, help="VistaLLM epochs (default: the recipe's)")
    parser.add_argument("--quick", action="store_true", help="a few steps on 20 images (for tests)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)"
    )
    args = parser.parse_args(argv)

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
    data = make_shapes(out / "data", 20 if args.quick else args.num_images, seed=0, progress=True)
    metrics = {
        "gpv1": run_gpv1(out, Path(data), args.quick, args.epochs),
        "vistallm": run_vistallm(out, Path(data), args.quick, args.vistallm_epochs),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"\n{table(metrics)}\n")
    print(f"demo: metrics in {out / 'metrics.json'}, pictures in {out / 'pictures'}; "
          f"{time.monotonic() - start:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
