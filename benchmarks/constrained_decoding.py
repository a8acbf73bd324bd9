"""Constrained decoding of VistaLLM: parse failures and REC/RES quality with and without the grammar.

Tests one trained VistaLLM checkpoint twice on the ShapesWorld RefCOCO ``testA`` REC and RES loaders
(optionally VQA ``val2014``): once with plain greedy decoding and once with ``constrained_decoding``
(:mod:`lightning_gpv.models.vistallm.constraints`), and prints one row per setting: each task's
``parse_failure`` and ``well_formed`` rates, REC ``acc@0.5`` and RES mIoU (and VQA accuracy).

A checkpoint of the tiny recipe, trained briefly on a small ShapesWorld::

    lightning-gpv make-shapes --root /tmp/cd/data --num-images 3000 --seed 0 \\
        --max-objects 3 --backgrounds plain --sizes medium large
    python -c "from pathlib import Path; from lightning_gpv.demo import tiny_recipe; \\
        tiny_recipe('vistallm_shapes', Path('/tmp/cd/data'), None, Path('/tmp/cd/recipe.yaml'))"
    OMP_NUM_THREADS=1 lightning-gpv fit -c /tmp/cd/recipe.yaml --trainer.max_steps=1200 \\
        --trainer.default_root_dir=/tmp/cd/run
    .venv/bin/python benchmarks/constrained_decoding.py \\
        --ckpt /tmp/cd/run/lightning_logs/version_0/checkpoints/last.ckpt --data /tmp/cd/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer

from datamodules.multitask import MultiTaskDataModule
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from datamodules.vqav2 import VQAv2DataModule, VQAv2Options
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.metrics.evaluation import flatten_results
from lightning_gpv.systems.vistallm import VistaLLMModule

COLUMNS = {
    "rec": ("parse_failure", "well_formed", "acc@0.5"),
    "res": ("parse_failure", "well_formed", "mIoU"),
    "vqa": ("parse_failure", "well_formed", "accuracy"),
}
"""Reported metrics per task (the last part of the logged key ``test/{dataset}/{task}/{metric}``)."""


def test_data(root: Path, module: VistaLLMModule, batch_size: int, vqa: bool) -> MultiTaskDataModule:
    """The test loaders: RefCOCO ``testA`` REC and RES (and VQAv2 ``val2014``) of a ShapesWorld folder."""
    images = str(root / "coco" / "images" / "train2014")
    children = [
        RefCocoDataModule(
            str(root / "refcoco"),
            RefCocoOptions("refcoco", "unc", tasks=(task,), image_dir=images),  # type: ignore[arg-type]
            test_split="testA",
        )  # fmt: skip
        for task in ("rec", "res")
    ]
    if vqa:
        options = VQAv2Options(str(root / "coco" / "images" / "{split}"))
        children.append(VQAv2DataModule(str(root / "vqav2"), options, test_split="val2014"))
    return MultiTaskDataModule(children, batch_size=batch_size, processor=module.processor)


def evaluate(
    module: VistaLLMModule, data: MultiTaskDataModule, batches: int
) -> tuple[dict[str, float], float]:
    """The test metrics ``{task}/{metric}`` (first loader of each task) and the seconds it took."""
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      limit_test_batches=batches)  # fmt: skip
    start = time.perf_counter()
    results = flatten_results(trainer.test(module, datamodule=data, verbose=False))
    seconds = time.perf_counter() - start
    out: dict[str, float] = {}
    for key, value in results.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[2] in COLUMNS:
            out.setdefault(f"{parts[2]}/{parts[3]}", float(value))
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--ckpt", type=Path, required=True, help="VistaLLMModule checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="ShapesWorld folder (make-shapes --root)")
    parser.add_argument("--samples", type=int, default=256, help="test samples per task (the first ones)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vqa", action="store_true", help="also test VQA (text answers: no coordinates)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    module = VistaLLMModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    data = test_data(args.data, module, args.batch_size, args.vqa)
    batches = -(-args.samples // args.batch_size)
    rows = {}
    for constrained in (False, True):
        module.constrained_decoding = constrained
        rows["constrained" if constrained else "plain"] = evaluate(module, data, batches)

    tasks = [t for t in COLUMNS if any(key.startswith(f"{t}/") for key in rows["plain"][0])]
    header = [f"{t} {m}" for t in tasks for m in COLUMNS[t]]
    print(f"{args.ckpt} on {args.data}, first {batches * args.batch_size} test samples per task")
    print(f"{'decoding':<12}" + "".join(f"{h:>19}" for h in header) + f"{'seconds':>10}")
    for name, (metrics, seconds) in rows.items():
        values = [metrics.get(f"{t}/{m}", float("nan")) for t in tasks for m in COLUMNS[t]]
        print(f"{name:<12}" + "".join(f"{v:>19.3f}" for v in values) + f"{seconds:>10.1f}")


if __name__ == "__main__":
    main()
