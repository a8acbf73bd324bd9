"""What the pretraining loops share: AdamW with a linear warm-up and a cosine decay to 0, and a seeded
order of batches that reshuffles at each pass over the pool."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

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


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[nn.Parameter],
    clip: float,
) -> None:
    """Backward ``loss``, clip the gradient norm of ``params`` to ``clip``, step optimizer and schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    scheduler.step()


class RunningMeans:
    """Means of the logged losses over every ``every`` steps, with the samples per second, for a ``log``
    callback ``log(step, values)`` (``None``: nothing is kept)."""

    def __init__(
        self, log: Callable[[int, dict[str, float]], None] | None, every: int, batch_size: int
    ) -> None:
        self.log, self.every, self.batch_size = log, every, batch_size
        self.sums: dict[str, float] = {}
        self.start = time.monotonic()

    def add(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Record the losses of 0-based ``step``; report the means after every ``every`` steps."""
        if self.log is None:
            return
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        if (step + 1) % self.every == 0:
            means = {name: total / self.every for name, total in self.sums.items()}
            means["samples_per_s"] = self.every * self.batch_size / (time.monotonic() - self.start)
            self.log(step + 1, means)
            self.sums, self.start = {}, time.monotonic()
