"""Shared machinery of every data module: readers, the lazy :class:`TaskDataset`, :class:`TaskDataModule`.

A data set family has a :class:`Reader` (picklable, holds only its options) that

* ``read(split)``: parses the annotation files once, at ``setup()``, into a list of light records (ids,
  paths, boxes; nothing decoded), and
* ``sample(record, train=...)``: turns one record into a :class:`~lightning_gpv.tasks.samples.TaskSample`
  in ``Dataset.__getitem__`` (so in the loader's worker processes).

:class:`TaskDataModule` owns the splits, the loaders and the model's processor
(:class:`~lightning_gpv.tasks.processing.SampleProcessor`), given at construction or later through
:meth:`TaskDataModule.connect`. Connected, a dataset item is ``processor.encode(sample, train=...)`` and
the loader collates with ``processor.collate``; unconnected, items are ``TaskSample`` and batches are
plain lists of them.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import (
    BadSampleLog,
    DataFormatError,
    OnBadSample,
    UnknownSplitError,
    check_on_bad_sample,
)
from lightning_gpv.errors import InputError
from lightning_gpv.tasks.processing import SampleProcessor, image_size, load_image
from lightning_gpv.tasks.samples import TaskSample


def list_collate(items: list[Any]) -> list[Any]:
    """The collate function without a processor: the batch is the list of samples."""
    return list(items)


class Reader(ABC):
    """Reads one data set family's files: annotation parsing at setup, sample building per item.

    Subclasses keep only options as attributes (paths, flags) so that they pickle small into workers.

    Args:
        root: The data set folder.
        on_bad_sample: ``"raise"`` a :class:`DataFormatError` for a bad record, or ``"skip"`` it.
    """

    name: str = "data"

    def __init__(self, root: str | Path, on_bad_sample: OnBadSample = "raise") -> None:
        self.root = Path(root).expanduser()
        self.on_bad_sample = check_on_bad_sample(on_bad_sample)
        self.bad = BadSampleLog(self.name)

    @property
    @abstractmethod
    def splits(self) -> tuple[str, ...]:
        """Split names the family knows (the files may hold fewer)."""

    @abstractmethod
    def read(self, split: str, *, train: bool) -> list[Any]:
        """Parse the annotations of ``split`` into records (called once per split, at ``setup()``)."""

    @abstractmethod
    def sample(self, record: Any, *, train: bool) -> TaskSample:
        """Build the sample of one record (called in ``__getitem__``; must not decode images)."""

    def cached(self, key: Any, build: Any) -> Any:
        """``build()``, computed once per reader (e.g. a file several splits share); not pickled."""
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cache", None)
        return state

    def check_split(self, split: str, path: str | Path | None = None) -> None:
        """Raise :class:`UnknownSplitError` if ``split`` is not one of :attr:`splits`."""
        if split not in self.splits:
            raise UnknownSplitError(path or self.root, split, self.splits)

    def report(self, err: DataFormatError) -> None:
        """Raise ``err``, or count and log it when skipping bad samples."""
        if self.on_bad_sample == "raise":
            raise err
        self.bad.skip(err)


def check_image_file(path: str | Path, field_name: str = "images") -> None:
    """Cheap check that an image file exists and has a readable header (no pixel decoding).

    Raises:
        DataFormatError: Missing file or unidentifiable image, naming the file.
    """
    if not os.path.isfile(path):
        raise DataFormatError(path, field_name, "image file not found")
    try:
        image_size(path)  # the package's header check, pixel limit included
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataFormatError(path, field_name, f"not a readable image: {err}") from err


def _bad_image(sample: TaskSample) -> DataFormatError | None:
    """Decode every image of ``sample``; the error of the first one that fails, if any."""
    for k, ref in enumerate(sample.images):
        if isinstance(ref, np.ndarray):
            continue
        try:
            load_image(ref)
        except (OSError, ValueError) as err:
            return DataFormatError(ref, f"images[{k}]", f"missing or corrupt image: {err}")
    return None


def dataset_label(name: str, split: str | None = None) -> str:
    """A log-key-safe label of a data set and split: characters other than letters, digits and ``_.+-``
    become ``_`` (``"refcoco(unc)", "testA"`` -> ``"refcoco_unc.testA"``)."""
    clean = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "data"
    return clean if split is None else f"{clean}.{re.sub(r'[^A-Za-z0-9_.+-]+', '_', split)}"


class TaskDataset(Dataset):
    """A map-style dataset over records parsed at setup; samples are built lazily in ``__getitem__``.

    Args:
        records: The records of one split (from :meth:`Reader.read`).
        reader: The reader that builds a :class:`TaskSample` from a record.
        train: Whether this is a training split (passed to the reader and the processor).
        processor: Encodes samples; ``None`` returns :class:`TaskSample` objects.
        verify_images: Check that each image file exists and has a readable header before returning it.
        name: What evaluation logs call this data (``{stage}/{name}/{task}/{metric}``); default: the
            reader's name and ``split``, e.g. ``refcoco_unc.testA``.
        split: The split the records come from.

    With ``reader.on_bad_sample == "skip"`` a sample whose image is missing or corrupt is counted in
    ``reader.bad`` and replaced by the next readable one (metrics de-duplicate on ``sample_id``).
    """

    def __init__(
        self,
        records: Sequence[Any],
        reader: Reader,
        *,
        train: bool,
        processor: SampleProcessor | None = None,
        verify_images: bool = True,
        name: str | None = None,
        split: str | None = None,
    ) -> None:
        self.records = records
        self.split = split
        self.name = name if name is not None else dataset_label(reader.name, split)
        self.reader = reader
        self.train = train
        self.processor = processor
        self.verify_images = verify_images
        self._bad = torch.zeros(len(records), dtype=torch.bool).share_memory_()

    @property
    def num_skipped(self) -> int:
        """Distinct samples found unreadable in ``__getitem__`` so far (worker processes included)."""
        return int(self._bad.sum())

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> TaskSample:
        """The :class:`TaskSample` of record ``index`` (image files checked, nothing decoded)."""
        sample = self.reader.sample(self.records[index], train=self.train)
        if self.verify_images:
            for k, ref in enumerate(sample.images):
                if not isinstance(ref, np.ndarray):
                    check_image_file(ref, f"images[{k}]")
        return sample

    def _item(self, index: int) -> Any:
        sample = self.sample(index)
        if self.processor is None:
            return sample
        try:
            return self.processor.encode(sample, train=self.train)
        except (OSError, ValueError) as err:
            bad = _bad_image(sample)
            if bad is None:
                raise  # not the data's fault
            raise bad from err

    def __getitem__(self, index: int) -> Any:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        if self.reader.on_bad_sample == "raise":
            return self._item(index)
        for offset in range(n):
            j = (index + offset) % n
            if self._bad[j]:
                continue
            try:
                return self._item(j)
            except DataFormatError as err:
                self._bad[j] = True
                self.reader.bad.skip(err, count=False)
        raise DataFormatError(self.reader.root, None, f"every one of the {n} samples is unreadable")


class TaskDataModule(LightningDataModule, ABC):
    """Base of every data module: splits, loaders, the processor hook and bad-sample handling.

    Args:
        root: The data set folder.
        train_split: Split used by ``fit`` for training (``None``: no training loader).
        val_split: Split used for validation.
        test_split: Split used by ``test``.
        predict_split: Split used by ``predict`` (defaults to ``test_split``).
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes (0 loads in the main process).
        processor: The model's processor; may also be given later with :meth:`connect`.
        on_bad_sample: ``"raise"`` a :class:`DataFormatError` naming file and field, or ``"skip"`` the bad
            record or image, count it (:attr:`num_skipped`) and log once.
        verify_images: Check each image file's header in ``__getitem__`` (cheap; no pixel decoding).
        max_samples: Keep at most this many samples per split (the first ones; for debugging and quick evals).
        shuffle: Shuffle the training loader.
        seed: Seed of the training loader's shuffling.
        pin_memory: Passed to the DataLoader.
        persistent_workers: Passed to the DataLoader (when ``num_workers > 0``).
    """

    def __init__(
        self,
        root: str,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        predict_split: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        processor: SampleProcessor | None = None,
        on_bad_sample: OnBadSample = "raise",
        verify_images: bool = True,
        max_samples: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise InputError(f"{type(self).__name__}: num_workers must be >= 0, got {num_workers}")
        if max_samples is not None and max_samples < 1:
            raise InputError(f"{type(self).__name__}: max_samples must be >= 1 or None, got {max_samples}")
        self.root = root
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.predict_split = predict_split if predict_split is not None else test_split
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.processor = processor
        self.on_bad_sample = check_on_bad_sample(on_bad_sample)
        self.verify_images = verify_images
        self.max_samples = max_samples
        self.shuffle = shuffle
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self._reader: Reader | None = None
        self._datasets: dict[tuple[str, bool], TaskDataset] = {}

    # -- what subclasses provide -------------------------------------------------------------------------

    @abstractmethod
    def make_reader(self) -> Reader:
        """The reader of this family, configured from the data module's arguments."""

    # -- the processor hook ------------------------------------------------------------------------------

    def connect(self, processor: SampleProcessor | None) -> None:
        """Hand the model's processor to the data module (and to the datasets already built).

        Call it before the loaders are created (the Lightning CLI calls it once model and data module
        are instantiated; a LightningModule may also call
        ``self.trainer.datamodule.connect(self.processor)`` in its ``setup``).
        """
        if processor is not None and not isinstance(processor, SampleProcessor):
            raise TypeError(
                f"processor must implement encode() and collate(), got {type(processor).__name__}"
            )
        self.processor = processor
        for ds in self._datasets.values():
            ds.processor = processor

    # -- splits and datasets -----------------------------------------------------------------------------

    @property
    def reader(self) -> Reader:
        """The reader (created on first use)."""
        if self._reader is None:
            self._reader = self.make_reader()
        return self._reader

    @property
    def num_skipped(self) -> int:
        """Records (at setup) and samples (in ``__getitem__``, worker processes included) skipped so far with
        ``on_bad_sample="skip"``."""
        return self.reader.bad.count + sum(ds.num_skipped for ds in self._datasets.values())

    def dataset(self, split: str, train: bool | None = None) -> TaskDataset:
        """The dataset of ``split``, parsed on first use and cached.

        Args:
            split: A split name of the family.
            train: Training mode (random VQA targets, per-sentence REG); defaults to
                ``split == train_split``.
        """
        train = split == self.train_split if train is None else train
        key = (split, train)
        if key not in self._datasets:
            records = self.reader.read(split, train=train)
            if self.max_samples is not None:
                records = records[: self.max_samples]
            self._datasets[key] = TaskDataset(
                records,
                self.reader,
                train=train,
                processor=self.processor,
                verify_images=self.verify_images,
                split=split,
            )
        return self._datasets[key]

    def setup(self, stage: str | None = None) -> None:
        """Parse the annotation files of the splits ``stage`` needs (no image is decoded)."""
        wanted = {
            "fit": [(self.train_split, True), (self.val_split, False)],
            "validate": [(self.val_split, False)],
            "test": [(self.test_split, False)],
            "predict": [(self.predict_split, False)],
        }
        stages = [stage] if stage is not None else list(wanted)
        for st in stages:
            for split, train in wanted.get(st, []):
                if split is not None:
                    self.dataset(split, train)

    # -- loaders -----------------------------------------------------------------------------------------

    @property
    def collate_fn(self) -> Any:
        """``processor.collate`` when connected, else :func:`list_collate`."""
        return self.processor.collate if self.processor is not None else list_collate

    def loader(self, dataset: Dataset, *, shuffle: bool, sampler: Any = None) -> DataLoader:
        """A DataLoader over ``dataset`` with this module's batch size, workers and collate function."""
        generator = torch.Generator().manual_seed(self.seed) if shuffle and sampler is None else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            generator=generator,
        )

    def _split_loader(self, split: str | None, kind: str, *, train: bool) -> DataLoader:
        if split is None:
            raise InputError(f"{type(self).__name__}: no {kind}_split given, cannot build the {kind} loader")
        return self.loader(self.dataset(split, train), shuffle=train and self.shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._split_loader(self.train_split, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._split_loader(self.val_split, "val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._split_loader(self.test_split, "test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._split_loader(self.predict_split, "predict", train=False)
