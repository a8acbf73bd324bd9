"""Padding and CPU training throughput of the tiny VistaLLM recipe with random and with bucketed batches.

Builds the training data of ``recipes/tiny/vistallm_shapes.yaml`` (REC 48%, RES 40%, captioning, VQA and
NLVR2 4% each, batch 16) on a ShapesWorld folder, takes the first ``--batches`` batches of epoch 0 from the
loader without and with bucketing (the same draw: same seed, same indices), and reports

* the padding fraction of the LLM sequences: pad positions / all positions of ``input_ids``;
* batches that mix one- and two-image samples;
* training throughput of the tiny VistaLLM on CPU (forward, backward, AdamW, ``--threads`` threads) on
  ``--steps`` of those batches, spread evenly over them: real (non-pad) LLM tokens/s, samples/s, s/step.
  The two loaders' steps alternate, on two copies of one initialised model, so that load on the machine
  affects both alike; the batches are collated beforehand (the figure is the model's step).

Without ``--root`` a ShapesWorld set of 200 images (seed 0) is written into a temporary folder first.

    .venv/bin/python benchmarks/batching.py                       # 100 batches, 12 timed steps, 1 thread
    .venv/bin/python benchmarks/batching.py --root data/shapesworld --batches 420 --steps 30
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_gpv.cli import run_lightning_cli  # noqa: E402
from lightning_gpv.demo import tiny_recipe  # noqa: E402
from lightning_gpv.models.vistallm.processor import VistaLLMBatch  # noqa: E402


def first_batches(datamodule: Any, bucketing: bool, count: int) -> list[VistaLLMBatch]:
    """The first ``count`` training batches of epoch 0 with ``bucketing`` on or off."""
    datamodule.bucketing = bucketing
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def padding(batches: list[VistaLLMBatch]) -> tuple[float, float, int]:
    """Pad fraction of ``input_ids``, mean padded length, and batches mixing image counts."""
    positions = sum(b.attention_mask.numel() for b in batches)
    real = sum(int(b.attention_mask.sum()) for b in batches)
    mixed = sum(len(set(b.image_counts.tolist())) > 1 for b in batches)
    return 1 - real / positions, sum(b.input_ids.shape[1] for b in batches) / len(batches), mixed


def throughput(model: Any, runs: dict[str, list[VistaLLMBatch]], warmup: int) -> dict[str, dict[str, float]]:
    """Train one copy of ``model`` per entry of ``runs`` on its batches, alternating steps between them."""
    copies = {name: copy.deepcopy(model).train() for name in runs}
    optimizers = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
        for name, m in copies.items()
    }
    totals = {name: {"seconds": 0.0, "tokens": 0, "samples": 0} for name in runs}
    steps = min(len(b) for b in runs.values())
    for i in range(-warmup, steps):
        for name, batches in runs.items():
            batch = batches[max(i, 0)]
            start = time.perf_counter()
            loss = copies[name](**batch.model_inputs()).loss
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if i >= 0:
                totals[name]["seconds"] += time.perf_counter() - start
                totals[name]["tokens"] += int(batch.attention_mask.sum())
                totals[name]["samples"] += len(batch)
    return {
        name: {
            "tokens/s": t["tokens"] / t["seconds"],
            "samples/s": t["samples"] / t["seconds"],
            "s/step": t["seconds"] / steps,
        }
        for name, t in totals.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, help="a ShapesWorld folder (default: write 200 images)")
    parser.add_argument("--batches", type=int, default=100, help="batches of epoch 0 measured per loader")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per loader")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--pool", type=int, help="bucket_pool (default: the recipe's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            from lightning_gpv.shapesworld import make_shapes

            print("writing ShapesWorld (200 images, seed 0) ...")
            root = make_shapes(Path(tmp) / "shapes", num_images=200, seed=0, progress=False)
        else:
            root = args.root
        recipe = tiny_recipe("vistallm_shapes", Path(root), None, Path(tmp) / "vistallm.yaml")
        overrides = ["--trainer.logger=false"]
        if args.pool is not None:
            overrides.append(f"--data.init_args.bucket_pool={args.pool}")
        cli = run_lightning_cli(["-c", str(recipe), *overrides], run=False)
        datamodule, module = cli.datamodule, cli.model
        datamodule.setup("fit")
        start = time.perf_counter()
        datamodule.bucket_keys(datamodule.train_dataset())
        keys_s = time.perf_counter() - start
        runs = {
            "random batches": first_batches(datamodule, False, args.batches),
            "bucketed": first_batches(datamodule, True, args.batches),
        }
    every = max(1, len(runs["bucketed"]) // args.steps)
    timed = {name: batches[::every][: args.steps] for name, batches in runs.items()}
    torch.manual_seed(0)
    rates = throughput(module.model, timed, args.warmup)

    size = len(datamodule.train_dataset())
    print(
        f"tiny VistaLLM recipe, {root}: {size} training samples, batch {datamodule.batch_size}, "
        f"pool {datamodule.bucket_pool} batches; keys of all samples in {keys_s:.2f} s"
    )
    print(
        f"padding over the first {args.batches} batches of epoch 0; throughput over {len(timed['bucketed'])} "
        f"of them, {args.threads} thread(s), after {args.warmup} warm-up steps"
    )
    head = f"{'':16}{'padding':>9}{'mean T':>8}{'mixed':>7}{'tokens/s':>10}{'samples/s':>11}{'s/step':>8}"
    print(head)
    for name, batches in runs.items():
        pad, length, mixed = padding(batches)
        r = rates[name]
        print(
            f"{name:16}{pad:>9.3f}{length:>8.1f}{mixed:>7d}{r['tokens/s']:>10.0f}{r['samples/s']:>11.1f}"
            f"{r['s/step']:>8.3f}"
        )
    gain = rates["bucketed"]["tokens/s"] / rates["random batches"]["tokens/s"]
    print(f"bucketed / random tokens/s: {gain:.2f}x")


if __name__ == "__main__":
    main()
