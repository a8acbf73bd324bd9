"""Lean batches for mixed multi-task training: samples grouped by number of images and estimated length.

A VistaLLM training stream mixes one-image and several-image samples whose sequences range from a two-token
VQA answer to a ~70-token mask (32 contour points), so a batch drawn at random pads most of its rows up to
its longest one. :class:`BucketBatchSampler` regroups the *same* draw: it takes ``pool_batches * batch_size``
indices at a time from the underlying (random or weighted) sampler, sorts the pool by a per-sample key
``(number of images, estimated tokens)``, cuts it into batches and shuffles their order. Every drawn index is
used exactly once, so the mixing weights, ``samples_per_epoch`` and the no-repeat property of uniform shuffles
are kept; only the grouping changes. A larger pool gives tighter batches and a coarser shuffle.

Keys are cheap: :func:`sample_keys` builds each record's :class:`~lightning_gpv.tasks.samples.TaskSample` with
its reader (no image is opened or decoded, nothing is tokenized) and :class:`LengthEstimate` turns it into
``(number of images, estimated tokens)``.

Distributed training: every rank draws the same global list of batches (the draw and the shuffle are seeded
with ``seed`` and the epoch only) and takes batches ``rank, rank + world, ...``, after padding the list with
its first batches (or, with ``drop_last``, cutting it) to a multiple of ``world``, so all ranks run the same
number of steps. :class:`BucketLoader` is the DataLoader to use under Lightning: its ``sampler`` is a
:class:`~torch.utils.data.DistributedSampler` subclass, the sign Lightning reads for "this loader already
shards among ranks", so ``use_distributed_sampler`` leaves it as it is (Lightning would otherwise replace the
sampler of a custom ``batch_sampler`` by a ``DistributedSampler`` over the whole dataset, dropping the
weights); Lightning still calls its ``set_epoch`` every epoch.

Resuming: :meth:`BucketLoader.state_dict` holds the epoch and the number of batches the loader has handed
out in it (counted where they leave the loader, so batches prefetched by workers are not counted); after
:meth:`BucketLoader.load_state_dict` the loader continues with the next batch. Lightning saves it with the fit
loop (a loader with ``state_dict``/``load_state_dict``), and
:class:`~datamodules.multitask.MultiTaskDataModule` saves it too, because Lightning skips loading the loader's
state when the module read ``trainer.estimated_stepping_batches`` before the restore (both systems here do:
Lightning-AI/pytorch-lightning#20550); the data module's state is restored in every case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.samples import TaskSample

_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads epochs over the seed space


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s draw: ``seed`` itself for epoch 0 (so the first epoch draws what the
    unbucketed loader, seeded with ``seed``, draws), a well-spread function of both afterwards."""
    return (seed + epoch * _GOLDEN) % 2**63


@dataclass(frozen=True)
class LengthEstimate:
    """Estimated LLM tokens of a sample (prompt text and answer), from the sample alone (no tokenizer).

    Only the order matters (samples of similar length end up in one batch), so rough per-item costs do.
    Image tokens are left out: samples are grouped by number of images first.

    Attributes:
        chars_per_token: Characters of plain text per token (about 4 for LLaMA-style BPE on English).
        tokens_per_box: Tokens of one serialized box (4 coordinates and the brackets).
        tokens_per_mask: Tokens of one serialized mask (2 per contour point and the brackets; VistaLLM's 32
            points: 66).
    """

    chars_per_token: float = 4.0
    tokens_per_box: int = 6
    tokens_per_mask: int = 66

    @classmethod
    def for_mask_points(cls, num_mask_points: int) -> LengthEstimate:
        """The estimate for masks written as ``num_mask_points`` contour points."""
        return cls(tokens_per_mask=2 * num_mask_points + 2)

    def tokens(self, sample: TaskSample) -> int:
        """Estimated tokens of ``sample``'s question/expression/category and of its answer."""
        target = sample.target
        prompt = sum(len(t) for t in (sample.question, sample.expression, sample.category) if t)
        text = target.text or (target.answers[0] if target.answers else "")
        # A mask answer is written as the mask, not also as its box (RES targets carry both).
        if target.masks:
            geometry = len(target.masks) * self.tokens_per_mask
        else:
            geometry = len(target.boxes) * self.tokens_per_box
        return math.ceil((prompt + len(text)) / self.chars_per_token) + geometry + 1  # + the end token


def sample_keys(dataset: Dataset, estimate: LengthEstimate | None = None) -> np.ndarray:
    """``(len(dataset), 2)`` int64 keys ``(number of images, estimated tokens)`` of a
    :class:`~datamodules.base.TaskDataset` or a :class:`~torch.utils.data.ConcatDataset` of them.

    Each record's sample is built by the dataset's reader in evaluation mode (deterministic: no random VQA
    answer, no draw from Python's ``random``); image files are neither checked nor opened. A record the reader
    refuses gets ``(1, 0)``: it is skipped or reported when it is loaded, as without bucketing.

    Raises:
        TypeError: ``dataset`` is neither (it needs ``records`` and a ``reader``).
    """
    estimate = estimate or LengthEstimate()
    if isinstance(dataset, ConcatDataset):
        parts = [sample_keys(d, estimate) for d in dataset.datasets]
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    records = getattr(dataset, "records", None)
    reader = getattr(dataset, "reader", None)
    if records is None or reader is None:
        raise TypeError(f"sample_keys needs a TaskDataset (records, reader), got {type(dataset).__name__}")
    keys = np.zeros((len(records), 2), np.int64)
    keys[:, 0] = 1
    for i, record in enumerate(records):
        try:
            sample = reader.sample(record, train=False)
        except (ValueError, OSError):  # DataFormatError is a ValueError
            continue
        keys[i] = (sample.num_images, estimate.tokens(sample))
    return keys


def _replicas(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given ones, else torch.distributed's when initialised, else ``(0, 1)``."""
    if world_size is None:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return rank, world_size


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of one epoch's draw, grouped by key within pools, sharded among ranks, resumable.

    Args:
        sampler: The unsharded per-sample sampler (``RandomSampler``, ``WeightedRandomSampler``,
            ``SequentialSampler``, ...). It is re-seeded every epoch so that every rank and every resume draws
            the same indices: its ``set_epoch(epoch)`` is called if it has one, else its ``generator`` is
            replaced by one seeded with :func:`epoch_seed` (a sampler with neither must be deterministic).
        batch_size: Samples per batch.
        keys: ``(N, 2)`` ``(group, length)`` per dataset index (:func:`sample_keys`): a pool is sorted by
            group (number of images), then length.
        pool_batches: Batches per pool; a pool's ``pool_batches * batch_size`` consecutive draws are regrouped
            among themselves, and its batches shuffled among themselves.
        seed: Seed of the draw and of the batch shuffle (the same on every rank).
        drop_last: Drop the epoch's last, partial batch and cut the batch list to a multiple of the world size
            (instead of repeating its first batches).
        rank: This process's rank; ``None`` reads torch.distributed when iterating (0 when not initialised).
        world_size: Number of ranks; ``None`` reads torch.distributed when iterating (1 when not initialised).

    Attributes:
        epoch: The epoch whose batches are yielded (:meth:`set_epoch`).
        start: The batch (of this rank's share) the next iteration starts at: 0, or where a resume continues.
        version: Bumped when the epoch or the position changes, so that a loader iterating an older order
            knows to start again (:class:`BucketLoader`).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        keys: np.ndarray | Sequence[tuple[int, int]],
        *,
        pool_batches: int = 50,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if pool_batches < 1:
            raise InputError(f"pool_batches must be >= 1, got {pool_batches}")
        if isinstance(sampler, DistributedSampler):
            raise TypeError("give BucketBatchSampler the unsharded sampler: it shards the batches itself")
        if not isinstance(sampler, Sized):
            raise TypeError(f"the sampler must have a length, got {type(sampler).__name__}")
        keys = np.asarray(keys, dtype=np.int64)
        if keys.ndim != 2 or keys.shape[1] != 2:
            raise ValueError(f"keys must have shape (N, 2) (group, length), got {keys.shape}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.keys = keys
        self.pool_batches = pool_batches
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.version = 0
        self._position: tuple[int, int] | None = None  # (version, next batch) of the running iteration

    # -- sizes -----------------------------------------------------------------------------------------------

    def replicas(self) -> tuple[int, int]:
        """``(rank, world_size)`` in effect now."""
        return _replicas(self.rank, self.world_size)

    @property
    def num_drawn(self) -> int:
        """Indices drawn per epoch (the underlying sampler's length)."""
        return len(self.sampler)  # type: ignore[arg-type]

    @property
    def num_global_batches(self) -> int:
        """Batches of the whole epoch, all ranks together, before padding to the world size."""
        n = self.num_drawn
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _shares(self, world: int) -> int:
        """Batches per rank."""
        total = self.num_global_batches
        return total // world if self.drop_last else -(-total // world)

    def _global_positions(self, rank: int, world: int) -> list[int]:
        """Positions in the global batch list of this rank's batches (padding repeats the first batches)."""
        total = self.num_global_batches
        return [(rank + k * world) % total for k in range(self._shares(world))] if total else []

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return self._shares(self.replicas()[1])

    def num_indices(self) -> int:
        """Sample indices this rank yields per epoch (its batches' sizes summed)."""
        rank, world = self.replicas()
        positions = self._global_positions(rank, world)
        last = self.num_global_batches - 1  # the partial batch, when there is one (never with drop_last)
        tail = self.batch_size if self.drop_last else self.num_drawn - last * self.batch_size
        return sum(tail if p == last else self.batch_size for p in positions)

    # -- epoch and position ----------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Use the draw and the order of ``epoch``; a new epoch starts at its first batch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.start = 0
            self.version += 1

    def state_dict(self, next_batch: int | None = None) -> dict[str, Any]:
        """The epoch and the batch to continue at (this rank's share; every rank is at the same one).

        Args:
            next_batch: Batches of the epoch already consumed, when the caller counts them
                (:class:`BucketLoader` does, after the workers' prefetching); by default the batches this
                sampler has yielded in its running iteration.
        """
        if next_batch is None:
            running = self._position is not None and self._position[0] == self.version
            next_batch = self._position[1] if running else self.start  # type: ignore[index]
        return {
            "epoch": self.epoch,
            "next_batch": int(next_batch),
            "world_size": self.replicas()[1],
            "seed": self.seed,
            "batch_size": self.batch_size,
            "pool_batches": self.pool_batches,
            "num_drawn": self.num_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state``'s epoch and batch. A different world size keeps the global progress (rounded
        down: a few batches may repeat); a different seed, batch size, pool or draw length gives another
        order, so the position is kept with a warning."""
        world = self.replicas()[1]
        next_batch = int(state["next_batch"])
        saved_world = int(state.get("world_size", world))
        if saved_world != world:
            next_batch = next_batch * saved_world // world
        changed = [
            name
            for name, now in (
                ("seed", self.seed),
                ("batch_size", self.batch_size),
                ("pool_batches", self.pool_batches),
                ("num_drawn", self.num_drawn),
            )
            if name in state and state[name] != now
        ]
        if changed:
            warnings.warn(
                f"resuming bucketed batches with a different {', '.join(changed)}: the epoch's order "
                f"differs, continuing at batch {next_batch} of the new one",
                stacklevel=2,
            )
        self.epoch = int(state["epoch"])
        self.start = min(max(next_batch, 0), self._shares(world))
        self._position = None
        self.version += 1

    # -- the batches -----------------------------------------------------------------------------------------

    def _draw(self) -> np.ndarray:
        """This epoch's indices from the underlying sampler, identical on every rank and every resume."""
        sampler: Any = self.sampler
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(self.epoch)
        elif hasattr(sampler, "generator"):
            sampler.generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        drawn = np.fromiter(iter(sampler), dtype=np.int64)
        if len(drawn) != self.num_drawn:
            raise RuntimeError(f"the sampler yielded {len(drawn)} indices for a length of {self.num_drawn}")
        if len(drawn) and (drawn.min() < 0 or drawn.max() >= len(self.keys)):
            raise IndexError(f"the sampler drew an index outside the {len(self.keys)} keys")
        return drawn

    def global_batches(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole epoch's batches before sharding: ``(full, tail)``, a ``(B, batch_size)`` array of the
        full batches in their shuffled order and the last, partial batch (empty when there is none or with
        ``drop_last``), which always comes last."""
        drawn = self._draw()
        bs, pool = self.batch_size, self.pool_batches * self.batch_size
        keys = self.keys[drawn]
        pool_of = np.arange(len(drawn)) // pool
        # Within each pool (in draw order), by group then length; stable, so ties keep the random draw order.
        ordered = drawn[np.lexsort((keys[:, 1], keys[:, 0], pool_of))]
        num_full = len(drawn) // bs
        full = ordered[: num_full * bs].reshape(num_full, bs)
        tail = ordered[num_full * bs :] if not self.drop_last else ordered[:0]
        # Shuffle the batches within their pool (a pool is a whole number of batches, so none straddles two).
        rng = np.random.default_rng([epoch_seed(self.seed, self.epoch), 1])
        row_pool = np.arange(num_full) * bs // pool
        full = full[np.lexsort((rng.random(num_full), row_pool))]
        return full, tail

    def __iter__(self) -> Iterator[list[int]]:
        version, start = self.version, self.start
        rank, world = self.replicas()
        full, tail = self.global_batches()
        positions = self._global_positions(rank, world)
        for k in range(start, len(positions)):
            self._position = (version, k + 1)
            # Lists are made one batch at a time: a whole epoch of them would take far more memory.
            yield (full[positions[k]] if positions[k] < len(full) else tail).tolist()
        if self.version == version:  # a finished epoch replays from its start until set_epoch
            self.start = 0


class _BatchIndices(DistributedSampler):
    """The indices of a :class:`BucketBatchSampler`'s batches one after the other: a DataLoader with the same
    ``batch_size`` cuts them back into those batches (all but this rank's last one are full).

    It subclasses :class:`~torch.utils.data.DistributedSampler` only as the marker Lightning reads for "shards
    among ranks already": none of ``DistributedSampler``'s own logic (or ``__init__``) is used.
    """

    def __init__(self, dataset: Dataset, batches: BucketBatchSampler) -> None:
        # DistributedSampler.__init__ is not called on purpose: it would resolve the ranks now, and this
        # sampler takes them from ``batches`` when iterating.
        self.dataset = dataset
        self.batches = batches
        self.shuffle = True
        self.drop_last = batches.drop_last
        self.seed = batches.seed

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self.batches.epoch

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        return self.batches.replicas()[1]

    @property
    def rank(self) -> int:  # type: ignore[override]
        return self.batches.replicas()[0]

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        return self.batches.num_indices()

    @property
    def total_size(self) -> int:  # type: ignore[override]
        return self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches:
            yield from batch


class BucketLoader(DataLoader):
    """A DataLoader over :class:`BucketBatchSampler` batches that Lightning neither wraps nor re-shards, and
    that resumes mid-epoch (see the module docstring).

    Args:
        dataset: The map-style dataset the batch sampler's indices point into.
        batch_sampler: The batches; its ``batch_size`` is the loader's.
        **kwargs: Other :class:`~torch.utils.data.DataLoader` arguments (``collate_fn``, ``num_workers``,
            ``pin_memory``, ...); not ``batch_size``, ``sampler``, ``batch_sampler``, ``shuffle`` or
            ``drop_last``.
    """

    def __init__(self, dataset: Dataset, batch_sampler: BucketBatchSampler, **kwargs: Any) -> None:
        taken = {"batch_size", "sampler", "batch_sampler", "shuffle", "drop_last"} & kwargs.keys()
        if taken:
            raise TypeError(f"BucketLoader sets {sorted(taken)} from its batch sampler")
        super().__init__(
            dataset,
            batch_size=batch_sampler.batch_size,
            sampler=_BatchIndices(dataset, batch_sampler),
            shuffle=False,
            drop_last=False,
            **kwargs,
        )
        self.buckets = batch_sampler
        self._position: tuple[int, int] | None = None  # (version, batches handed out) of the running epoch

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing is drawn or prefetched before the first batch is asked for, so a
        # set_epoch or a restore that Lightning applies after iter() is still in time.
        buckets = self.buckets
        while True:
            version = buckets.version
            self._position = (version, buckets.start)
            for batch in super().__iter__():
                if buckets.version != version:
                    break  # restored or re-epoched while iterating: start again from the new position
                self._position = (version, self._position[1] + 1)
                yield batch
            else:
                return

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the number of its batches this loader has handed out (this rank's share)."""
        running = self._position is not None and self._position[0] == self.buckets.version
        return self.buckets.state_dict(self._position[1] if running else None)  # type: ignore[index]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue with the batch after those ``state`` counts (in ``state``'s epoch)."""
        self.buckets.load_state_dict(state)
        self._position = None
