"""RefCOCO, RefCOCO+ and RefCOCOg (refer API layout): REC, RES and REG samples.

Files (``root`` holds one folder per data set, as lichengunc/refer's ``data/``)::

    root/refcoco/instances.json   root/refcoco/refs(unc).p   root/refcoco/refs(google).p
    root/refcoco+/instances.json  root/refcoco+/refs(unc).p
    root/refcocog/instances.json  root/refcocog/refs(umd).p  root/refcocog/refs(google).p
    root/images/train2014/COCO_train2014_*.jpg   (or root/train2014/..., or ``image_dir``)

``refs(*).p`` is a Python-2 pickle (a list of ``{ref_id, ann_id, image_id, category_id, split, sent_ids,
sentences: [{raw, sent, sent_id, tokens}], file_name}``), read with the restricted unpickler of
:mod:`datamodules.safe_pickle`. The ref's ``file_name`` carries an annotation suffix; the image file comes
from ``instances.json``.

Samples: REC (target box) and RES (target mask) one per sentence; REG (``region`` = the box, target = an
expression) one per sentence on a training split and one per ref on other splits, with every sentence of the
ref in ``target.answers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from datamodules.base import Reader, TaskDataModule
from datamodules.coco import ImageInfo, read_images
from datamodules.errors import DataFormatError, OnBadSample, UnknownSplitError
from datamodules.io import coco_image_dirs, coco_mask, field, first_existing, read_json, xywh_box
from datamodules.safe_pickle import safe_load_pickle
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

RefDataset = Literal["refcoco", "refcoco+", "refcocog"]
RefTask = Literal["rec", "res", "reg"]

SPLIT_SCHEMES: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
}
"""Data set -> ``split_by`` -> its splits (refer API, ``data/README.md``)."""


@dataclass(frozen=True)
class RefCocoOptions:
    """Which refer data set and split scheme a RefCOCO reader reads, what it yields and where the images are.

    Args:
        dataset: ``refcoco``, ``refcoco+`` or ``refcocog``.
        split_by: ``unc`` (refcoco, refcoco+: ``train/val/testA/testB``), ``google`` (refcoco:
            ``train/val/test``; refcocog: ``train/val``) or ``umd`` (refcocog: ``train/val/test``).
        tasks: Which of ``rec``, ``res``, ``reg`` to yield.
        image_dir: Folder of the COCO ``train2014`` images (default: ``root/images/train2014``,
            ``root/train2014`` or the sibling ``../coco/images/train2014``).
    """

    dataset: RefDataset = "refcoco"
    split_by: Literal["unc", "google", "umd"] = "unc"
    tasks: tuple[RefTask, ...] = ("rec", "res")
    image_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.dataset not in SPLIT_SCHEMES:
            raise ValueError(f"dataset must be one of {sorted(SPLIT_SCHEMES)}, got {self.dataset!r}")
        schemes = SPLIT_SCHEMES[self.dataset]
        if self.split_by not in schemes:
            raise ValueError(f"{self.dataset} has split_by {sorted(schemes)}, got {self.split_by!r}")
        if not self.tasks or set(self.tasks) - {"rec", "res", "reg"}:
            raise ValueError(
                f"tasks must be a non-empty subset of ['rec', 'res', 'reg'], got {list(self.tasks)}"
            )


class Instance(NamedTuple):
    """A COCO instance a ref points at: ``box`` ``(4,)`` xyxy pixels, ``segmentation`` as in the file."""

    box: np.ndarray
    segmentation: Any
    category: str


class RefRecord(NamedTuple):
    """One REC/RES/REG sample: one sentence (``sentences`` has one item) or one ref (all its sentences)."""

    task: Task
    image: ImageInfo
    sample_id: str
    sentences: tuple[str, ...]
    instance: Instance
    ref_id: int
    ann_id: int
    sent_id: int | None


def read_instances(
    path: Path, image_dir: Path, reader: Reader
) -> tuple[dict[int, ImageInfo], dict[int, Instance]]:
    """Images and annotations of a refer-style ``instances.json``; bad entries are reported to ``reader``."""
    data = read_json(path, dict)
    images = read_images(data, path, image_dir, reader)
    cats = {}
    for i, c in enumerate(data.get("categories", [])):
        if isinstance(c, dict) and isinstance(c.get("id"), int):
            cats[c["id"]] = str(c.get("name", c["id"]))
        else:
            reader.report(DataFormatError(path, f"categories[{i}]", "expected {id, name}"))
    anns: dict[int, Instance] = {}
    for i, ann in enumerate(field(data, "annotations", list, path, "")):
        where = f"annotations[{i}]"
        try:
            ann_id = field(ann, "id", int, path, where)
            box = xywh_box(field(ann, "bbox", list, path, where), path, f"{where}.bbox")
            seg = field(ann, "segmentation", (list, dict), path, where)
            cat = cats.get(ann.get("category_id"), str(ann.get("category_id")))
        except DataFormatError as err:
            reader.report(err)
            continue
        anns[ann_id] = Instance(box, seg, cat)
    return images, anns


def sentences_of(ref: dict[str, Any], path: Path, where: str) -> list[tuple[int | None, str]]:
    """``[(sent_id, sentence)]`` of a ref (``sent`` is the normalised text; ``raw`` when it is missing)."""
    out = []
    for j, s in enumerate(field(ref, "sentences", list, path, where)):
        w = f"{where}.sentences[{j}]"
        text = s.get("sent", s.get("raw")) if isinstance(s, dict) else None
        if not isinstance(text, str):
            raise DataFormatError(path, f"{w}.sent", "missing field (neither 'sent' nor 'raw' is a string)")
        sid = s.get("sent_id")
        out.append((sid if isinstance(sid, int) else None, text.strip()))
    return out


class RefCocoReader(Reader):
    """Reads the refer API files of one data set and split scheme into :class:`RefRecord` s.

    Args:
        root: Folder holding ``refcoco/``, ``refcoco+/``, ``refcocog/`` (or directly the data set folder).
        options: Data set, split scheme, tasks and image folder.
        on_bad_sample: ``"raise"`` or ``"skip"`` bad refs.
    """

    name = "refcoco"

    def __init__(
        self,
        root: str | Path,
        options: RefCocoOptions = RefCocoOptions(),
        on_bad_sample: OnBadSample = "raise",
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.options = options
        self.dataset = options.dataset
        self.split_by = options.split_by
        self.tasks = tuple(Task(t) for t in options.tasks)
        self.name = f"{options.dataset}({options.split_by})"
        self.bad.name = self.name

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLIT_SCHEMES[self.dataset][self.split_by]

    @property
    def folder(self) -> Path:
        """The data set folder (``root/<dataset>``, or ``root`` itself if it holds the refs file)."""
        sub = self.root / self.dataset
        return sub if sub.is_dir() or not (self.root / "instances.json").is_file() else self.root

    def images_folder(self) -> Path:
        if self.options.image_dir is not None:
            return Path(self.options.image_dir).expanduser()
        cands = [*coco_image_dirs(self.root, "train2014"), self.folder / "images"]
        return first_existing(cands, "image folder of train2014", self.root)

    def read(self, split: str, *, train: bool) -> list[RefRecord]:
        refs_path = self.folder / f"refs({self.split_by}).p"
        self.check_split(split, refs_path)
        refs = self.cached("refs", lambda: safe_load_pickle(refs_path))
        if not isinstance(refs, list):
            raise DataFormatError(refs_path, None, f"expected a list of refs, got {type(refs).__name__}")
        images, anns = self.cached(
            "instances", lambda: read_instances(self.folder / "instances.json", self.images_folder(), self)
        )
        found = {r.get("split") for r in refs if isinstance(r, dict)}
        if split not in found:
            raise UnknownSplitError(refs_path, split, sorted(s for s in found if isinstance(s, str)))
        records: list[RefRecord] = []
        for i, ref in enumerate(refs):
            where = f"[{i}]"
            try:
                if field(ref, "split", str, refs_path, where) != split:
                    continue
                ref_id = field(ref, "ref_id", int, refs_path, where)
                ann_id = field(ref, "ann_id", int, refs_path, where)
                image_id = field(ref, "image_id", int, refs_path, where)
                sents = sentences_of(ref, refs_path, where)
                if ann_id not in anns:
                    raise DataFormatError(
                        refs_path, f"{where}.ann_id", f"annotation {ann_id} not in instances.json"
                    )
                if image_id not in images:
                    raise DataFormatError(
                        refs_path, f"{where}.image_id", f"image {image_id} not in instances.json"
                    )
            except DataFormatError as err:
                self.report(err)
                continue
            records += self._records(ref_id, ann_id, images[image_id], anns[ann_id], sents, train)
        return records

    def _records(
        self,
        ref_id: int,
        ann_id: int,
        img: ImageInfo,
        inst: Instance,
        sents: list[tuple[int | None, str]],
        train: bool,
    ) -> list[RefRecord]:
        out = []
        for task in self.tasks:
            if task == Task.REG and not train:
                texts = tuple(s for _, s in sents)
                out.append(RefRecord(task, img, f"reg-ref{ref_id}", texts, inst, ref_id, ann_id, None))
                continue
            for k, (sid, text) in enumerate(sents):
                key = sid if sid is not None else f"{ref_id}_{k}"
                out.append(RefRecord(task, img, f"{task.value}-{key}", (text,), inst, ref_id, ann_id, sid))
        return out

    def sample(self, record: RefRecord, *, train: bool) -> TaskSample:
        img, inst = record.image, record.instance
        meta = {
            "ref_id": record.ref_id,
            "ann_id": record.ann_id,
            "sent_id": record.sent_id,
            "dataset": self.dataset,
        }
        common: dict[str, Any] = {
            "image_sizes": [(img.height, img.width)],
            "sample_id": record.sample_id,
            "image_ids": [img.image_id],
            "category": inst.category,
            "metadata": meta,
        }
        if record.task == Task.REG:
            target = Target(text=record.sentences[0], answers=list(record.sentences))
            return TaskSample(Task.REG, [img.path], target, region=inst.box.copy(), **common)
        masks = []
        if record.task == Task.RES:
            where = f"annotations[id={record.ann_id}].segmentation"
            masks = [
                coco_mask(inst.segmentation, img.height, img.width, self.folder / "instances.json", where)
            ]
        target = Target(boxes=inst.box[None].copy(), masks=masks)
        return TaskSample(record.task, [img.path], target, expression=record.sentences[0], **common)


class RefCocoDataModule(TaskDataModule):
    """RefCOCO / RefCOCO+ / RefCOCOg with the ``unc``, ``google`` or ``umd`` splits (refer API files).

    Args:
        root: Folder holding ``refcoco/``, ``refcoco+/``, ``refcocog/`` and the COCO images.
        options: Data set, split scheme, tasks (default ``rec``, ``res``) and image folder.
        train_split: E.g. ``train``.
        val_split: E.g. ``val``.
        test_split: E.g. ``testA``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: RefCocoOptions = RefCocoOptions(),
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self.options = options

    def make_reader(self) -> RefCocoReader:
        return RefCocoReader(self.root, self.options, self.on_bad_sample)
