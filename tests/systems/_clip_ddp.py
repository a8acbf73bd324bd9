"""Worker of the two-process sharded clipping test (importable by spawned children through ``sys.path``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from lightning_gpv.systems.gpv1 import clip_grad_norm_subset


def full_grads() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(6, generator=generator), torch.randn(4, 3, generator=generator)]


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Each rank holds half of every gradient (a flat shard, as FSDP does); rank 1 has no second one."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        params = []
        for i, grad in enumerate(full_grads()):
            flat = grad.flatten()
            half = flat.numel() // 2
            param = torch.nn.Parameter(torch.zeros(half))
            if not (rank == 1 and i == 1):
                param.grad = flat[rank * half : (rank + 1) * half].clone()
            params.append(param)
        total = clip_grad_norm_subset(params, 0.5, sharded=True)
        shards = [p.grad for p in params]
        torch.save({"total": total, "shards": shards}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
