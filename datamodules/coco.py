"""COCO captioning, localization and classification, built the GPV-1 way, on the original or COCO-SCE split.

Files (official layout; ``root`` is the COCO folder)::

    root/annotations/captions_{split}.json     captioning ({images, annotations: [{image_id, id, caption}]})
    root/annotations/instances_{split}.json    localization, classification (images, annotations, categories)
    root/annotations/image_info_{split}.json   captioning on test splits (images only)
    root/{split}/COCO_{split}_000000057870.jpg  images (also root/images/{split}/...; or ``image_dir``)

Samples (GPV-1, ``data/coco/preprocess_coco_*.py``):

* captioning: one per caption (``caption_unit="caption"``), target = the caption, answers = all captions of
  the image; or one per image (``"image"``);
* localization: one per image x category, target boxes = all its instances (crowd included by default);
* classification: one per image x category, the instance with the smallest annotation id; ``region`` is its
  box grown by 20% of its width/height on each side (clipped), the crop GPV-1 classifies; target = the name.

Checked when reading (a failure is a :class:`~datamodules.errors.DataFormatError` naming the file and the
field; ``on_bad_sample="skip"`` drops the entry and counts it): image entries need a unique id, a file name
and a size in ``1..65535``; captions must be non-empty and their ids unique, and every image of a captions
file needs one (test splits' ``image_info`` files have none); categories need a unique id and a non-empty
name; annotation ids are unique and boxes finite with positive size inside their image (a small overshoot,
:func:`~datamodules.io.overshoot_tolerance`, is clipped). Segmentations are not read: no task here has masks.

What to read is one :class:`CocoOptions`. With :class:`~datamodules.sce.SceOptions` as well, the splits are
``train``/``val`` (a partition of ``train2014`` images) and ``test`` (``val2014``): see
:mod:`datamodules.sce`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from datamodules.base import Reader, TaskDataModule
from datamodules.errors import DataFormatError, OnBadSample
from datamodules.io import (
    INT64_MAX,
    INT64_MIN,
    box_outside_message,
    check_new_id,
    clip_boxes,
    coco_image_dirs,
    field,
    first_existing,
    image_size,
    read_json,
    xywh_boxes,
)
from datamodules.sce import PAPER_SCE, SceOptions
from lightning_gpv.errors import InputError
from lightning_gpv.geometry.boxes import expand_box
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

CocoTask = Literal["captioning", "localization", "classification"]

COCO_SPLITS: tuple[str, ...] = (
    "train2014",
    "val2014",
    "test2014",
    "test2015",
    "train2017",
    "val2017",
    "test2017",
)


@dataclass(frozen=True)
class CocoOptions:
    """What a COCO reader yields and where it finds the images.

    Args:
        tasks: Tasks to yield, any of ``captioning``, ``localization``, ``classification``.
        image_dir: Image folder pattern with ``{split}`` (default: ``root/{split}``, ``root/images/{split}``
            or the sibling ``../coco/images/{split}``).
        caption_unit: One captioning sample per ``"caption"`` (GPV-1, also for evaluation) or per ``"image"``.
        include_crowd: Keep ``iscrowd`` instances as localization targets and classification crops (GPV-1
            does).
    """

    tasks: tuple[CocoTask, ...] = ("captioning", "localization", "classification")
    image_dir: str | None = None
    caption_unit: Literal["caption", "image"] = "caption"
    include_crowd: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        allowed = {"captioning", "localization", "classification"}
        if not self.tasks or set(self.tasks) - allowed:
            raise InputError(f"tasks must be a non-empty subset of {sorted(allowed)}, got {list(self.tasks)}")
        if self.caption_unit not in ("caption", "image"):
            raise InputError(f"caption_unit must be 'caption' or 'image', got {self.caption_unit!r}")


class ImageInfo(NamedTuple):
    """An image as the annotation file describes it (nothing decoded)."""

    path: str
    height: int
    width: int
    image_id: int


class CocoRecord(NamedTuple):
    """One COCO sample, light: ``boxes`` is ``(k, 4)`` float32 xyxy pixels (``(0, 4)`` for captions)."""

    task: Task
    image: ImageInfo
    sample_id: str
    text: str | None = None
    answers: tuple[str, ...] = ()
    category: str | None = None
    category_id: int | None = None
    boxes: np.ndarray | None = None
    ann_ids: tuple[int, ...] = ()
    metadata: dict[str, Any] | None = None


def read_images(
    data: dict[str, Any], path: Path, image_dir: Path, reader: Reader, bad_ids: set[int] | None = None
) -> dict[int, ImageInfo]:
    """``images[]`` of a COCO file as ``{image_id: ImageInfo}``.

    An entry needs an integer ``id`` not used before, a non-empty ``file_name`` and an integer ``height`` and
    ``width`` in ``1..MAX_IMAGE_SIDE``. Bad entries are reported to ``reader``; the ids of those that have one
    (not a repeated id: its first entry stands) are added to ``bad_ids`` (their annotations are then dropped
    silently, not reported a second time).
    """
    images: dict[int, ImageInfo] = {}
    first: dict[int, int] = {}
    for i, img in enumerate(field(data, "images", list, path, "")):
        where = f"images[{i}]"
        try:
            image_id = field(img, "id", int, path, where)
            check_new_id(first, image_id, path, where, "image id")
            first[image_id] = i
            name = field(img, "file_name", str, path, where)
            if not name.strip():
                raise DataFormatError(path, f"{where}.file_name", "empty file name")
            h = field(img, "height", int, path, where)
            h, w = image_size(h, field(img, "width", int, path, where), path, where)
        except DataFormatError as err:
            reader.report(err)
            bad_id = img.get("id") if isinstance(img, dict) else None
            if bad_ids is not None and type(bad_id) is int and first.get(bad_id) == i:
                bad_ids.add(bad_id)
            continue
        images[image_id] = ImageInfo(str(image_dir / name), h, w, image_id)
    return images


def _fast_caption(ann: Any) -> tuple[int, int, str] | None:
    """``(image_id, id, caption)`` of a well-formed caption annotation, else ``None`` (no message)."""
    if type(ann) is dict:
        image_id, cap_id, text = ann.get("image_id"), ann.get("id"), ann.get("caption")
        if type(image_id) is int and type(cap_id) is int and type(text) is str:
            return image_id, cap_id, text
    return None


def _fast_annotation(ann: Any) -> tuple[int, int, int, Any] | None:
    """``(image_id, category_id, id, bbox)`` of a well-formed annotation, else ``None`` (no message)."""
    if type(ann) is dict:
        image_id, cat_id, ann_id, bbox = (
            ann.get("image_id"),
            ann.get("category_id"),
            ann.get("id"),
            ann.get("bbox"),
        )
        ints = type(image_id) is int and type(cat_id) is int and type(ann_id) is int
        # The ids go into an int64 table; larger ones take the slow path, which names the field.
        if (
            ints
            and type(bbox) is list
            and INT64_MIN <= min(image_id, ann_id) <= max(image_id, ann_id) <= INT64_MAX
        ):
            return image_id, cat_id, ann_id, bbox
    return None


class CocoReader(Reader):
    """Reads COCO annotation files into :class:`CocoRecord` s (see the module docstring).

    Args:
        root: The COCO folder.
        options: What to read.
        sce: Read the COCO-SCE splits ``train``/``val``/``test`` instead of COCO's.
        on_bad_sample: ``"raise"`` or ``"skip"`` bad records.
    """

    name = "coco"

    def __init__(
        self,
        root: str | Path,
        options: CocoOptions = CocoOptions(),
        sce: SceOptions | None = None,
        on_bad_sample: OnBadSample = "raise",
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.options = options
        self.tasks = tuple(Task(t) for t in options.tasks)
        self.sce = sce.protocol() if sce is not None else None

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.sce is not None else COCO_SPLITS

    def annotation_file(self, kind: str, split: str) -> Path:
        """``root/annotations/{kind}_{split}.json`` (or ``root/{kind}_{split}.json`` if only that exists)."""
        name = f"{kind}_{split}.json"
        for p in (self.root / "annotations" / name, self.root / name):
            if p.is_file():
                return p
        return self.root / "annotations" / name

    def images_folder(self, split: str) -> Path:
        """Where the images of a COCO split are."""
        if self.options.image_dir is not None:
            return Path(self.options.image_dir.format(split=split)).expanduser()
        return first_existing(coco_image_dirs(self.root, split), f"image folder of {split}", self.root)

    def read(self, split: str, *, train: bool) -> list[CocoRecord]:
        self.check_split(split)
        source = self.sce.source_split(split) if self.sce is not None else split
        records: list[CocoRecord] = []
        if Task.CAPTIONING in self.tasks:
            records += self._captions(split, source, train)
        if Task.LOCALIZATION in self.tasks or Task.CLASSIFICATION in self.tasks:
            records += self._instances(split, source)
        return records

    def _images(
        self, split: str, source: str, data: dict[str, Any], path: Path
    ) -> tuple[dict[int, ImageInfo], set[int]]:
        """The images of ``split`` and the ids of every image the file describes (bad ones included)."""
        bad: set[int] = set()
        images = read_images(data, path, self.images_folder(source), self, bad)
        known = set(images) | bad
        if self.sce is not None:
            ids = list(images)
            mask = self.sce.image_mask(split, ids)
            images = {i: images[i] for i, keep in zip(ids, mask) if keep}
        return images, known

    def _unknown_image(self, image_id: int, known: set[int], path: Path, where: str) -> None:
        if image_id not in known:
            self.report(DataFormatError(path, f"{where}.image_id", f"unknown image id {image_id}"))

    def _sce_meta(self, split: str, task: Task, concepts: set[str]) -> dict[str, Any] | None | bool:
        """SCE tags, ``False`` to drop, ``None`` without SCE."""
        if self.sce is None:
            return None
        meta = self.sce.judge(split, task, concepts)
        return False if meta is None else meta

    def _captions(self, split: str, source: str, train: bool) -> list[CocoRecord]:
        path = self.annotation_file("captions", source)
        if not path.is_file() and source.startswith("test"):
            path = self.annotation_file("image_info", source)
        data = read_json(path, dict)
        images, known = self._images(split, source, data, path)
        caps: dict[int, list[tuple[int, str]]] = defaultdict(list)
        # A captions file must have its annotations (image_info_* test files have none); a captions file
        # without them would otherwise turn every image into a target-less sample.
        is_captions = "captions" in path.name
        anns = field(data, "annotations", list, path, "") if is_captions else []
        first: dict[int, int] = {}  # caption id -> its annotation index (ids make the sample ids)
        reported: set[int] = set()  # images with a caption already reported as bad
        for i, ann in enumerate(anns):
            where = f"annotations[{i}]"
            try:
                fast = _fast_caption(ann)
                if fast is None:
                    fast = (
                        field(ann, "image_id", int, path, where),
                        field(ann, "id", int, path, where),
                        field(ann, "caption", str, path, where),
                    )
                image_id, cap_id, text = fast
                check_new_id(first, cap_id, path, where, "caption id")
                text = text.strip()
                if not text:  # a training target must not be empty
                    raise DataFormatError(path, f"{where}.caption", "empty caption")
            except DataFormatError as err:
                self.report(err)
                if isinstance(ann, dict) and type(ann.get("image_id")) is int:
                    reported.add(ann["image_id"])
                continue
            first[cap_id] = i
            if image_id in images:
                caps[image_id].append((cap_id, text))
            else:
                self._unknown_image(image_id, known, path, where)
        records: list[CocoRecord] = []
        for image_id, img in images.items():
            found = sorted(caps.get(image_id, []))
            refs = tuple(c for _, c in found)
            if not found:
                if not is_captions:  # test split: one sample per image, no target
                    records.append(CocoRecord(Task.CAPTIONING, img, f"cap-img{image_id}"))
                elif image_id not in reported:  # an image of a captions file needs a caption to target
                    self.report(DataFormatError(path, "annotations", f"no caption of image id {image_id}"))
                continue
            per_caption = self.options.caption_unit == "caption"
            units = [(cid, c) for cid, c in found] if per_caption else [(None, refs[0])]
            for cap_id, text in units:
                meta = self._sce_meta(
                    split, Task.CAPTIONING, self._concepts([text] if cap_id is not None else refs)
                )
                if meta is False:
                    continue
                sid = f"cap-{cap_id}" if cap_id is not None else f"cap-img{image_id}"
                md = {"cap_id": cap_id, **(meta or {})}
                records.append(CocoRecord(Task.CAPTIONING, img, sid, text, refs, metadata=md))
        return records

    def _concepts(self, texts: tuple[str, ...] | list[str]) -> set[str]:
        return self.sce.split.concepts(texts) if self.sce is not None else set()

    def _instances(self, split: str, source: str) -> list[CocoRecord]:
        path = self.annotation_file("instances", source)
        data = read_json(path, dict)
        images, known = self._images(split, source, data, path)
        categories, bad_categories = self._categories(data, path)
        rows: list[tuple[int, int, int, int]] = []  # (image id, category id, annotation id, index in file)
        bboxes: list[Any] = []
        for i, ann in enumerate(field(data, "annotations", list, path, "")):
            fast = _fast_annotation(ann)
            if fast is None or fast[1] not in categories:
                try:
                    fast = self._checked_annotation(
                        ann, path, f"annotations[{i}]", categories, bad_categories
                    )
                except DataFormatError as err:
                    self.report(err)
                    continue
                if fast is None:  # its category entry was reported already
                    continue
            if not self.options.include_crowd and ann.get("iscrowd", 0):
                continue
            rows.append((*fast[:3], i))
            bboxes.append(fast[3])
        boxes, errors = xywh_boxes(bboxes, path, lambda k: f"annotations[{rows[k][3]}].bbox")
        table = np.array([r[:3] for r in rows], dtype=np.int64).reshape(-1, 3)  # image, category, ann id
        valid = np.isin(table[:, 0], np.fromiter(images, dtype=np.int64, count=len(images)))
        for k in np.flatnonzero(~valid).tolist() + sorted(errors):
            if k in errors:
                self.report(errors[k])
            else:
                self._unknown_image(rows[k][0], known, path, f"annotations[{rows[k][3]}]")
        valid[list(errors)] = False
        # An annotation id names one instance (and the classification sample); a repeated one is refused.
        _, first = np.unique(table[:, 2], return_index=True)  # stable: the first occurrence in the file
        repeated = np.ones(len(table), dtype=bool)
        repeated[first] = False
        for k in np.flatnonzero(repeated & valid).tolist():
            self.report(
                DataFormatError(
                    path, f"annotations[{rows[k][3]}].id", f"duplicate annotation id {rows[k][2]}"
                )
            )
        valid &= ~repeated
        boxes, outside = self._clip_to_images(boxes, table[:, 0], valid, images)
        for k in outside.tolist():
            img = images[rows[k][0]]
            self.report(
                DataFormatError(
                    path,
                    f"annotations[{rows[k][3]}].bbox",
                    box_outside_message(boxes[k], img.height, img.width),
                )
            )
        valid[outside] = False
        # Sort by (image, category, annotation id): each image x category group is a contiguous run.
        keep = np.flatnonzero(valid)
        if not len(keep):  # no instance at all: no localization or classification sample
            return []
        keep = keep[np.lexsort((table[keep, 2], table[keep, 1], table[keep, 0]))]
        table, boxes = table[keep], boxes[keep]
        starts = np.flatnonzero(np.r_[True, (np.diff(table[:, 0]) != 0) | (np.diff(table[:, 1]) != 0)])
        ends = np.r_[starts[1:], len(table)]
        records: list[CocoRecord] = []
        want_loc, want_cls = Task.LOCALIZATION in self.tasks, Task.CLASSIFICATION in self.tasks
        ann_ids = table[:, 2].tolist()
        for a, b, image_id, cat_id in zip(starts.tolist(), ends.tolist(), *table[starts, :2].T.tolist()):
            img, name = images[image_id], categories[cat_id]
            meta = self._sce_meta(split, Task.LOCALIZATION, {name})
            if meta is False:
                continue
            ids = tuple(ann_ids[a:b])
            if want_loc:
                sid = f"loc-{image_id}-{cat_id}"
                records.append(
                    CocoRecord(Task.LOCALIZATION, img, sid, None, (), name, cat_id, boxes[a:b], ids, meta)
                )
            if want_cls:
                sid = f"cls-{ids[0]}"
                records.append(
                    CocoRecord(
                        Task.CLASSIFICATION,
                        img,
                        sid,
                        name,
                        (name,),
                        name,
                        cat_id,
                        boxes[a : a + 1],
                        ids[:1],
                        meta,
                    )
                )
        return records

    def _categories(self, data: dict[str, Any], path: Path) -> tuple[dict[int, str], set[int]]:
        """``{id: name}`` of ``categories[]`` and the ids of the bad entries (reported here; their
        annotations are dropped silently). A name must be non-empty: it is the classification target."""
        categories: dict[int, str] = {}
        bad: set[int] = set()
        for i, cat in enumerate(field(data, "categories", list, path, "")):
            where = f"categories[{i}]"
            try:
                cat_id = field(cat, "id", int, path, where)
                if cat_id in categories:
                    raise DataFormatError(path, f"{where}.id", f"duplicate category id {cat_id}")
                name = field(cat, "name", str, path, where)
                if not name.strip():
                    raise DataFormatError(path, f"{where}.name", "empty category name")
            except DataFormatError as err:
                self.report(err)
                if isinstance(cat, dict) and type(cat.get("id")) is int and cat["id"] not in categories:
                    bad.add(cat["id"])
                continue
            categories[cat_id] = name
        return categories, bad

    @staticmethod
    def _clip_to_images(
        boxes: np.ndarray, image_ids: np.ndarray, valid: np.ndarray, images: dict[int, ImageInfo]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``(n, 4)`` xyxy ``boxes`` clipped to their images (rows where ``valid``), and the indices of
        the valid rows :func:`~datamodules.io.clip_boxes` refuses (outside the image, empty once clipped)."""
        rows = np.flatnonzero(valid)
        if not len(rows):
            return boxes, rows
        ids = np.fromiter(images, dtype=np.int64, count=len(images))
        sizes = np.array([(img.height, img.width) for img in images.values()], dtype=np.float64)
        order = np.argsort(ids)
        at = order[np.searchsorted(ids, image_ids[rows], sorter=order)]  # valid rows have a known image
        clipped, ok = clip_boxes(boxes[rows], sizes[at, 0], sizes[at, 1])
        boxes = boxes.copy()
        boxes[rows[ok]] = clipped[ok]
        return boxes, rows[~ok]

    @staticmethod
    def _checked_annotation(
        ann: Any, path: Path, where: str, categories: dict[int, str], bad_categories: set[int]
    ) -> tuple[int, int, int, Any] | None:
        """The slow path of :func:`_fast_annotation`: the same values, ``None`` for an annotation of a bad
        category entry (reported already), or the error naming the field."""
        image_id = field(ann, "image_id", int, path, where)
        cat_id = field(ann, "category_id", int, path, where)
        ann_id = field(ann, "id", int, path, where)
        bbox = field(ann, "bbox", list, path, where)
        if cat_id in bad_categories:
            return None
        if cat_id not in categories:
            raise DataFormatError(path, f"{where}.category_id", f"unknown category id {cat_id}")
        return image_id, cat_id, ann_id, bbox

    def sample(self, record: CocoRecord, *, train: bool) -> TaskSample:
        img = record.image
        common = {
            "image_sizes": [(img.height, img.width)],
            "sample_id": record.sample_id,
            "image_ids": [img.image_id],
        }
        meta = dict(record.metadata or {})
        if record.task == Task.CAPTIONING:
            target = Target(text=record.text, answers=list(record.answers))
            return TaskSample(Task.CAPTIONING, [img.path], target, metadata=meta, **common)
        meta["ann_ids"] = list(record.ann_ids)
        meta["category_id"] = record.category_id
        if record.task == Task.LOCALIZATION:
            target = Target(boxes=record.boxes.copy())  # records share one array: never hand it out
            return TaskSample(
                Task.LOCALIZATION, [img.path], target, category=record.category, metadata=meta, **common
            )
        box = record.boxes[0]
        region = expand_box(box, img.width, img.height, ratio=0.2)
        meta["instance_box"] = box.copy()
        target = Target(text=record.text, answers=list(record.answers))
        return TaskSample(Task.CLASSIFICATION, [img.path], target, region=region, metadata=meta, **common)


class CocoDataModule(TaskDataModule):
    """COCO captioning, localization and classification (GPV-1 sample construction), original split.

    Args:
        root: The COCO folder (``annotations/`` and one image folder per split).
        options: What to read: tasks, image folder, caption unit, crowd instances (default: all three tasks).
        train_split: E.g. ``train2014``.
        val_split: E.g. ``val2014``.
        test_split: E.g. ``test2014`` (captioning only: ``image_info_test2014.json``, no targets).
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`
            (``batch_size``, ``num_workers``, ``processor``, ``on_bad_sample``, ...).
    """

    def __init__(
        self,
        root: str,
        options: CocoOptions = CocoOptions(),
        train_split: str | None = "train2014",
        val_split: str | None = "val2014",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self.options = options

    def make_reader(self) -> CocoReader:
        return CocoReader(self.root, self.options, on_bad_sample=self.on_bad_sample)


class CocoSceDataModule(CocoDataModule):
    """COCO on the COCO-SCE split (GPV-1 Sec. 4): splits ``train``, ``val`` (from ``train2014``), ``test``
    (``val2014``); train/val drop samples mentioning a concept held out for their task, test samples are
    tagged ``metadata["sce"]`` = ``"seen"`` or ``"unseen"`` (and ``metadata["coco_categories"]``).

    Args:
        root: The COCO folder.
        options: As :class:`CocoDataModule`.
        sce: The category split and image partition (default: the paper's Table 9, hash partition 80/20).
        train_split: ``train``.
        val_split: ``val``.
        test_split: ``test``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: CocoOptions = CocoOptions(),
        sce: SceOptions = PAPER_SCE,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, options, train_split, val_split, test_split, **kwargs)
        self.sce = sce

    def make_reader(self) -> CocoReader:
        return CocoReader(self.root, self.options, self.sce, self.on_bad_sample)
