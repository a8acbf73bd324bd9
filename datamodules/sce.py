"""COCO-SCE (Skill-Concept Evaluation, GPV-1 paper Sec. 4 and Table 9): the split protocol.

The 80 COCO categories are split into three disjoint sets:

* ``H_vqa,cap`` (:data:`HELD_FROM_VQA_CAP`): never seen by VQA and captioning in train/val;
* ``H_cls,loc`` (:data:`HELD_FROM_CLS_LOC`): never seen by classification and localization in train/val;
* ``S``: everything else (``person`` is always here).

Train and val drop every sample that mentions a concept held out for its task; test keeps all and tags
each sample ``seen`` or ``unseen`` (``metadata["sce"]``). Localization and classification samples carry
their category, so they are matched by category id; VQA and caption samples are matched by text with
:class:`~datamodules.concepts.ConceptMatcher`.

The split is data: :class:`SceSplit` takes any category sets and synonym lists, so ShapesWorld (whose
categories are shapes) can define its own. :class:`SceOptions` is what a data module is given (the YAML
``sce:`` block); :meth:`SceOptions.protocol` builds the :class:`SceProtocol` its reader applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.concepts import COCO_SYNONYMS, ConceptMatcher
from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.io import field, read_json
from lightning_gpv.errors import InputError
from lightning_gpv.tasks.catalogue import Task

HELD_FROM_VQA_CAP: tuple[str, ...] = (
    "bed", "bench", "book", "cell phone", "horse", "remote", "sheep", "suitcase", "surfboard", "wine glass",
)  # fmt: skip
"""Categories held out from VQA and captioning (paper Table 9, ``H_vqa,cap``)."""

HELD_FROM_CLS_LOC: tuple[str, ...] = (
    "banana", "baseball bat", "bottle", "broccoli", "donut", "hot dog", "keyboard", "laptop", "train", "tv",
)  # fmt: skip
"""Categories held out from classification and localization (paper Table 9, ``H_cls,loc``)."""

_VQA_CAP = (Task.VQA, Task.CAPTIONING)
_CLS_LOC = (Task.CLASSIFICATION, Task.LOCALIZATION)


@dataclass
class SceSplit:
    """A Skill-Concept split: which categories each task may not see in train/val.

    Args:
        categories: Every category name.
        held_from_vqa_cap: Categories held out from VQA and captioning.
        held_from_cls_loc: Categories held out from classification and localization.
        synonyms: Phrases per category for the text matcher (defaults to the category names).
    """

    categories: Sequence[str]
    held_from_vqa_cap: Sequence[str]
    held_from_cls_loc: Sequence[str]
    synonyms: Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        known = set(self.categories)
        for name, group in (("held_from_vqa_cap", self.held_from_vqa_cap),
                            ("held_from_cls_loc", self.held_from_cls_loc)):  # fmt: skip
            if unknown := set(group) - known:
                raise InputError(f"SceSplit.{name}: unknown categories {sorted(unknown)}")
        if overlap := set(self.held_from_vqa_cap) & set(self.held_from_cls_loc):
            raise InputError(f"SceSplit: categories held out from both groups: {sorted(overlap)}")
        syn = dict(self.synonyms or {})
        self.matcher = ConceptMatcher({c: tuple(syn.get(c, ())) for c in self.categories})

    @classmethod
    def coco(cls) -> SceSplit:
        """The COCO-SCE split of the GPV-1 paper (Table 9) with :data:`COCO_SYNONYMS`."""
        return cls(list(COCO_SYNONYMS), HELD_FROM_VQA_CAP, HELD_FROM_CLS_LOC, COCO_SYNONYMS)

    def unseen_for(self, task: Task | str) -> frozenset[str]:
        """Categories held out from ``task`` (empty for tasks outside COCO-SCE)."""
        task = Task(task)
        if task in _VQA_CAP:
            return frozenset(self.held_from_vqa_cap)
        if task in _CLS_LOC:
            return frozenset(self.held_from_cls_loc)
        return frozenset()

    def concepts(self, texts: Iterable[str]) -> set[str]:
        """Categories mentioned by any of ``texts``."""
        found: set[str] = set()
        for t in texts:
            if t:
                found |= self.matcher.find(t)
        return found

    def tag(self, task: Task | str, concepts: Iterable[str]) -> dict[str, list[str]]:
        """``{"seen": [...], "unseen": [...]}`` for a sample of ``task`` mentioning ``concepts``."""
        unseen = self.unseen_for(task)
        cats = sorted(set(concepts))
        return {"seen": [c for c in cats if c not in unseen], "unseen": [c for c in cats if c in unseen]}

    def is_unseen(self, task: Task | str, concepts: Iterable[str]) -> bool:
        """Whether a sample of ``task`` mentioning ``concepts`` exposes a held-out concept."""
        return not self.unseen_for(task).isdisjoint(concepts)


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def is_val_image(
    image_ids: Iterable[int] | np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> np.ndarray:
    """Which COCO ``train2014`` images go to SCE ``val`` (the rest go to SCE ``train``); bool array.

    GPV-1 shuffled the glob order of the image files (not reproducible). Here each image is assigned by
    a 64-bit hash of ``(seed, image_id)``, so the partition does not depend on which other ids a file
    holds: COCO captions, instances and VQA questions agree on every image. The val share is
    ``val_fraction`` in expectation. Pass GPV-1's own partition through a JSON file
    (:attr:`SceOptions.image_split`) to reproduce the paper's exact sets.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = np.asarray(list(image_ids) if not isinstance(image_ids, np.ndarray) else image_ids, dtype=np.int64)
    h = _splitmix64(ids.astype(np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53) < val_fraction


def load_sce_split(path: str | Path | None) -> SceSplit:
    """The COCO-SCE split (``None``), or one defined by a JSON file.

    The file holds ``{"held_from_vqa_cap": [...], "held_from_cls_loc": [...], "synonyms": {name: [...]},
    "categories": [...]}`` (ShapesWorld's ``coco_sce/split_categories.json`` spells the first two
    ``held_out_vqa_cap``/``held_out_cls_loc`` and lists the rest as ``shared``); ``categories`` defaults to
    every name in the other fields.
    """
    if path is None:
        return SceSplit.coco()
    data = read_json(path, dict)
    held = []
    for group in ("vqa_cap", "cls_loc"):
        key = f"held_from_{group}" if f"held_from_{group}" in data else f"held_out_{group}"
        held.append(field(data, key, list, path, ""))
    synonyms = data.get("synonyms") or {}
    if not isinstance(synonyms, dict):
        raise DataFormatError(path, "synonyms", "expected an object {category: [phrases]}")
    shared = data.get("shared") or []
    cats = data.get("categories") or sorted({*held[0], *held[1], *shared, *synonyms})
    try:
        return SceSplit(list(cats), held[0], held[1], synonyms)
    except ValueError as err:
        raise DataFormatError(path, None, str(err)) from err


SCE_SPLITS: dict[str, str] = {"train": "train2014", "val": "train2014", "test": "val2014"}
"""COCO-SCE split -> the COCO split its images come from."""


class SceProtocol:
    """Applies COCO-SCE to a COCO-image data set: image partition, held-out filtering and test tags.

    Args:
        split: The category split (default: COCO-SCE of the paper).
        val_fraction: Share of ``train2014`` images that go to SCE ``val``.
        seed: Seed of the image partition (see :func:`is_val_image`).
        image_split_file: JSON ``{"train": [image ids], "val": [image ids]}`` overriding the hash partition.
    """

    def __init__(
        self,
        split: SceSplit | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        image_split_file: str | Path | None = None,
    ) -> None:
        self.split = split or SceSplit.coco()
        self.val_fraction = val_fraction
        self.seed = seed
        self.image_split_file = image_split_file
        self._fixed: dict[str, set[int]] | None = None

    def source_split(self, split: str) -> str:
        """The COCO split holding the images of SCE ``split``."""
        if split not in SCE_SPLITS:
            raise UnknownSplitError(None, split, tuple(SCE_SPLITS))
        return SCE_SPLITS[split]

    def image_mask(self, split: str, image_ids: Sequence[int]) -> np.ndarray:
        """Bool mask of the ``image_ids`` (of the source split) that belong to SCE ``split``."""
        self.source_split(split)
        ids = np.asarray(image_ids, dtype=np.int64)
        if split == "test":
            return np.ones(len(ids), dtype=bool)
        if self.image_split_file is not None:
            fixed = self._load_fixed()
            return np.fromiter((int(i) in fixed[split] for i in ids), dtype=bool, count=len(ids))
        val = is_val_image(ids, self.val_fraction, self.seed)
        return val if split == "val" else ~val

    def _load_fixed(self) -> dict[str, set[int]]:
        if self._fixed is None:
            path = self.image_split_file
            data = read_json(path, dict)  # type: ignore[arg-type]
            self._fixed = {k: {int(i) for i in field(data, k, list, path, "")} for k in ("train", "val")}  # type: ignore[arg-type]
        return self._fixed

    def judge(self, split: str, task: Task | str, concepts: Iterable[str]) -> dict[str, Any] | None:
        """``None`` when a train/val sample must be dropped, else the metadata to attach.

        Test samples get ``{"coco_categories": {"seen": [...], "unseen": [...]}, "sce": "seen"|"unseen"}``;
        kept train/val samples get the same tags (with ``unseen`` empty).
        """
        tag = self.split.tag(task, concepts)
        if tag["unseen"] and split != "test":
            return None
        return {"coco_categories": tag, "sce": "unseen" if tag["unseen"] else "seen"}


@dataclass(frozen=True)
class SceOptions:
    """How a data module applies COCO-SCE: the category split and the partition of ``train2014`` images.

    Args:
        definition: JSON file defining another category split (see :func:`load_sce_split`; ShapesWorld
            writes ``coco_sce/split_categories.json``); ``None``: the paper's Table 9.
        image_split: JSON file ``{"train": [image ids], "val": [image ids]}`` fixing the partition (e.g.
            GPV-1's own, or ShapesWorld's ``coco_sce/split_images.json``); ``None``: the hash partition.
        val_fraction: Share of ``train2014`` images in SCE ``val`` (hash partition).
        seed: Seed of the hash partition (see :func:`is_val_image`).
    """

    definition: str | None = None
    image_split: str | None = None
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"SceOptions.val_fraction must be in (0, 1), got {self.val_fraction}")

    def protocol(self) -> SceProtocol:
        """The :class:`SceProtocol` of these options (reads :attr:`definition` now)."""
        return SceProtocol(load_sce_split(self.definition), self.val_fraction, self.seed, self.image_split)


PAPER_SCE = SceOptions()
"""The COCO-SCE of the GPV-1 paper: Table 9's category split, ``train2014`` images hashed 80/20 (seed 0)."""
