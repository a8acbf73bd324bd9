"""Adapters for the Hugging Face ``datasets`` copies of the benchmarks (offline: a ``datasets.Dataset`` or
``DatasetDict`` object, or a folder written by ``save_to_disk``; nothing is downloaded).

Column mappings (``docs/datamodules.md`` has the full table):

* ``vqav2`` (``lmms-lab/VQAv2``): ``question``, ``question_id``, ``image``, ``image_id``, ``answers``
  (``[{answer, ...}]``; absent or empty on test), ``multiple_choice_answer``, ``question_type``,
  ``answer_type``.
* ``coco_caption`` (``lmms-lab/COCO-Caption``, ``-Caption2017``): ``image``, ``answer`` (the reference
  captions), ``question_id`` (or ``id``), ``file_name``.
* ``refcoco_lmms`` (``lmms-lab/RefCOCO``, ``RefCOCOplus``, ``RefCOCOg``): ``image``, ``answer`` (the
  expressions), ``bbox`` (``bbox_format``, COCO ``xywh`` by default), ``segmentation`` (one flat polygon),
  ``question_id``.
* ``refcoco_jxu124`` (``jxu124/refcoco``, ``refcocog``, ``refcocoplus``): one row per ref: ``sentences``
  (``[{raw, sent, sent_id, tokens}]``), ``ref_id``, ``ann_id``, ``image_id``, ``raw_anns`` (JSON: COCO
  annotation), ``raw_image_info`` (JSON: COCO image), ``image_path`` (relative to ``image_root``); no pixels.
* ``nlvr2``: ``identifier``, ``sentence``, ``label``, and images in ``left_image``/``right_image`` (or
  ``image_0``/``image_1``) columns, else files under ``image_root`` in the official layout.

Image cells may be decoded ``PIL`` images, ``{"bytes", "path"}`` dicts (``decode=False``) or paths. Splits are
the ``DatasetDict`` keys; a single ``Dataset`` has the split ``all``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from datamodules.base import Reader, TaskDataModule
from datamodules.errors import DataFormatError, OnBadSample
from datamodules.io import checked_segmentation
from datamodules.nlvr2 import image_names, parse_label
from datamodules.vqav2 import training_answer
from lightning_gpv.errors import InputError
from lightning_gpv.geometry.masks import Mask
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.processing import open_image, to_rgb
from lightning_gpv.tasks.samples import ImageRef, Target, TaskSample

HFFormat = Literal["vqav2", "coco_caption", "refcoco_lmms", "refcoco_jxu124", "nlvr2"]

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "vqav2": ("question", "question_id", "image"),
    "coco_caption": ("image", "answer"),
    "refcoco_lmms": ("image", "answer", "bbox"),
    "refcoco_jxu124": ("sentences", "ref_id", "raw_anns", "raw_image_info"),
    "nlvr2": ("identifier", "sentence", "label"),
}
"""Columns each format needs (others are optional)."""

_EXPANDING = {"coco_caption": "answer", "refcoco_lmms": "answer", "refcoco_jxu124": "sentences"}
"""Formats with several samples per row, and the list column that holds them."""


@dataclass(frozen=True)
class HFOptions:
    """The column layout of a Hugging Face copy and how its rows become samples.

    Args:
        format: Column layout: ``vqav2``, ``coco_caption``, ``refcoco_lmms``, ``refcoco_jxu124`` or ``nlvr2``.
        tasks: For the RefCOCO formats, which of ``rec``, ``res``, ``reg`` to yield (empty: ``rec``).
        image_root: Folder that relative image paths are joined to (``jxu124`` rows, NLVR2 without image
            columns).
        bbox_format: ``xywh`` (COCO) or ``xyxy``, for ``refcoco_lmms``'s ``bbox``.
    """

    format: HFFormat = "vqav2"
    tasks: tuple[Literal["rec", "res", "reg"], ...] = ()
    image_root: str | None = None
    bbox_format: Literal["xywh", "xyxy"] = "xywh"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.format not in REQUIRED_COLUMNS:
            raise InputError(f"format must be one of {sorted(REQUIRED_COLUMNS)}, got {self.format!r}")
        if self.bbox_format not in ("xywh", "xyxy"):
            raise InputError(f"bbox_format must be 'xywh' or 'xyxy', got {self.bbox_format!r}")
        if self.format.startswith("refcoco") and set(self.tasks) - {"rec", "res", "reg"}:
            raise InputError(f"tasks must be a subset of ['rec', 'res', 'reg'], got {list(self.tasks)}")


def image_cell(value: Any, image_root: Path | None, where: str, source: str) -> ImageRef:
    """An image cell as an ``(H, W, 3)`` uint8 array or a path (relative paths join ``image_root``).

    Decoded cells follow :func:`~lightning_gpv.tasks.processing.to_rgb` (any PIL mode, 16-bit included)
    and the pixel limit of :func:`~lightning_gpv.tasks.processing.open_image`, in stored orientation (the
    annotations' boxes are in stored pixels).
    """
    if isinstance(value, Image.Image):
        try:
            return to_rgb(value)
        except (OSError, ValueError) as err:
            raise DataFormatError(source, where, f"unreadable image: {err}") from err
    if isinstance(value, dict) and value.get("bytes"):
        try:
            with open_image(io.BytesIO(value["bytes"]), name=where) as img:
                return to_rgb(img)
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise DataFormatError(source, where, f"corrupt image bytes: {err}") from err
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and path:
        p = Path(path)
        return str(image_root / p if image_root is not None and not p.is_absolute() else p)
    raise DataFormatError(source, where, f"missing image (got {type(value).__name__})")


def _hw(image: ImageRef) -> tuple[int, int] | None:
    return (int(image.shape[0]), int(image.shape[1])) if isinstance(image, np.ndarray) else None


class HFReader(Reader):
    """Maps the rows of a Hugging Face dataset to :class:`TaskSample` s (see the module docstring).

    Args:
        dataset: A ``datasets.Dataset`` or ``DatasetDict`` (or ``None`` with ``path``).
        path: A ``save_to_disk`` folder, loaded with ``datasets.load_from_disk`` on first use (and again in
            each worker, so the reader pickles small).
        options: Column layout, tasks, image root and box format.
        on_bad_sample: ``"raise"`` or ``"skip"``.
    """

    name = "hf"

    def __init__(
        self,
        dataset: Any = None,
        path: str | None = None,
        options: HFOptions = HFOptions(),
        on_bad_sample: OnBadSample = "raise",
    ) -> None:
        super().__init__(path or ".", on_bad_sample)
        if (dataset is None) == (path is None):
            raise InputError(
                "give exactly one of `dataset` (a datasets object) and `path` (a save_to_disk folder)"
            )
        self.options = options
        self.path = path
        self.format = options.format
        is_refcoco = options.format.startswith("refcoco")
        self.tasks = tuple(Task(t) for t in options.tasks or ("rec",)) if is_refcoco else ()
        self.image_root = Path(options.image_root).expanduser() if options.image_root else None
        self.bbox_format = options.bbox_format
        self.source = path or f"<datasets object, format {options.format}>"
        self._data = dataset
        self.name = f"hf-{options.format}"
        self.bad.name = self.name

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self.path is not None:
            state["_data"] = None  # reloaded (memory-mapped) in the worker
        return state

    @property
    def data(self) -> Any:
        """The ``Dataset``/``DatasetDict`` (loaded from ``path`` on first use)."""
        if self._data is None:
            import datasets

            if not Path(self.path).exists():  # type: ignore[arg-type]
                raise DataFormatError(self.path, None, "dataset folder not found")
            try:
                self._data = datasets.load_from_disk(self.path)
            except (FileNotFoundError, ValueError, OSError) as err:
                raise DataFormatError(self.path, None, f"not a datasets save_to_disk folder: {err}") from err
        return self._data

    @property
    def splits(self) -> tuple[str, ...]:
        data = self.data
        return tuple(data.keys()) if hasattr(data, "keys") and not hasattr(data, "features") else ("all",)

    def table(self, split: str) -> Any:
        """The ``datasets.Dataset`` of ``split``."""
        self.check_split(split, self.source)
        return self.data if split == "all" else self.data[split]

    def read(self, split: str, *, train: bool) -> list[tuple[str, int, int, str]]:
        """Records ``(split, row, item, task)``; ``item`` indexes the expression/caption of multi-sample rows
        (``-1``: all of them, for REG evaluation)."""
        table = self.table(split)
        missing = [c for c in REQUIRED_COLUMNS[self.format] if c not in table.column_names]
        if missing:
            raise DataFormatError(self.source, f"column {missing[0]!r}", f"missing column (split {split!r}; "
                                  f"has {table.column_names})")  # fmt: skip
        column = _EXPANDING.get(self.format)
        task = {"vqav2": "vqa", "coco_caption": "captioning", "nlvr2": "nlvr2"}.get(self.format, "")
        if column is None or (self.format == "coco_caption" and not train):
            return [(split, i, 0, task) for i in range(len(table))]
        records: list[tuple[str, int, int, str]] = []
        for i, items in enumerate(table.select_columns([column])[column]):
            if not isinstance(items, list) or not items:
                self.report(
                    DataFormatError(self.source, f"{split}[{i}].{column}", "expected a non-empty list")
                )
                continue
            for t in self.tasks or (Task.CAPTIONING,):
                if t == Task.REG and not train:
                    records.append((split, i, -1, t.value))
                    continue
                records += [(split, i, k, t.value) for k in range(len(items))]
        return records

    def sample(self, record: tuple[str, int, int, str], *, train: bool) -> TaskSample:
        split, row_index, item, task = record
        row = self.table(split)[row_index]
        where = f"{split}[{row_index}]"
        try:
            if self.format == "vqav2":
                return self._vqa(row, where, train)
            if self.format == "coco_caption":
                return self._caption(row, where, item, train)
            if self.format == "nlvr2":
                return self._nlvr2(row, where)
            return self._refcoco(row, where, item, Task(task), row_index)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            if isinstance(err, DataFormatError):
                raise
            raise DataFormatError(self.source, where, f"bad row: {type(err).__name__}: {err}") from err

    def _vqa(self, row: dict[str, Any], where: str, train: bool) -> TaskSample:
        answers = [a["answer"] if isinstance(a, dict) else str(a) for a in row.get("answers") or []]
        mc = row.get("multiple_choice_answer")
        target = Target()
        if answers or mc:
            text = training_answer(answers, mc) if train else (mc or answers[0])
            target = Target(text=text, answers=answers)
        meta = {k: row[k] for k in ("question_type", "answer_type", "question_id") if row.get(k) is not None}
        if mc:
            meta["multiple_choice_answer"] = mc
        image = image_cell(row["image"], self.image_root, f"{where}.image", self.source)
        return TaskSample(
            Task.VQA,
            [image],
            target,
            question=row["question"],
            image_sizes=[_hw(image)] if _hw(image) else None,
            sample_id=f"vqa-{row['question_id']}",
            image_ids=[row["image_id"]] if row.get("image_id") is not None else [],
            metadata=meta,
        )

    def _caption(self, row: dict[str, Any], where: str, item: int, train: bool) -> TaskSample:
        refs = [str(c).strip() for c in row["answer"] or []]
        image = image_cell(row["image"], self.image_root, f"{where}.image", self.source)
        rid = row.get("question_id", row.get("id", where))
        target = Target(text=refs[item] if refs else None, answers=refs)
        return TaskSample(
            Task.CAPTIONING,
            [image],
            target,
            image_sizes=[_hw(image)] if _hw(image) else None,
            sample_id=f"cap-{rid}-{item}" if train else f"cap-{rid}",
            metadata={"file_name": row.get("file_name")},
        )

    def _nlvr2(self, row: dict[str, Any], where: str) -> TaskSample:
        ident = row["identifier"]
        cells = [row.get(k) for k in ("left_image", "right_image")]
        if cells[0] is None:
            cells = [row.get("image_0"), row.get("image_1")]
        if cells[0] is None or cells[1] is None:
            if self.image_root is None:
                raise DataFormatError(
                    self.source, f"{where}.left_image", "missing image columns and no image_root"
                )
            img_split, left, right = image_names(ident, Path(self.source), f"{where}.identifier")
            cells = [str(Path(img_split) / left), str(Path(img_split) / right)]
        images = [image_cell(c, self.image_root, f"{where}.image", self.source) for c in cells]
        label = parse_label(row["label"], Path(self.source), f"{where}.label")
        return TaskSample(
            Task.NLVR2,
            images,
            Target(text=label, answers=[label]),
            question=row["sentence"],
            sample_id=f"nlvr2-{ident}",
            metadata={"identifier": ident},
        )

    def _refcoco(self, row: dict[str, Any], where: str, item: int, task: Task, row_index: int) -> TaskSample:
        if self.format == "refcoco_jxu124":
            ann, info = json.loads(row["raw_anns"]), json.loads(row["raw_image_info"])
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = np.array([x, y, x + w, y + h], np.float32)
            seg, hw = ann.get("segmentation"), (int(info["height"]), int(info["width"]))
            rel = row.get("image_path") or info["file_name"]
            image: ImageRef = image_cell(rel, self.image_root, f"{where}.image_path", self.source)
            sents = [s.get("sent") or s.get("raw") for s in row["sentences"]]
            sid = f"{row['ref_id']}"
        else:
            image = image_cell(row["image"], self.image_root, f"{where}.image", self.source)
            b = np.asarray(row["bbox"], dtype=np.float32).reshape(4)
            box = (
                b
                if self.bbox_format == "xyxy"
                else np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]], np.float32)
            )
            seg = [list(row["segmentation"])] if row.get("segmentation") else None
            hw = _hw(image) or (int(row["height"]), int(row["width"]))
            sents = [str(s) for s in row["answer"]]
            sid = f"{row.get('question_id', row_index)}"
        common: dict[str, Any] = {"image_sizes": [hw], "metadata": {"row": row_index}}
        if task == Task.REG:
            text = sents[0] if item < 0 else sents[item]
            target = Target(text=text, answers=sents)
            return TaskSample(
                Task.REG, [image], target, region=box, sample_id=f"reg-{sid}-{max(item, 0)}", **common
            )
        if task == Task.RES and not seg:
            raise DataFormatError(
                self.source, f"{where}.segmentation", "missing segmentation for a RES sample"
            )
        if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise DataFormatError(self.source, f"{where}.bbox", f"not a box of positive size: {box.tolist()}")
        masks = []
        if task == Task.RES:
            # Checked before pycocotools sees it: its C decoder reads garbage RLE strings out of bounds.
            seg = checked_segmentation(seg, *hw, self.source, f"{where}.segmentation")
            masks = [Mask.from_coco(seg, *hw)]
        target = Target(boxes=box[None], masks=masks)
        return TaskSample(
            task, [image], target, expression=sents[item], sample_id=f"{task.value}-{sid}-{item}", **common
        )


class HFDataModule(TaskDataModule):
    """A benchmark from its Hugging Face ``datasets`` copy, loaded offline from a ``save_to_disk`` folder.

    Args:
        root: The ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict``).
        options: Column layout (default ``vqav2``), RefCOCO tasks (default ``rec``), image root, box format.
        train_split: A ``DatasetDict`` key (``all`` for a single ``Dataset``).
        val_split: E.g. ``validation``.
        test_split: E.g. ``test``.
        dataset: An in-memory ``Dataset``/``DatasetDict`` instead of ``root`` (Python use, not YAML).
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        options: HFOptions = HFOptions(),
        train_split: str | None = None,
        val_split: str | None = "validation",
        test_split: str | None = None,
        dataset: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root or "<in-memory dataset>", train_split, val_split, test_split, **kwargs)
        self.hf_path = root
        self.options = options
        self.hf_dataset = dataset
        self._reader = self.make_reader()  # checks that exactly one of root and dataset is given

    def make_reader(self) -> HFReader:
        path = self.hf_path if self.hf_dataset is None else None
        return HFReader(self.hf_dataset, path, self.options, self.on_bad_sample)
