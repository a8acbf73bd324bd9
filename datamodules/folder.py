"""``ImageFolderDataModule``: any folder of images plus one prompt, for ``lightning-gpv predict``.

Every image file of ``folder`` (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``, any case; hidden files
skipped; subfolders too with ``recursive=True``), sorted by its path relative to ``folder``, becomes one
:class:`~lightning_gpv.tasks.samples.TaskSample` of ``task`` without a target (multi-image tasks take
``images_per_sample`` consecutive images instead). The model's processor renders its usual instruction
for the task (GPV-1's Table 7 prompt, VistaLLM's template ``eval_template``), so ``prompt`` fills the one
text slot of that instruction:

========================================  ==================================================
task                                      ``prompt`` is
========================================  ==================================================
``vqa``, ``nlvr2``                        the question (NLVR2: the statement), required
``rec``, ``res``, ``grec``, ``gres``      the referring expression, required
``localization``                          the category name (GPV-1's ``[OBJECT]``), required
``captioning``, ``classification``,       not allowed: the instruction has no slot (the model's
``coseg``, ``attcoseg``,                  fixed template is used)
``spot_captioning``
``reg``, ``box_qa``, ``point_qa``         not supported: they need an input region or point
========================================  ==================================================

``sample_id`` is the image's path relative to ``folder`` (POSIX separators; images of one multi-image
sample joined by ``+``); ``metadata`` holds ``image_paths`` (absolute) and ``prompt``, which travel with
every processor's batch (VistaLLM's ``VistaLLMBatch.metadata`` too).

Photos are read as displayed: the images are
:class:`~lightning_gpv.tasks.processing.UprightImagePath` s, so every loader (the model's processor, the
pictures of :class:`~lightning_gpv.prediction_writer.PredictionWriter`) applies their EXIF orientation and
predicted boxes are in the displayed image's pixels. Any PIL mode (16-bit, palette, transparency, CMYK,
...) loads by the rules of :mod:`lightning_gpv.tasks.processing`; files over its ``MAX_IMAGE_PIXELS`` are
unreadable.

Unreadable files (not an image, truncated, too large): ``on_bad_sample="raise"`` raises a
:class:`~datamodules.errors.DataFormatError` naming the file. ``"skip"`` keeps every input in its place, so
that ``predict`` gives exactly one result per input in folder order: the sample is replaced by a stand-in
with the same ``sample_id`` and ``metadata["image_paths"]``, white :data:`PLACEHOLDER_SIDE`-pixel images
and ``metadata["error"]`` (the reason, naming the file); it is counted in ``num_skipped``. The model still
runs on the stand-in (processors need an image); ``PredictionWriter`` writes ``{"error": ...}`` for it
instead of the prediction, and other consumers should drop predictions of samples with an ``error``.
(Annotated data sets instead replace a bad sample by the next readable one, see
:class:`~datamodules.base.TaskDataset`, which would shift results against inputs here.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import DataLoader

from datamodules.base import Reader, TaskDataModule, TaskDataset
from datamodules.errors import DataFormatError, OnBadSample
from lightning_gpv.errors import InputError
from lightning_gpv.prediction_writer import PICTURES_DIR, PREDICTIONS_FILE
from lightning_gpv.tasks.catalogue import Task, task_spec
from lightning_gpv.tasks.processing import UprightImagePath, image_size, load_image
from lightning_gpv.tasks.requests import check_request, request_sample
from lightning_gpv.tasks.samples import TaskSample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File suffixes read as images (compared lower-case)."""

PREDICT_SPLIT = "predict"
"""The only split of a folder."""

PLACEHOLDER_SIDE = 32
"""Side in pixels of the white images that stand in for unreadable ones with ``on_bad_sample="skip"``."""


class FolderRecord(NamedTuple):
    """One sample: absolute image paths and the sample id (relative paths joined by ``+``)."""

    images: tuple[str, ...]
    sample_id: str


def prediction_pictures(paths: Sequence[Path]) -> set[Path]:
    """Among ``paths`` (a folder's listing), the picture folders of
    :class:`~lightning_gpv.prediction_writer.PredictionWriter` outputs: each ``pictures*`` folder beside a
    ``predictions*.jsonl``."""
    stem, suffix = Path(PREDICTIONS_FILE).stem, Path(PREDICTIONS_FILE).suffix
    outputs = {p.parent for p in paths if p.name.startswith(stem) and p.name.endswith(suffix)}
    return {p for p in paths if p.parent in outputs and p.name.startswith(PICTURES_DIR) and p.is_dir()}


def list_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files of ``folder`` (:data:`IMAGE_SUFFIXES`, no hidden files), sorted by relative path.

    With ``recursive``, the pictures of earlier predictions written inside ``folder``
    (:func:`prediction_pictures`) are left out: a second run would otherwise predict on the first one's
    drawings.
    """
    candidates = list(folder.rglob("*") if recursive else folder.iterdir())
    skipped = prediction_pictures(candidates) if recursive else set()
    found = []
    for path in candidates:
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if skipped and any(parent in skipped for parent in path.parents):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def require_folder(folder: str | Path) -> Path:
    """``folder`` (``~`` expanded) when it is a folder.

    Raises:
        DataFormatError: It is missing or a file (argument ``folder``).
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "folder not found"
        raise DataFormatError(folder, None, f"{what} (argument `folder`)")
    return path


def check_task_and_prompt(
    task: str | Task, prompt: str | None, images_per_sample: int | None
) -> tuple[Task, int]:
    """Validate the options of a folder; returns the task and the images per sample (``0``: all).

    Raises:
        ValueError: Unknown or unsupported task, a missing or superfluous prompt, or an
            ``images_per_sample`` the task cannot take; the message names the argument.
    """
    spec = check_request(task, prompt, where="ImageFolderDataModule: ")
    task = spec.task
    if images_per_sample is None:
        images_per_sample = spec.min_images if spec.max_images is not None else 0
    if images_per_sample < 0 or (images_per_sample and not spec.accepts_num_images(images_per_sample)):
        most = spec.max_images if spec.max_images is not None else "any"
        raise InputError(
            f"ImageFolderDataModule: argument `images_per_sample`: task {task.value!r} takes "
            f"{spec.min_images}..{most} images per sample, got {images_per_sample}"
            + (" (0 = all images in one sample)" if spec.max_images is None else "")
        )
    if images_per_sample == 0 and spec.max_images is not None:
        raise InputError(
            f"ImageFolderDataModule: argument `images_per_sample`: 0 (all images in one sample) is only for "
            f"tasks with any number of images, not {task.value!r}"
        )
    return task, images_per_sample


class FolderReader(Reader):
    """Lists the image files of a folder and builds one target-less sample per image (or group).

    Args:
        root: The folder.
        task: The task of every sample.
        prompt: The text slot (see the module docstring), or ``None``.
        recursive: Include subfolders.
        images_per_sample: Consecutive images per sample (``0``: all in one sample).
        on_bad_sample: ``"raise"`` or ``"skip"`` unreadable images (in ``__getitem__``).
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        task: Task,
        prompt: str | None = None,
        recursive: bool = False,
        images_per_sample: int = 1,
        on_bad_sample: OnBadSample = "raise",
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.task = task
        self.prompt = prompt
        self.recursive = recursive
        self.images_per_sample = images_per_sample

    @property
    def splits(self) -> tuple[str, ...]:
        return (PREDICT_SPLIT,)

    def read(self, split: str, *, train: bool) -> list[FolderRecord]:
        self.check_split(split)
        folder = require_folder(self.root).resolve()
        paths = list_images(folder, self.recursive)
        if not paths:
            where = "in it or its subfolders" if self.recursive else "in it (recursive=False)"
            raise DataFormatError(
                self.root, None, f"no image files ({', '.join(IMAGE_SUFFIXES)}) {where} (argument `folder`)"
            )
        size = self.images_per_sample or len(paths)
        groups = [paths[i : i + size] for i in range(0, len(paths), size)]
        spec = task_spec(self.task)
        if not spec.accepts_num_images(len(groups[-1])):
            raise DataFormatError(
                self.root,
                None,
                f"{len(paths)} images do not split into samples of {size} for task {self.task.value!r}: the "
                f"last sample would hold {len(groups[-1])} (argument `images_per_sample`)",
            )
        return [
            FolderRecord(
                tuple(str(p) for p in group), "+".join(p.relative_to(folder).as_posix() for p in group)
            )
            for group in groups
        ]

    def sample(self, record: FolderRecord, *, train: bool) -> TaskSample:
        """The sample of ``record``; its images are :class:`UprightImagePath` s (loaded as displayed)."""
        return self._sample(record, [UprightImagePath(p) for p in record.images])

    def error_sample(self, record: FolderRecord, error: DataFormatError | str) -> TaskSample:
        """The stand-in of a sample with an unreadable image (``on_bad_sample="skip"``): white
        ``(PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, 3)`` images, ``metadata["error"]`` the reason (naming the
        file)."""
        blank = np.full((PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, 3), 255, np.uint8)
        return self._sample(record, [blank.copy() for _ in record.images], error=str(error))

    def _sample(self, record: FolderRecord, images: list[Any], error: str | None = None) -> TaskSample:
        metadata = {"image_paths": list(record.images), "prompt": self.prompt, "source": "folder"}
        if error is not None:
            metadata["error"] = error
        return request_sample(
            self.task,
            images,
            self.prompt,
            sample_id=record.sample_id,
            image_ids=record.sample_id.split("+"),
            metadata=metadata,
        )

    def check_images(self, record: FolderRecord) -> None:
        """Read the header of each image of ``record`` (displayed size, pixel limit; nothing decoded).

        Raises:
            DataFormatError: The first unreadable image, naming the file.
        """
        for k, path in enumerate(record.images):
            try:
                image_size(path, exif_transpose=True)
            except (OSError, ValueError) as err:
                raise DataFormatError(path, f"images[{k}]", f"not a readable image: {err}") from err

    def diagnose(self, record: FolderRecord, *, check_headers: bool = True) -> DataFormatError:
        """Why ``record`` is unreadable, in the words the loader used: the header check's error (with
        ``check_headers``), else that of the first image that does not decode."""
        if check_headers:
            try:
                self.check_images(record)
            except DataFormatError as err:
                return err
        for k, path in enumerate(record.images):
            try:
                load_image(path, exif_transpose=True)
            except (OSError, ValueError) as err:
                return DataFormatError(path, f"images[{k}]", f"missing or corrupt image: {err}")
        return DataFormatError(self.root, None, f"sample {record.sample_id!r} was found unreadable")


class FolderDataset(TaskDataset):
    """A :class:`~datamodules.base.TaskDataset` that keeps every input in its place.

    Item ``i`` is always the sample of file (group) ``i``. With ``on_bad_sample="skip"`` an unreadable one
    becomes its :meth:`FolderReader.error_sample` (encoded by the processor when there is one), counted once
    in :attr:`num_skipped`; :meth:`sample` returns that stand-in too afterwards, so that a prediction writer
    reading samples back by index finds the same one. With ``"raise"`` the
    :class:`~datamodules.errors.DataFormatError` names the file.
    """

    reader: FolderReader

    def sample(self, index: int) -> TaskSample:
        """The sample of record ``index`` (headers checked with ``verify_images``, nothing decoded), or its
        stand-in once it was found unreadable."""
        record = self.records[index]
        if self._bad[index]:
            return self.reader.error_sample(
                record, self.reader.diagnose(record, check_headers=self.verify_images)
            )
        if self.verify_images:
            self.reader.check_images(record)
        return self.reader.sample(record, train=self.train)

    def __getitem__(self, index: int) -> Any:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        try:
            return self._item(index)
        except DataFormatError as err:
            if self.reader.on_bad_sample == "raise":
                raise
            if not self._bad[index]:
                self._bad[index] = True
                self.reader.bad.skip(err, count=False)  # counted by the bitmap, across workers
            stand_in = self.reader.error_sample(self.records[index], err)
            return stand_in if self.processor is None else self.processor.encode(stand_in, train=self.train)


class ImageFolderDataModule(TaskDataModule):
    """Every image of a folder, with one prompt, as target-less samples of one task (``predict`` only).

    Args:
        folder: The folder of images.
        task: A task name of :class:`~lightning_gpv.tasks.catalogue.Task` (``vqa``, ``rec``, ...).
        prompt: The question, expression or category the instruction needs (see the module docstring);
            ``None`` for tasks without one.
        recursive: Also read the images of subfolders (sorted by relative path).
        images_per_sample: Consecutive images per sample for multi-image tasks (default: 1; 2 for
            ``nlvr2``; ``0`` = the whole folder, the default of ``coseg`` and ``attcoseg``).
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`
            (``batch_size``, ``num_workers``, ``on_bad_sample``, ``verify_images``, ``max_samples``, ...).

    Raises:
        ValueError: An unknown or unsupported task, a missing or superfluous prompt, a bad
            ``images_per_sample``, or a missing folder (a :class:`~datamodules.errors.DataFormatError`);
            an empty folder raises at ``setup``.
    """

    def __init__(
        self,
        folder: str,
        task: str,
        prompt: str | None = None,
        recursive: bool = False,
        images_per_sample: int | None = None,
        **kwargs: Any,
    ) -> None:
        for split in ("train_split", "val_split", "test_split"):
            if kwargs.get(split) is not None:
                raise InputError(f"ImageFolderDataModule has no {split}: it serves only `predict`")
        if kwargs.get("predict_split") not in (None, PREDICT_SPLIT):
            raise InputError(f"ImageFolderDataModule: predict_split must be {PREDICT_SPLIT!r} (or left out)")
        kwargs.pop("predict_split", None)
        super().__init__(folder, predict_split=PREDICT_SPLIT, **kwargs)
        self.folder = folder
        self.task, self.images_per_sample = check_task_and_prompt(task, prompt, images_per_sample)
        self.prompt = prompt
        self.recursive = recursive
        require_folder(folder)
        self._reader = self.make_reader()

    def make_reader(self) -> FolderReader:
        return FolderReader(
            self.root, self.task, self.prompt, self.recursive, self.images_per_sample, self.on_bad_sample
        )

    def dataset(self, split: str, train: bool | None = None) -> FolderDataset:
        """The :class:`FolderDataset` of the ``predict`` split (listed on first use and cached)."""
        key = (split, bool(train))
        if key not in self._datasets:
            records = self.reader.read(split, train=bool(train))
            if self.max_samples is not None:
                records = records[: self.max_samples]
            self._datasets[key] = FolderDataset(
                records,
                self.reader,
                train=bool(train),
                processor=self.processor,
                verify_images=self.verify_images,
                split=split,
            )
        return self._datasets[key]  # type: ignore[return-value]

    def _only_predict(self, kind: str) -> DataLoader:
        raise InputError(
            f"ImageFolderDataModule has images without targets and serves only `predict`; it has no {kind} "
            "loader (use a data set with annotations for fit, validate and test)"
        )

    def train_dataloader(self) -> DataLoader:
        return self._only_predict("train")

    def val_dataloader(self) -> DataLoader:
        return self._only_predict("validation")

    def test_dataloader(self) -> DataLoader:
        return self._only_predict("test")
