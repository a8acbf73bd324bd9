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

What is checked when reading (a failure is a :class:`~datamodules.errors.DataFormatError` naming the file and
the field; ``on_bad_sample="skip"`` drops the ref's samples and counts the ref once):

* a ref has a non-empty sentence or more, ref and sentence ids not used by an earlier ref of the split, and
  its annotation and image exist in ``instances.json`` (the annotation of the ref's image);
* the annotation's box is finite with positive width and height, and inside the image: up to
  :func:`~datamodules.io.overshoot_tolerance` it is clipped, farther out it is refused;
* with RES, its segmentation is a non-empty mask of the image (:func:`~datamodules.io.checked_segmentation`:
  no degenerate polygon only, no garbage or mis-sized RLE); a bad one drops only the ref's RES samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from datamodules.base import Reader, TaskDataModule
from datamodules.coco import ImageInfo, read_images
from datamodules.errors import DataFormatError, OnBadSample, UnknownSplitError
from datamodules.io import (
    box_in_image,
    check_new_id,
    checked_segmentation,
    coco_image_dirs,
    coco_mask,
    field,
    first_existing,
    read_json,
    xywh_box,
)
from datamodules.safe_pickle import safe_load_pickle
from lightning_gpv.errors import InputError
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
            raise InputError(f"dataset must be one of {sorted(SPLIT_SCHEMES)}, got {self.dataset!r}")
        schemes = SPLIT_SCHEMES[self.dataset]
        if self.split_by not in schemes:
            raise InputError(f"{self.dataset} has split_by {sorted(schemes)}, got {self.split_by!r}")
        if not self.tasks or set(self.tasks) - {"rec", "res", "reg"}:
            raise InputError(
                f"tasks must be a non-empty subset of ['rec', 'res', 'reg'], got {list(self.tasks)}"
            )


class Instance(NamedTuple):
    """A COCO instance a ref points at.

    Attributes:
        box: ``(4,)`` float32 ``xyxy`` pixels of its image (checked finite with positive size; clipped to the
            image once a ref resolves it, see :meth:`InstanceTable.resolve`).
        segmentation: As in the file; once resolved with masks, checked and cleaned by
            :func:`~datamodules.io.checked_segmentation`.
        category: The category name (or its id as text when ``categories[]`` lacks it).
        index: Its position in ``annotations[]`` (error messages name ``annotations[index]``).
        image_id: The ``image_id`` the annotation gives, ``None`` when it gives none.
    """

    box: np.ndarray
    segmentation: Any
    category: str
    index: int = -1
    image_id: int | None = None


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


@dataclass
class InstanceTable:
    """What a refer-style ``instances.json`` holds, read once per reader (:func:`read_instances`).

    Annotations are checked lazily, when a ref points at them (:meth:`resolve`): a broken annotation that no
    ref uses costs nothing and is not reported, and one that a ref uses is reported for that ref (the ref's
    samples are dropped and counted once).

    Attributes:
        path: The ``instances.json`` file.
        images: ``{image_id: ImageInfo}`` of the readable ``images[]`` entries.
        bad_images: Ids of ``images[]`` entries reported as bad (refs on them are dropped silently).
        anns: ``{ann_id: Instance}`` of the annotations with a valid id, category, image id and box.
        bad_anns: ``{ann_id: error}`` of the annotations with a valid id but a bad field.
    """

    path: Path
    images: dict[int, ImageInfo]
    bad_images: set[int]
    anns: dict[int, Instance]
    bad_anns: dict[int, DataFormatError]
    _resolved: dict[tuple[int, int, bool], tuple[Instance, DataFormatError | None]] = dataclasses.field(
        default_factory=dict
    )

    def resolve(
        self, ann_id: int, img: ImageInfo, masks: bool, refs_path: Path, name: str
    ) -> tuple[Instance, DataFormatError | None]:
        """The instance ``ann_id`` of image ``img``, checked, and the error of its mask if it has one.

        The box is clipped to the image (:func:`~datamodules.io.box_in_image`); with ``masks`` the
        segmentation is checked and cleaned (:func:`~datamodules.io.checked_segmentation`) and a bad one is
        returned as the second item (only mask samples are lost), else that item is ``None``.

        Args:
            ann_id: The annotation id the ref gives.
            img: The ref's image.
            masks: Whether the caller yields mask samples (RES, GRES).
            refs_path: The refs file, for messages.
            name: The ref's field, e.g. ``"[3].ann_id"``.

        Raises:
            DataFormatError: The annotation is missing or bad, belongs to another image, or its box lies
                outside the image.
        """
        key = (ann_id, img.image_id, masks)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(ann_id, img, masks, refs_path, name)
        return self._resolved[key]

    def _resolve(
        self, ann_id: int, img: ImageInfo, masks: bool, refs_path: Path, name: str
    ) -> tuple[Instance, DataFormatError | None]:
        if ann_id in self.bad_anns:
            raise self.bad_anns[ann_id]
        if ann_id not in self.anns:
            raise DataFormatError(refs_path, name, f"annotation {ann_id} not in {self.path.name}")
        inst = self.anns[ann_id]
        where = f"annotations[{inst.index}]"
        if inst.image_id is not None and inst.image_id != img.image_id:
            raise DataFormatError(
                refs_path,
                name,
                f"annotation {ann_id} is of image {inst.image_id}, the ref's is {img.image_id}",
            )
        box = box_in_image(inst.box, img.height, img.width, self.path, f"{where}.bbox")
        inst = inst._replace(box=box)
        if not masks:
            return inst, None
        try:
            seg = checked_segmentation(
                inst.segmentation, img.height, img.width, self.path, f"{where}.segmentation"
            )
        except DataFormatError as err:
            return inst, err
        return inst._replace(segmentation=seg), None


def read_instances(path: Path, image_dir: Path, reader: Reader) -> InstanceTable:
    """Images and annotations of a refer-style ``instances.json``.

    Bad ``images[]`` entries, and annotations without a readable ``id`` or repeating an earlier one (the first
    stands), are reported to ``reader``; an annotation with an id but another bad field (``bbox``,
    ``segmentation`` type, ``image_id``, ``category_id``) is kept in :attr:`InstanceTable.bad_anns` and
    reported only when a ref uses it.
    """
    data = read_json(path, dict)
    bad_images: set[int] = set()
    images = read_images(data, path, image_dir, reader, bad_images)
    cats: dict[int, str] = {}
    # categories[] only names the categories: a file without it is usable
    for i, c in enumerate(field(data, "categories", list, path, "") if "categories" in data else []):
        if isinstance(c, dict) and type(c.get("id")) is int:
            cats[c["id"]] = str(c.get("name", c["id"]))
        else:
            reader.report(DataFormatError(path, f"categories[{i}]", "expected {id, name}"))
    anns: dict[int, Instance] = {}
    bad_anns: dict[int, DataFormatError] = {}
    first: dict[int, int] = {}
    for i, ann in enumerate(field(data, "annotations", list, path, "")):
        where = f"annotations[{i}]"
        try:
            ann_id = field(ann, "id", int, path, where)
            check_new_id(first, ann_id, path, where, "annotation id")  # the first one stands
        except DataFormatError as err:
            reader.report(err)
            continue
        first[ann_id] = i
        try:
            box = xywh_box(field(ann, "bbox", list, path, where), path, f"{where}.bbox")
            seg = field(ann, "segmentation", (list, dict), path, where)
            image_id = field(ann, "image_id", int, path, where) if "image_id" in ann else None
            cat_id = field(ann, "category_id", int, path, where) if "category_id" in ann else None
        except DataFormatError as err:
            bad_anns[ann_id] = err
            continue
        anns[ann_id] = Instance(box, seg, cats.get(cat_id, str(cat_id)), i, image_id)
    return InstanceTable(path, images, bad_images, anns, bad_anns)


def check_split_present(refs: list[Any], split: str, path: Path) -> None:
    """Raise :class:`UnknownSplitError` (listing the splits the refs have) if no ref is of ``split``."""
    found = {r.get("split") for r in refs if isinstance(r, dict) and isinstance(r.get("split"), str)}
    if split not in found:
        raise UnknownSplitError(path, split, sorted(found))


def sentences_of(ref: dict[str, Any], path: Path, where: str) -> list[tuple[int | None, str]]:
    """``[(sent_id, sentence)]`` of a ref (``sent`` is the normalised text; ``raw`` when it is missing).

    Raises:
        DataFormatError: No sentence, or one whose text is missing or empty (it is the expression of REC and
            RES, and the target of REG).
    """
    out = []
    sentences = field(ref, "sentences", list, path, where)
    if not sentences:
        raise DataFormatError(path, f"{where}.sentences", "a ref needs at least one sentence")
    for j, s in enumerate(sentences):
        w = f"{where}.sentences[{j}]"
        text = s.get("sent", s.get("raw")) if isinstance(s, dict) else None
        if not isinstance(text, str):
            raise DataFormatError(path, f"{w}.sent", "missing field (neither 'sent' nor 'raw' is a string)")
        if not text.strip():
            raise DataFormatError(path, f"{w}.sent", "empty sentence")
        sid = s.get("sent_id")
        out.append((sid if type(sid) is int else None, text.strip()))
    return out


def check_unique_ids(
    ref_id: int,
    sents: list[tuple[int | None, str]],
    seen_refs: set[int],
    seen_sents: set[int],
    path: Path,
    where: str,
) -> None:
    """Raise if ``ref_id`` or a sentence id was used before (sample ids are made of them: a repeat would make
    two samples that metrics count as one); else add them to ``seen_refs`` and ``seen_sents``."""
    if ref_id in seen_refs:
        raise DataFormatError(path, f"{where}.ref_id", f"duplicate ref id {ref_id}")
    own: set[int] = set()
    for j, (sid, _) in enumerate(sents):
        if sid is not None and (sid in seen_sents or sid in own):
            raise DataFormatError(path, f"{where}.sentences[{j}].sent_id", f"duplicate sentence id {sid}")
        if sid is not None:
            own.add(sid)
    seen_refs.add(ref_id)
    seen_sents |= own


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
        table: InstanceTable = self.cached(
            "instances", lambda: read_instances(self.folder / "instances.json", self.images_folder(), self)
        )
        check_split_present(refs, split, refs_path)
        masks = Task.RES in self.tasks
        seen_refs: set[int] = set()
        seen_sents: set[int] = set()
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
                check_unique_ids(ref_id, sents, seen_refs, seen_sents, refs_path, where)
                if image_id in table.bad_images:
                    continue  # reported with images[]
                if image_id not in table.images:
                    raise DataFormatError(
                        refs_path, f"{where}.image_id", f"image {image_id} not in {table.path.name}"
                    )
                img = table.images[image_id]
                inst, mask_error = table.resolve(ann_id, img, masks, refs_path, f"{where}.ann_id")
            except DataFormatError as err:
                self.report(err)
                continue
            tasks = self.tasks
            if mask_error is not None:  # its RES samples are lost, not its REC and REG ones
                self.report(mask_error)
                tasks = tuple(t for t in tasks if t != Task.RES)
            records += self._records(tasks, ref_id, ann_id, img, inst, sents, train)
        return records

    def _records(
        self,
        tasks: tuple[Task, ...],
        ref_id: int,
        ann_id: int,
        img: ImageInfo,
        inst: Instance,
        sents: list[tuple[int | None, str]],
        train: bool,
    ) -> list[RefRecord]:
        out = []
        for task in tasks:
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
            where = f"annotations[{inst.index}].segmentation"
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
