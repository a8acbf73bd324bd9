"""AttCoSeg: in a group of images, find the two that share an object with the same attributes and segment it.

No public format exists, so the format is the project's own, as ShapesWorld writes it
(``docs/shapesworld.md``); ``root`` is the ``attcoseg`` folder::

    root/attcoseg_{train,val,test}.json   COCO-style {images, annotations, categories} plus
                                          groups: [{id, image_ids, positive_indices, positive_image_ids,
                                                    ann_ids, attributes: {shape, color, size, position}}]
    root/images/<split>/<name>.jpg        image ``file_name`` is relative to ``root``
    root/GT/<split>/<name>.png            optional ``mask_file`` per image (255 on the shared object)

A sample is one group: its images in ``image_ids`` order; ``target.selected_images`` = the positive indices;
``target.masks``/``target.boxes`` = the shared object in each positive image (from ``ann_ids``; when a group
has no ``ann_ids`` the positive images' ``mask_file`` is decoded in ``__getitem__``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from datamodules.base import Reader, TaskDataModule
from datamodules.coco import ImageInfo
from datamodules.coseg import load_binary_mask
from datamodules.errors import DataFormatError, OnBadSample
from datamodules.io import checked_segmentation, coco_mask, field, read_json, xywh_box
from lightning_gpv.geometry.masks import Mask
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

ATTCOSEG_SPLITS: tuple[str, ...] = ("train", "val", "test")


class AttCosegRecord(NamedTuple):
    """One group: images, the positive indices and the shared object in each positive image."""

    group_id: int
    images: tuple[ImageInfo, ...]
    positives: tuple[int, ...]
    boxes: np.ndarray
    segmentations: tuple[Any, ...]
    mask_files: tuple[str | None, ...]
    attributes: dict[str, Any]
    source: str = ""
    ann_ids: tuple[int, ...] = ()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class AttCosegReader(Reader):
    """Reads ``attcoseg_{split}.json`` into :class:`AttCosegRecord` s.

    Args:
        root: The ``attcoseg`` folder.
        on_bad_sample: ``"raise"`` or ``"skip"`` bad groups.
    """

    name = "attcoseg"

    def __init__(self, root: str | Path, on_bad_sample: OnBadSample = "raise") -> None:
        super().__init__(root, on_bad_sample)

    @property
    def splits(self) -> tuple[str, ...]:
        return ATTCOSEG_SPLITS

    def read(self, split: str, *, train: bool) -> list[AttCosegRecord]:
        path = self.root / f"attcoseg_{split}.json"
        self.check_split(split, path)
        data = read_json(path, dict)
        images: dict[int, tuple[ImageInfo, str | None]] = {}
        for i, img in enumerate(field(data, "images", list, path, "")):
            where = f"images[{i}]"
            try:
                info = ImageInfo(
                    str(self.root / field(img, "file_name", str, path, where)),
                    field(img, "height", int, path, where),
                    field(img, "width", int, path, where),
                    field(img, "id", int, path, where),
                )
            except DataFormatError as err:
                self.report(err)
                continue
            mask_file = img.get("mask_file")
            images[info.image_id] = (info, str(self.root / mask_file) if isinstance(mask_file, str) else None)
        anns: dict[int, tuple[np.ndarray, Any]] = {}
        for i, ann in enumerate(data.get("annotations", [])):
            where = f"annotations[{i}]"
            try:
                box = xywh_box(field(ann, "bbox", list, path, where), path, f"{where}.bbox")
                anns[field(ann, "id", int, path, where)] = (box, ann.get("segmentation"))
            except DataFormatError as err:
                self.report(err)
        records: list[AttCosegRecord] = []
        for i, group in enumerate(field(data, "groups", list, path, "")):
            try:
                records.append(self._group(group, images, anns, path, f"groups[{i}]"))
            except DataFormatError as err:
                self.report(err)
        return records

    def _group(
        self,
        group: dict[str, Any],
        images: dict[int, tuple[ImageInfo, str | None]],
        anns: dict[int, tuple[np.ndarray, Any]],
        path: Path,
        where: str,
    ) -> AttCosegRecord:
        gid = field(group, "id", int, path, where)
        image_ids = field(group, "image_ids", list, path, where)
        if not all(_is_int(i) for i in image_ids):
            raise DataFormatError(
                path, f"{where}.image_ids", f"expected a list of integers, got {image_ids!r:.60}"
            )
        if missing := [i for i in image_ids if i not in images]:
            raise DataFormatError(path, f"{where}.image_ids", f"unknown image ids {missing}")
        if len(image_ids) < 2:
            raise DataFormatError(path, f"{where}.image_ids", "a group needs at least 2 images")
        pos = field(group, "positive_indices", list, path, where)
        if not all(isinstance(p, int) and 0 <= p < len(image_ids) for p in pos):
            raise DataFormatError(path, f"{where}.positive_indices", f"indices out of range: {pos}")
        ann_ids = group.get("ann_ids") or []
        if not isinstance(ann_ids, list) or not all(_is_int(a) for a in ann_ids):
            raise DataFormatError(
                path, f"{where}.ann_ids", f"expected a list of integers, got {ann_ids!r:.60}"
            )
        if ann_ids and (len(ann_ids) != len(pos) or any(a not in anns for a in ann_ids)):
            raise DataFormatError(
                path, f"{where}.ann_ids", "needs one known annotation id per positive image"
            )
        boxes = np.stack([anns[a][0] for a in ann_ids]) if ann_ids else np.zeros((0, 4), np.float32)
        mask_files = tuple(images[image_ids[p]][1] for p in pos)
        if not ann_ids and any(m is None for m in mask_files):
            raise DataFormatError(
                path, f"{where}.ann_ids", "missing field (and no mask_file for every positive)"
            )
        attrs = group.get("attributes") if isinstance(group.get("attributes"), dict) else {}
        return AttCosegRecord(
            gid,
            tuple(images[i][0] for i in image_ids),
            tuple(pos),
            boxes,
            tuple(anns[a][1] for a in ann_ids),
            mask_files,
            attrs,
            str(path),
            tuple(ann_ids),
        )

    def sample(self, record: AttCosegRecord, *, train: bool) -> TaskSample:
        imgs = record.images
        masks = []
        if record.segmentations:
            for p, seg, a in zip(record.positives, record.segmentations, record.ann_ids):
                where = f"annotations[id={a}].segmentation"
                height, width = imgs[p].height, imgs[p].width
                # Checked before pycocotools sees it: its C decoder reads garbage RLE strings out of bounds.
                seg = checked_segmentation(seg, height, width, record.source, where)
                masks.append(coco_mask(seg, height, width, record.source, where))
        else:
            masks = [Mask.from_array(load_binary_mask(f)) for f in record.mask_files if f is not None]
        pos = np.asarray(record.positives, dtype=np.int64)
        target = Target(
            boxes=record.boxes.copy(),
            box_image=pos if len(record.boxes) else None,
            masks=masks,
            mask_image=pos,
            selected_images=list(record.positives),
        )
        return TaskSample(
            Task.ATTCOSEG,
            [i.path for i in imgs],
            target,
            image_sizes=[(i.height, i.width) for i in imgs],
            sample_id=f"attcoseg-{record.group_id}",
            image_ids=[i.image_id for i in imgs],
            metadata={"group_id": record.group_id, "attributes": dict(record.attributes)},
        )


class AttCosegDataModule(TaskDataModule):
    """AttCoSeg groups (project-defined format, written by ShapesWorld).

    Args:
        root: The ``attcoseg`` folder (``attcoseg_{split}.json``, ``images/``, ``GT/``).
        train_split: ``train``.
        val_split: ``val``.
        test_split: ``test``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self._reader = self.make_reader()  # validates the options now

    def make_reader(self) -> AttCosegReader:
        return AttCosegReader(self.root, self.on_bad_sample)
