"""GPV-1 training-step throughput on the CPU: samples/s of the tiny and the paper preset.

One step = forward (teacher-forced answers), :class:`~lightning_gpv.models.gpv1.losses.GPV1Criterion` on a
batch that mixes VQA and localization samples, backward, AdamW step. Weights are random (no download); the
inputs are synthetic tensors of the preset's image size (480 x 640 for the paper), a 12-token query and
5-token answers. Prints samples/s per wall-clock second and per CPU second of the process (the latter is
less sensitive to other load on a shared machine).

    python benchmarks/gpv1_throughput.py                          # tiny and paper, batch 1 and 2
    python benchmarks/gpv1_throughput.py --presets tiny --batch-sizes 8 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from lightning_gpv.models.gpv1 import GPV1, GPV1Config, GPV1Criterion


def synthetic_batch(config: GPV1Config, batch: int, query_len: int = 12, answer_len: int = 5) -> dict:
    """Random inputs and targets: the first half of the batch is VQA, the rest localization."""
    g = torch.Generator().manual_seed(0)
    h, w = config.image_size
    n_text = max(1, batch // 2) if batch > 1 else 1
    answers = torch.randint(4, config.vocab_size, (batch, answer_len), generator=g)
    answers[:, 0], answers[:, -1] = 1, 2  # __cls__ ... __stop__
    return {
        "pixel_values": torch.randn(batch, 3, h, w, generator=g),
        "input_ids": torch.randint(5, min(config.text.vocab_size, 1000), (batch, query_len), generator=g),
        "attention_mask": torch.ones(batch, query_len, dtype=torch.long),
        "answer_ids": answers,
        "tasks": ["vqa"] * n_text + ["localization"] * (batch - n_text),
        "has_text": torch.arange(batch) < n_text,
        "target_boxes": [torch.rand(2, 4, generator=g) * 0.4 + 0.3 for _ in range(batch)],
        "has_boxes": torch.arange(batch) >= n_text,
    }


def train_step(model: GPV1, criterion: GPV1Criterion, optimizer: torch.optim.Optimizer, b: dict) -> float:
    """One optimization step; returns the loss."""
    out = model(b["pixel_values"], b["input_ids"], b["attention_mask"], b["answer_ids"])
    loss = criterion(
        tasks=b["tasks"],
        answer_logits=out.answer_logits,
        answer_ids=b["answer_ids"],
        has_text=b["has_text"],
        relevance_logits=out.relevance_logits,
        boxes=out.boxes,
        target_boxes=b["target_boxes"],
        has_boxes=b["has_boxes"],
    )["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def measure(preset: str, batch: int, steps: int, warmup: int) -> tuple[float, float, int]:
    """``(samples/s wall, samples/s CPU, parameters)`` of ``steps`` timed steps after ``warmup`` steps."""
    torch.manual_seed(0)
    config = GPV1Config.paper() if preset == "paper" else GPV1Config.tiny()
    model = GPV1(config).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    criterion = GPV1Criterion()
    b = synthetic_batch(config, batch)
    for _ in range(warmup):
        train_step(model, criterion, optimizer, b)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step(model, criterion, optimizer, b)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batch * steps / wall, batch * steps / cpu, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=["tiny", "paper"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: 20 tiny, 3 paper)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on busy machines)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s)"
    )
    print(f"{'preset':8} {'batch':>5} {'params':>12} {'samples/s wall':>15} {'samples/s cpu':>14}")
    for preset in args.presets:
        steps = args.steps or (20 if preset == "tiny" else 3)
        for batch in args.batch_sizes:
            wall, cpu, n = measure(preset, batch, steps, args.warmup)
            print(f"{preset:8} {batch:>5} {n:>12,} {wall:>15.3f} {cpu:>14.3f}")


if __name__ == "__main__":
    main()
