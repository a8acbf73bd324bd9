"""gRefCOCO (generalized referring expressions): GREC and GRES samples, one per sentence.

Files (ReLA ``datasets/DATASET.md``; ``root`` is the ``grefcoco`` folder)::

    root/grefs(unc).json     JSON list of refs (``grefs(unc).p`` is read when the JSON is absent)
    root/instances.json      COCO-style images, annotations, categories
    root/../images/train2014/COCO_train2014_*.jpg   (or root/images/train2014, root/train2014; ``image_dir``)

A ref's ``ann_id`` (and ``category_id``) is an int or a list; ``[-1]`` means the expression refers to nothing
(a ``no_target`` flag, where present, must be a bool that agrees). Targets: every referred box (GREC) or mask
(GRES); a no-target sample has empty targets and ``metadata["no_target"] = True``, the only empty target.

Refs, boxes and masks are checked when read as in :mod:`datamodules.refcoco` (a bad mask of any referred
instance drops the ref's GRES samples only); the ids of a ref's ``ann_id`` list must be distinct.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from datamodules.base import Reader, TaskDataModule
from datamodules.coco import ImageInfo
from datamodules.errors import DataFormatError, OnBadSample
from datamodules.io import coco_image_dirs, coco_mask, field, first_existing, read_json
from datamodules.refcoco import (
    Instance,
    InstanceTable,
    check_split_present,
    check_unique_ids,
    read_instances,
    sentences_of,
)
from datamodules.safe_pickle import safe_load_pickle
from lightning_gpv.errors import InputError
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

GREFCOCO_SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB")
GRefTask = Literal["grec", "gres"]


@dataclass(frozen=True)
class GRefCocoOptions:
    """What a gRefCOCO reader yields and where the images are.

    Args:
        tasks: Which of ``grec``, ``gres`` to yield.
        image_dir: Folder of the COCO ``train2014`` images (default ``root/../images/train2014``,
            ``root/images/train2014`` or ``root/train2014``).
    """

    tasks: tuple[GRefTask, ...] = ("grec", "gres")
    image_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or set(self.tasks) - {"grec", "gres"}:
            raise InputError(f"tasks must be a non-empty subset of ['grec', 'gres'], got {list(self.tasks)}")


class GRefRecord(NamedTuple):
    """One sentence with all the instances it refers to (none for a no-target expression)."""

    task: Task
    image: ImageInfo
    sample_id: str
    sentence: str
    instances: tuple[Instance, ...]
    ref_id: int
    ann_ids: tuple[int, ...]
    sent_id: int | None


def _ids(value: Any, path: Path, name: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(type(v) is int for v in items):
        raise DataFormatError(path, name, f"expected an integer or a list of integers, got {value!r:.60}")
    return tuple(items)


class GRefCocoReader(Reader):
    """Reads ``grefs(unc).json`` (or ``.p``) and ``instances.json`` into :class:`GRefRecord` s.

    Args:
        root: The ``grefcoco`` folder.
        options: Tasks and image folder.
        on_bad_sample: ``"raise"`` or ``"skip"`` bad refs.
    """

    name = "grefcoco"
    split_by = "unc"
    """The refs file suffix: gRefCOCO has the one split scheme."""

    def __init__(
        self,
        root: str | Path,
        options: GRefCocoOptions = GRefCocoOptions(),
        on_bad_sample: OnBadSample = "raise",
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.options = options
        self.tasks = tuple(Task(t) for t in options.tasks)

    @property
    def splits(self) -> tuple[str, ...]:
        return GREFCOCO_SPLITS

    def refs_file(self) -> Path:
        """``grefs(unc).json``, else ``grefs(unc).p``."""
        json_path = self.root / f"grefs({self.split_by}).json"
        pickle_path = json_path.with_suffix(".p")
        return pickle_path if not json_path.is_file() and pickle_path.is_file() else json_path

    def images_folder(self) -> Path:
        if self.options.image_dir is not None:
            return Path(self.options.image_dir).expanduser()
        return first_existing(coco_image_dirs(self.root, "train2014"), "image folder of train2014", self.root)

    def read(self, split: str, *, train: bool) -> list[GRefRecord]:
        path = self.refs_file()
        self.check_split(split, path)
        refs = self.cached(
            "refs", lambda: safe_load_pickle(path) if path.suffix == ".p" else read_json(path, list)
        )
        if not isinstance(refs, list):
            raise DataFormatError(path, None, f"expected a list of refs, got {type(refs).__name__}")
        check_split_present(refs, split, path)
        table: InstanceTable = self.cached(
            "instances", lambda: read_instances(self.root / "instances.json", self.images_folder(), self)
        )
        masks = Task.GRES in self.tasks
        seen_refs: set[int] = set()
        seen_sents: set[int] = set()
        records: list[GRefRecord] = []
        for i, ref in enumerate(refs):
            where = f"[{i}]"
            try:
                if field(ref, "split", str, path, where) != split:
                    continue
                ref_id = field(ref, "ref_id", int, path, where)
                image_id = field(ref, "image_id", int, path, where)
                ann_ids = self._ann_ids(ref, path, where)
                sents = sentences_of(ref, path, where)
                check_unique_ids(ref_id, sents, seen_refs, seen_sents, path, where)
                if image_id in table.bad_images:
                    continue  # reported with images[]
                if image_id not in table.images:
                    raise DataFormatError(
                        path, f"{where}.image_id", f"image {image_id} not in {table.path.name}"
                    )
                img = table.images[image_id]
                resolved = [table.resolve(a, img, masks, path, f"{where}.ann_id") for a in ann_ids]
            except DataFormatError as err:
                self.report(err)
                continue
            tasks = self.tasks
            mask_error = next((e for _, e in resolved if e is not None), None)
            if mask_error is not None:  # its GRES samples are lost, not its GREC ones
                self.report(mask_error)
                tasks = tuple(t for t in tasks if t != Task.GRES)
            insts = tuple(inst for inst, _ in resolved)
            for task in tasks:
                for k, (sid, text) in enumerate(sents):
                    key = sid if sid is not None else f"{ref_id}_{k}"
                    rec = GRefRecord(task, img, f"{task.value}-{key}", text, insts, ref_id, ann_ids, sid)
                    records.append(rec)
        return records

    @staticmethod
    def _ann_ids(ref: dict[str, Any], path: Path, where: str) -> tuple[int, ...]:
        """The annotation ids a ref refers to, ``()`` for a no-target expression.

        ``ann_id`` is an int or a non-empty list of distinct ints; ``[-1]`` (or ``-1``) marks a no-target
        expression. ``no_target``, when present, must be a bool that agrees with it.
        """
        ann_ids = _ids(field(ref, "ann_id", (int, list), path, where), path, f"{where}.ann_id")
        canonical = ann_ids == (-1,)
        flag = ref.get("no_target")
        if flag is not None and not isinstance(flag, bool):
            raise DataFormatError(path, f"{where}.no_target", f"expected true or false, got {flag!r:.60}")
        if flag is not None and flag != canonical:
            raise DataFormatError(
                path,
                f"{where}.no_target",
                f"no_target is {str(flag).lower()} but ann_id is {list(ann_ids)} "
                "([-1] marks a no-target expression)",
            )
        if len(set(ann_ids)) != len(ann_ids):
            raise DataFormatError(path, f"{where}.ann_id", f"repeated annotation id in {list(ann_ids)}")
        return () if canonical else ann_ids

    def sample(self, record: GRefRecord, *, train: bool) -> TaskSample:
        img = record.image
        boxes = (
            np.stack([i.box for i in record.instances]) if record.instances else np.zeros((0, 4), np.float32)
        )
        masks = []
        if record.task == Task.GRES:
            path = self.root / "instances.json"
            masks = [
                coco_mask(i.segmentation, img.height, img.width, path, f"annotations[{i.index}].segmentation")
                for i in record.instances
            ]
        meta = {
            "ref_id": record.ref_id,
            "ann_ids": list(record.ann_ids),
            "sent_id": record.sent_id,
            "no_target": not record.instances,
        }
        return TaskSample(
            record.task,
            [img.path],
            Target(boxes=boxes, masks=masks),
            expression=record.sentence,
            image_sizes=[(img.height, img.width)],
            sample_id=record.sample_id,
            image_ids=[img.image_id],
            metadata=meta,
        )


class GRefCocoDataModule(TaskDataModule):
    """gRefCOCO (``train``, ``val``, ``testA``, ``testB``): multi-target and no-target expressions.

    Args:
        root: The ``grefcoco`` folder (``grefs(unc).json``, ``instances.json``).
        options: Tasks (default both) and image folder.
        train_split: E.g. ``train``.
        val_split: E.g. ``val``.
        test_split: E.g. ``testA``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: GRefCocoOptions = GRefCocoOptions(),
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self.options = options

    def make_reader(self) -> GRefCocoReader:
        return GRefCocoReader(self.root, self.options, self.on_bad_sample)
