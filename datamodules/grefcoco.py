"""gRefCOCO (generalized referring expressions): GREC and GRES samples, one per sentence.

Files (ReLA ``datasets/DATASET.md``; ``root`` is the ``grefcoco`` folder)::

    root/grefs(unc).json     JSON list of refs (``grefs(unc).p`` is read when the JSON is absent)
    root/instances.json      COCO-style images, annotations, categories
    root/../images/train2014/COCO_train2014_*.jpg   (or root/images/train2014, root/train2014; ``image_dir``)

A ref's ``ann_id`` (and ``category_id``) is an int or a list; ``[-1]`` (or a ``no_target`` flag) means the
expression refers to nothing. Targets: every referred box (GREC) or mask (GRES); a no-target sample has
empty targets and ``metadata["no_target"] = True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from datamodules.base import Reader, TaskDataModule
from datamodules.coco import ImageInfo
from datamodules.errors import DataFormatError, OnBadSample, UnknownSplitError
from datamodules.io import coco_image_dirs, coco_mask, field, first_existing, read_json
from datamodules.refcoco import Instance, read_instances, sentences_of
from datamodules.safe_pickle import safe_load_pickle
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
            raise ValueError(f"tasks must be a non-empty subset of ['grec', 'gres'], got {list(self.tasks)}")


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
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
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
        found = {r.get("split") for r in refs if isinstance(r, dict)}
        if split not in found:
            raise UnknownSplitError(path, split, sorted(s for s in found if isinstance(s, str)))
        images, anns = self.cached(
            "instances", lambda: read_instances(self.root / "instances.json", self.images_folder(), self)
        )
        records: list[GRefRecord] = []
        for i, ref in enumerate(refs):
            where = f"[{i}]"
            try:
                if field(ref, "split", str, path, where) != split:
                    continue
                ref_id = field(ref, "ref_id", int, path, where)
                image_id = field(ref, "image_id", int, path, where)
                ann_ids = tuple(
                    a for a in _ids(field(ref, "ann_id", (int, list), path, where), path, f"{where}.ann_id")
                )
                sents = sentences_of(ref, path, where)
                no_target = ann_ids == (-1,) or bool(ref.get("no_target", False))
                ann_ids = () if no_target else ann_ids
                if missing := [a for a in ann_ids if a not in anns]:
                    raise DataFormatError(
                        path, f"{where}.ann_id", f"annotations {missing} not in instances.json"
                    )
                if image_id not in images:
                    raise DataFormatError(
                        path, f"{where}.image_id", f"image {image_id} not in instances.json"
                    )
            except DataFormatError as err:
                self.report(err)
                continue
            insts = tuple(anns[a] for a in ann_ids)
            for task in self.tasks:
                for k, (sid, text) in enumerate(sents):
                    key = sid if sid is not None else f"{ref_id}_{k}"
                    rec = GRefRecord(
                        task, images[image_id], f"{task.value}-{key}", text, insts, ref_id, ann_ids, sid
                    )
                    records.append(rec)
        return records

    def sample(self, record: GRefRecord, *, train: bool) -> TaskSample:
        img = record.image
        boxes = (
            np.stack([i.box for i in record.instances]) if record.instances else np.zeros((0, 4), np.float32)
        )
        masks = []
        if record.task == Task.GRES:
            path = self.root / "instances.json"
            masks = [
                coco_mask(i.segmentation, img.height, img.width, path, f"annotations[id={a}].segmentation")
                for i, a in zip(record.instances, record.ann_ids)
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
