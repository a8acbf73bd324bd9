"""Mixing several data modules into one training stream (GPV-1's multi-task learning).

GPV-1 (``datasets/coco_multitask_dataset.py``) concatenates every task's training samples and shuffles
uniformly, so each task's share is proportional to its size: that is the default here. With ``weights`` each
child's share of the drawn samples is proportional to its weight instead (a seeded
:class:`~torch.utils.data.WeightedRandomSampler`, with replacement). Both are deterministic given ``seed``.

With ``bucketing`` the training loader regroups each epoch's draw into batches of samples with the same
number of images and similar estimated lengths (:mod:`datamodules.batching`): the same indices are drawn,
only the batches change, so much less of every step is padding. The loader shards its batches among ranks
itself (Lightning's ``use_distributed_sampler`` leaves it alone) and resumes mid-epoch from a checkpoint (this
module's :meth:`~MultiTaskDataModule.state_dict` holds its position).

Validation, test and predict return one loader per child (Lightning's ``dataloader_idx`` follows the order of
``datamodules``, leaving out children without that split; :meth:`MultiTaskDataModule.loader_names`
labels them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from datamodules.base import TaskDataModule, list_collate
from datamodules.batching import BucketBatchSampler, BucketLoader, LengthEstimate, sample_keys
from lightning_gpv.errors import InputError
from lightning_gpv.tasks.processing import SampleProcessor

_STAGE_SPLIT = {
    "fit": "train_split",
    "validate": "val_split",
    "test": "test_split",
    "predict": "predict_split",
}


def mixing_weights(sizes: list[int], weights: list[float] | None) -> torch.Tensor:
    """Per-sample weights over the concatenation of datasets of ``sizes``: child ``k`` gets a total weight
    proportional to ``weights[k]`` (uniform over samples when ``weights`` is None); ``(sum(sizes),)``."""
    if weights is None:
        weights = [float(n) for n in sizes]
    if len(weights) != len(sizes):
        raise InputError(f"{len(weights)} weights for {len(sizes)} data modules")
    if any(w < 0 for w in weights) or not any(w > 0 and n > 0 for w, n in zip(weights, sizes)):
        raise InputError(f"weights must be >= 0 with one positive on a non-empty data set, got {weights}")
    parts = [torch.full((n,), w / n, dtype=torch.float64) for w, n in zip(weights, sizes) if n > 0]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


class SeededShuffles(Sampler[int]):
    """A ``RandomSampler`` under another class, so that DDP keeps its length and seed.

    Lightning replaces a ``RandomSampler`` under DDP by a ``DistributedSampler`` over the whole dataset, which
    drops ``num_samples`` (``samples_per_epoch``) and the seed; any other sampler it wraps in a
    ``DistributedSamplerWrapper``, which gives each rank its share of this sampler's own draw (the same on
    every rank: the same seeded generator).
    """

    def __init__(self, sampler: RandomSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class MultiTaskDataModule(LightningDataModule):
    """Concatenates (GPV-1: uniform over all samples) or mixes with weights several :class:`TaskDataModule` s.

    Args:
        datamodules: The children; each brings its own files, splits and options (their batch sizes and
            workers are not used: the mixed loaders use this module's).
        weights: One per child: its share of the training samples drawn. ``None`` = uniform over all samples.
        samples_per_epoch: Training samples drawn per epoch (default: the total size).
            Without ``weights`` they are whole shuffles of all samples (the last one cut short), so no sample
            repeats within a shuffle.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        processor: The model's processor, handed to every child (also via :meth:`connect`).
        seed: Seed of the training shuffle or weighted draw.
        pin_memory: Passed to the DataLoaders.
        persistent_workers: Passed to the DataLoaders (when ``num_workers > 0``).
        bucketing: Group each training batch by number of images and estimated length
            (:class:`~datamodules.batching.BucketBatchSampler`; same draw, regrouped). Under several ranks
            each rank gets an equal share of the batches (the epoch's last batches are repeated to fill it).
        bucket_pool: Batches per bucketing pool: ``bucket_pool * batch_size`` consecutive draws are regrouped
            among themselves and their batches shuffled; larger is leaner but shuffles more coarsely.
    """

    def __init__(
        self,
        datamodules: list[TaskDataModule],
        weights: list[float] | None = None,
        samples_per_epoch: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        processor: SampleProcessor | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        bucketing: bool = False,
        bucket_pool: int = 50,
    ) -> None:
        super().__init__()
        if not datamodules:
            raise InputError("MultiTaskDataModule needs at least one data module")
        if batch_size < 1:
            raise InputError(f"MultiTaskDataModule: batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise InputError(f"MultiTaskDataModule: num_workers must be >= 0, got {num_workers}")
        if bucket_pool < 1:
            raise InputError(f"MultiTaskDataModule: bucket_pool must be >= 1, got {bucket_pool}")
        if weights is not None and len(weights) != len(datamodules):
            raise InputError(
                f"MultiTaskDataModule: {len(weights)} weights for {len(datamodules)} data modules"
            )
        self.datamodules = list(datamodules)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.bucketing = bucketing
        self.bucket_pool = bucket_pool
        self.processor: SampleProcessor | None = None
        # Bucketing keys per child training dataset (parsing every record again per loader would be slow).
        self._keys: list[tuple[Dataset, np.ndarray]] = []
        self._train_loader: BucketLoader | None = None
        self._loader_state: dict[str, Any] | None = None  # restored before the loader exists
        self.connect(processor)

    def connect(self, processor: SampleProcessor | None) -> None:
        """Hand the model's processor to every child (see :meth:`TaskDataModule.connect`)."""
        self.processor = processor
        for dm in self.datamodules:
            dm.connect(processor)

    def loader_names(self, stage: str = "validate") -> list[str]:
        """Labels of the loaders of ``stage`` (``fit``, ``validate``, ``test``, ``predict``), in
        ``dataloader_idx`` order, e.g. ``["CocoDataModule[0]:val2014", "VQAv2DataModule[1]:val2014"]``."""
        attr = _STAGE_SPLIT[stage]
        return [
            f"{type(dm).__name__}[{k}]:{getattr(dm, attr)}"
            for k, dm in enumerate(self.datamodules)
            if getattr(dm, attr) is not None
        ]

    @property
    def num_skipped(self) -> int:
        """Bad records and samples skipped by all children."""
        return sum(dm.num_skipped for dm in self.datamodules)

    def setup(self, stage: str | None = None) -> None:
        for dm in self.datamodules:
            dm.setup(stage)

    def train_dataset(self) -> ConcatDataset:
        """The concatenation of every child's training split (children without one are left out)."""
        parts = [dm.dataset(dm.train_split, True) for dm in self._training_children()]
        return ConcatDataset(parts)

    def _training_children(self) -> list[TaskDataModule]:
        kids = [dm for dm in self.datamodules if dm.train_split is not None]
        if not kids:
            raise InputError("MultiTaskDataModule: no child data module has a train_split")
        return kids

    def train_sampler(self, dataset: ConcatDataset) -> Sampler[int]:
        """Uniform shuffles (``weights=None``) or the weighted draw, ``samples_per_epoch`` long, seeded with
        ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        if self.weights is None:
            shuffles = RandomSampler(dataset, num_samples=self.samples_per_epoch, generator=generator)
            return SeededShuffles(shuffles)
        kids = self._training_children()
        weights = [w for w, dm in zip(self.weights, self.datamodules) if dm in kids]
        sizes = [len(d) for d in dataset.datasets]
        per_sample = mixing_weights(sizes, weights)
        num = self.samples_per_epoch or len(dataset)
        return WeightedRandomSampler(per_sample, num_samples=num, replacement=True, generator=generator)

    def _loader(self, dataset: Dataset, sampler: Sampler[int] | None = None) -> DataLoader:
        collate: Any = self.processor.collate if self.processor is not None else list_collate
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        sampler = self.train_sampler(dataset)
        if not self.bucketing:
            return self._loader(dataset, sampler)
        rank, world = self._data_parallel()
        batches = BucketBatchSampler(
            sampler,
            self.batch_size,
            self.bucket_keys(dataset),
            pool_batches=self.bucket_pool,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        collate: Any = self.processor.collate if self.processor is not None else list_collate
        loader = BucketLoader(
            dataset,
            batches,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def length_estimate(self) -> LengthEstimate:
        """How bucketing estimates sample lengths: masks cost the processor's ``codec.num_mask_points``
        (VistaLLM's) when it has one, else the defaults of :class:`~datamodules.batching.LengthEstimate`."""
        points = getattr(getattr(self.processor, "codec", None), "num_mask_points", None)
        return LengthEstimate.for_mask_points(int(points)) if isinstance(points, int) else LengthEstimate()

    def bucket_keys(self, dataset: ConcatDataset) -> np.ndarray:
        """``(len(dataset), 2)`` bucketing keys (number of images, estimated tokens) of the training
        concatenation, computed once per child dataset (:func:`~datamodules.batching.sample_keys`)."""
        estimate = self.length_estimate()
        parts = []
        for child in dataset.datasets:
            known = next((keys for ds, keys in self._keys if ds is child), None)
            if known is None:
                known = sample_keys(child, estimate)
                self._keys.append((child, known))
            parts.append(known)
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)

    def _data_parallel(self) -> tuple[int | None, int | None]:
        """``(rank, world_size)`` of data parallelism from the trainer when attached (its strategy's sampler
        arguments: a model-parallel strategy shards data over fewer ranks than torch.distributed has), else
        ``(None, None)``: the sampler reads torch.distributed when iterating."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None, None
        kwargs = trainer.distributed_sampler_kwargs
        if not kwargs:
            return 0, 1
        return int(kwargs.get("rank", 0)), int(kwargs.get("num_replicas", 1))

    def state_dict(self) -> dict[str, Any]:
        """The bucketed training loader's position (epoch, batches handed out), saved in checkpoints; empty
        without bucketing. Lightning restores it with :meth:`load_state_dict` in every resume, also where it
        skips the loader's own state (when ``configure_optimizers`` read ``estimated_stepping_batches``)."""
        if self._train_loader is not None:
            return {"train_batches": self._train_loader.state_dict()}
        if self._loader_state is not None:
            return {"train_batches": dict(self._loader_state)}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the bucketed training loader where ``state_dict`` left it (now, or when it is built)."""
        state = state_dict.get("train_batches")
        if state is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._loader_state = dict(state)

    def _eval_loaders(self, attr: str) -> list[DataLoader]:
        loaders = []
        for dm in self.datamodules:
            split = getattr(dm, attr)
            if split is not None:
                loaders.append(self._loader(dm.dataset(split, False)))
        if not loaders:
            raise InputError(f"MultiTaskDataModule: no child data module has a {attr}")
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val_split")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test_split")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("predict_split")
