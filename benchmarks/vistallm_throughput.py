"""Training throughput of the tiny VistaLLM on CPU (stage 1, AdamW), in samples/s and tokens/s.

The batch mixes REC, VQA, RES and NLVR2 samples (random 320x240 images, real instructions and serialized
answers), encoded once beforehand: the figure is the model's step (forward, backward, AdamW), not the
data pipeline.

    .venv/bin/python benchmarks/vistallm_throughput.py --steps 30 --batch-size 16 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lightning_gpv.geometry import Mask
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.processor import VistaLLMItem
from lightning_gpv.systems.vistallm import VistaLLMModule
from lightning_gpv.tasks import Target, Task, TaskSample


def make_samples(n: int, seed: int = 0) -> list[TaskSample]:
    """``n`` samples cycling through REC, VQA, RES and NLVR2 (two images)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((240, 320), dtype=bool)
    mask[60:180, 80:220] = True
    out: list[TaskSample] = []
    for i in range(n):
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        kind = i % 4
        if kind == 0:
            target = Target(boxes=[[80, 60, 220, 180]])
            out.append(TaskSample(Task.REC, [image], target, expression="the red circle", sample_id=str(i)))
        elif kind == 1:
            target = Target(text="two", answers=["two"] * 10)
            out.append(TaskSample(Task.VQA, [image], target, question="How many shapes?", sample_id=str(i)))
        elif kind == 2:
            target = Target(masks=[Mask.from_array(mask)])
            out.append(TaskSample(Task.RES, [image], target, expression="the square", sample_id=str(i)))
        else:
            target = Target(text="True")
            out.append(
                TaskSample(Task.NLVR2, [image, image], target, question="Both are red.", sample_id=str(i))
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    module = VistaLLMModule(VistaLLMConfig.tiny(), load_weights=False, lr=1e-3)
    proc = module.processor
    items: list[VistaLLMItem] = [proc.encode(s, train=True) for s in make_samples(4 * args.batch_size)]
    batches = [proc.collate(items[i : i + args.batch_size]) for i in range(0, len(items), args.batch_size)]
    model = module.model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step(i: int) -> None:
        loss = model(**batches[i % len(batches)].model_inputs()).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    tokens = samples = 0
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
        batch = batches[i % len(batches)]
        tokens += int(batch.attention_mask.sum())
        samples += len(batch)
    elapsed = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"tiny VistaLLM, stage 1, {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters trained")
    print(f"batch {args.batch_size}, {args.steps} steps, {args.threads} thread(s), {elapsed:.1f} s")
    rate = f"{samples / elapsed:.1f} samples/s, {tokens / elapsed:.0f} LLM tokens/s"
    print(f"{rate}, {elapsed / args.steps:.3f} s/step")


if __name__ == "__main__":
    main()
