"""What the pretraining loops share: AdamW with a linear warm-up and a cosine decay to 0, and a seeded
order of batches that reshuffles at each pass over the pool."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn


def adamw(params: Iterable[nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and norms (parameters of fewer than 2 dimensions)."""
    params = list(params)
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup: int, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate rises linearly over ``warmup`` steps, then follows a cosine to 0 at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_indices(size: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless ``(batch_size,)`` index batches over a pool of ``size``: a seeded permutation, drawn again
    when fewer than ``batch_size`` indices are left."""
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(size, generator=generator), 0
    while True:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(size, generator=generator), 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size
