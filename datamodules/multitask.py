"""Mixing several data modules into one training stream (GPV-1's multi-task learning).

GPV-1 (``datasets/coco_multitask_dataset.py``) concatenates every task's training samples and shuffles
uniformly, so each task's share is proportional to its size: that is the default here. With ``weights`` each
child's share of the drawn samples is proportional to its weight instead (a seeded
:class:`~torch.utils.data.WeightedRandomSampler`, with replacement). Both are deterministic given ``seed``.

Validation, test and predict return one loader per child (Lightning's ``dataloader_idx`` follows the order of
``datamodules``, leaving out children without that split; :meth:`MultiTaskDataModule.loader_names`
labels them).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from datamodules.base import TaskDataModule, list_collate
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
        raise ValueError(f"{len(weights)} weights for {len(sizes)} data modules")
    if any(w < 0 for w in weights) or not any(w > 0 and n > 0 for w, n in zip(weights, sizes)):
        raise ValueError(f"weights must be >= 0 with one positive on a non-empty data set, got {weights}")
    parts = [torch.full((n,), w / n, dtype=torch.float64) for w, n in zip(weights, sizes) if n > 0]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


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
    ) -> None:
        super().__init__()
        if not datamodules:
            raise ValueError("MultiTaskDataModule needs at least one data module")
        if weights is not None and len(weights) != len(datamodules):
            raise ValueError(f"{len(weights)} weights for {len(datamodules)} data modules")
        self.datamodules = list(datamodules)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.processor: SampleProcessor | None = None
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
            raise ValueError("no child data module has a train_split")
        return kids

    def train_sampler(self, dataset: ConcatDataset) -> Sampler[int]:
        """Uniform shuffles (``weights=None``) or the weighted draw, ``samples_per_epoch`` long, seeded with
        ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        if self.weights is None:
            return RandomSampler(dataset, num_samples=self.samples_per_epoch, generator=generator)
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
        return self._loader(dataset, self.train_sampler(dataset))

    def _eval_loaders(self, attr: str) -> list[DataLoader]:
        loaders = []
        for dm in self.datamodules:
            split = getattr(dm, attr)
            if split is not None:
                loaders.append(self._loader(dm.dataset(split, False)))
        if not loaders:
            raise ValueError(f"no child data module has a {attr}")
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val_split")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test_split")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("predict_split")
