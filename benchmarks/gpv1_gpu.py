"""GPV-1 paper preset on a CUDA GPU in bf16: training samples/s and peak memory (needs a GPU).

Random weights (no download), synthetic 480 x 640 images, 12-token queries, 5-token answers, half VQA and
half localization samples (see ``benchmarks/gpv1_throughput.py``); ``torch.autocast(bfloat16)`` around
forward and loss, fp32 master weights, AdamW. The paper trained with batch 120 on 4 GPUs (30 per GPU) or
on one 80 GB A100 ("slightly under 60GB" in fp32).

    python benchmarks/gpv1_gpu.py                        # batch 8, 16, 30
    python benchmarks/gpv1_gpu.py --batch-sizes 30 60 --steps 20
    python benchmarks/gpv1_gpu.py --eval                 # inference: encode + greedy decoding of 5 tokens
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpv1_throughput import synthetic_batch, train_step  # noqa: E402

from lightning_gpv.models.gpv1 import GPV1, GPV1Config, GPV1Criterion  # noqa: E402


def to_device(b: dict, device: torch.device) -> dict:
    out = {}
    for k, v in b.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
        elif k == "target_boxes":
            v = [t.to(device) for t in v]
        out[k] = v
    return out


def run(model: GPV1, batch: int, steps: int, warmup: int, evaluate: bool) -> tuple[float, float]:
    """``(samples/s, peak GiB)`` for one batch size."""
    device = next(model.parameters()).device
    b = to_device(synthetic_batch(model.config, batch), device)
    criterion = GPV1Criterion()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if evaluate:
                with torch.no_grad():
                    enc = model.encode(b["pixel_values"], b["input_ids"], b["attention_mask"])
                    model.generate(enc, max_len=5)
            else:
                train_step(model, criterion, optimizer, b)

    model.train(not evaluate)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return batch * steps / elapsed, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 30])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eval", action="store_true", help="measure inference instead of training")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpv1_gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = GPV1(GPV1Config.paper()).to(device)
    name, mode = torch.cuda.get_device_name(), "eval" if args.eval else "train"
    print(f"{name}, torch {torch.__version__} (CUDA {torch.version.cuda}), bf16 autocast")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}; mode: {mode}")
    print(f"{'batch':>5} {'samples/s':>10} {'peak GiB':>9}")
    for batch in args.batch_sizes:
        try:
            rate, peak = run(model, batch, args.steps, args.warmup, args.eval)
            print(f"{batch:>5} {rate:>10.1f} {peak:>9.2f}")
        except torch.OutOfMemoryError:
            print(f"{batch:>5} {'OOM':>10}")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
