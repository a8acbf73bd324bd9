"""NLVR2: is a statement true of a pair of images? (lil-lab/nlvr ``nlvr2/`` layout).

Files (``root`` is the ``nlvr2`` folder)::

    root/data/{train,dev,test1,test2}.json        JSON lines despite the suffix (also root/{split}.json)
    root/data/balanced/balanced_{dev,test1}.json  root/data/unbalanced/unbalanced_{dev,test1}.json
    root/images/{train/<directory>,dev,test1,test2}/<split>-<set>-<pair>-img{0,1}.png   (or root/<split>/...)

Each line: ``identifier`` (``split-set_id-pair_id-sentence_id``), ``sentence``, ``label`` (``"True"`` /
``"False"``), ``directory`` (train only), ... The left image is ``img0``, the right ``img1``. Target text is
the label; ``metadata["consistency_key"]`` is the identifier without its pair id (NLVR2 consistency groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from datamodules.base import Reader, TaskDataModule
from datamodules.errors import DataFormatError, OnBadSample
from datamodules.io import field, iter_jsonl
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

NLVR2_SPLITS: tuple[str, ...] = (
    "train", "dev", "test1", "test2", "balanced_dev", "balanced_test1", "unbalanced_dev", "unbalanced_test1",
)  # fmt: skip


@dataclass(frozen=True)
class Nlvr2Options:
    """Where an NLVR2 reader finds the images.

    Args:
        image_dir: Folder holding one image folder per split (default ``root/images``, else ``root``).
    """

    image_dir: str | None = None


class Nlvr2Record(NamedTuple):
    """One statement about an image pair; ``label`` is ``"True"``, ``"False"`` or ``None`` (hidden)."""

    identifier: str
    sentence: str
    left: str
    right: str
    label: str | None


def parse_label(value: Any, path: Path, name: str) -> str:
    """NLVR2 labels as ``"True"``/``"False"`` (accepts the strings in any case, bools and 0/1)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and value in (0, 1):
        return str(bool(value))
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().capitalize()
    raise DataFormatError(path, name, f"expected 'True' or 'False', got {value!r:.40}")


def image_names(identifier: str, path: Path, name: str) -> tuple[str, str, str]:
    """``(image split, left file name, right file name)`` of an identifier such as ``dev-850-0-0``."""
    parts = identifier.split("-")
    if len(parts) != 4 or not all(parts):
        raise DataFormatError(
            path, name, f"identifier must be 'split-set_id-pair_id-sentence_id', got {identifier!r}"
        )
    stem = "-".join(parts[:3])
    return parts[0], f"{stem}-img0.png", f"{stem}-img1.png"


class Nlvr2Reader(Reader):
    """Reads NLVR2 JSON-lines files into :class:`Nlvr2Record` s.

    Args:
        root: The ``nlvr2`` folder.
        options: Where the images are.
        on_bad_sample: ``"raise"`` or ``"skip"`` bad lines.
    """

    name = "nlvr2"

    def __init__(
        self, root: str | Path, options: Nlvr2Options = Nlvr2Options(), on_bad_sample: OnBadSample = "raise"
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.options = options

    @property
    def splits(self) -> tuple[str, ...]:
        return NLVR2_SPLITS

    def annotation_file(self, split: str) -> Path:
        sub = split.split("_")[0] if "_" in split else ""
        cands = [self.root / "data" / sub / f"{split}.json", self.root / f"{split}.json"]
        return next((c for c in cands if c.is_file()), cands[0])

    def images_root(self) -> Path:
        if self.options.image_dir is not None:
            return Path(self.options.image_dir).expanduser()
        return self.root / "images" if (self.root / "images").is_dir() else self.root

    def read(self, split: str, *, train: bool) -> list[Nlvr2Record]:
        path = self.annotation_file(split)
        self.check_split(split, path)
        images = self.images_root()
        hidden_ok = split.endswith("test2")
        records: list[Nlvr2Record] = []
        for lineno, row in iter_jsonl(path):
            where = f"line {lineno}"
            try:
                if isinstance(row, DataFormatError):
                    raise row
                ident = field(row, "identifier", str, path, where)
                sentence = field(row, "sentence", str, path, where)
                if "label" in row or not hidden_ok:
                    label: str | None = parse_label(
                        field(row, "label", (str, bool, int), path, where), path, f"{where}.label"
                    )
                else:
                    label = None
                img_split, left, right = image_names(ident, path, f"{where}.identifier")
                folder = images / img_split
                if img_split == "train" and isinstance(row.get("directory"), (str, int)):
                    folder = folder / str(row["directory"])
            except DataFormatError as err:
                self.report(err)
                continue
            records.append(
                Nlvr2Record(ident, sentence.strip(), str(folder / left), str(folder / right), label)
            )
        return records

    def sample(self, record: Nlvr2Record, *, train: bool) -> TaskSample:
        parts = record.identifier.split("-")
        target = Target(text=record.label, answers=[record.label]) if record.label is not None else Target()
        return TaskSample(
            Task.NLVR2,
            [record.left, record.right],
            target,
            question=record.sentence,
            sample_id=f"nlvr2-{record.identifier}",
            image_ids=["-".join(parts[:3]) + "-img0", "-".join(parts[:3]) + "-img1"],
            metadata={"identifier": record.identifier, "consistency_key": "-".join(parts[:2] + parts[3:])},
        )


class Nlvr2DataModule(TaskDataModule):
    """NLVR2 (``train``, ``dev``, ``test1``, ``test2`` and the ``balanced_*``/``unbalanced_*`` subsets).

    Args:
        root: The ``nlvr2`` folder (``data/*.json`` JSON lines and ``images/``).
        options: Where the images are.
        train_split: E.g. ``train``.
        val_split: E.g. ``dev``.
        test_split: E.g. ``test1``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: Nlvr2Options = Nlvr2Options(),
        train_split: str | None = "train",
        val_split: str | None = "dev",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self.options = options

    def make_reader(self) -> Nlvr2Reader:
        return Nlvr2Reader(self.root, self.options, self.on_bad_sample)
