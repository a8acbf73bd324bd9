"""COCO-SCE (Skill-Concept Evaluation, GPV-1 paper Sec. 4 and Table 9): held-out concepts per task.

The 80 COCO categories are split into three disjoint sets:

* ``H_vqa,cap`` (:data:`HELD_FROM_VQA_CAP`): never seen by VQA and captioning in train/val;
* ``H_cls,loc`` (:data:`HELD_FROM_CLS_LOC`): never seen by classification and localization in train/val;
* ``S``: everything else (``person`` is always here).

Train and val drop every sample that mentions a concept held out for its task; test keeps all and tags
each sample ``seen`` or ``unseen`` (``metadata["sce"]``). Localization and classification samples carry
their category, so they are matched by category id; VQA and caption samples are matched by text with
:class:`ConceptMatcher` (see ``docs/datamodules.md`` for the rules).

The split is data: :class:`SceSplit` takes any category sets and synonym lists, so ShapesWorld (whose
categories are shapes) can define its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.io import field, read_json
from lightning_gpv.tasks.catalogue import Task

HELD_FROM_VQA_CAP: tuple[str, ...] = (
    "bed", "bench", "book", "cell phone", "horse", "remote", "sheep", "suitcase", "surfboard", "wine glass",
)  # fmt: skip
"""Categories held out from VQA and captioning (paper Table 9, ``H_vqa,cap``)."""

HELD_FROM_CLS_LOC: tuple[str, ...] = (
    "banana", "baseball bat", "bottle", "broccoli", "donut", "hot dog", "keyboard", "laptop", "train", "tv",
)  # fmt: skip
"""Categories held out from classification and localization (paper Table 9, ``H_cls,loc``)."""

COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "people", "man", "woman", "boy", "girl", "child", "kid", "baby", "guy", "lady",
               "player", "skier", "surfer", "skateboarder", "snowboarder", "rider", "pedestrian", "human"),
    "bicycle": ("bicycle", "bike", "cycle"),
    "car": ("car", "automobile", "sedan", "taxi", "cab", "suv"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "scooter", "moped"),
    "airplane": ("airplane", "aeroplane", "plane", "jet", "aircraft", "airliner"),
    "bus": ("bus", "autobus", "coach"),
    "train": ("train", "locomotive", "railcar", "tram", "subway"),
    "truck": ("truck", "lorry", "pickup"),
    "boat": ("boat", "ship", "sailboat", "canoe", "kayak", "yacht", "ferry"),
    "traffic light": ("traffic light", "stoplight", "stop light", "traffic signal"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter", "meter"),
    "bench": ("bench", "park bench"),
    "bird": ("bird", "pigeon", "seagull", "gull", "duck", "goose", "parrot", "sparrow"),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "pup", "doggy"),
    "horse": ("horse", "pony", "foal", "stallion", "mare"),
    "sheep": ("sheep", "lamb", "ewe", "ram"),
    "cow": ("cow", "cattle", "bull", "calf", "ox"),
    "elephant": ("elephant",),
    "bear": ("bear", "polar bear", "grizzly"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "back pack", "rucksack", "knapsack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse", "hand bag"),
    "tie": ("tie", "necktie", "bowtie", "bow tie"),
    "suitcase": ("suitcase", "luggage", "baggage", "suit case"),
    "frisbee": ("frisbee", "flying disc"),
    "skis": ("ski", "skis"),
    "snowboard": ("snowboard", "snow board"),
    "sports ball": ("sports ball", "ball", "football", "soccer ball", "tennis ball", "basketball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard", "skate board"),
    "surfboard": ("surfboard", "surf board", "surfboard"),
    "tennis racket": ("tennis racket", "racket", "racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass", "wineglass", "glass of wine"),
    "cup": ("cup", "mug", "teacup", "coffee cup"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "sub", "burger", "hamburger"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake"),
    "chair": ("chair", "stool"),
    "couch": ("couch", "sofa"),
    "potted plant": ("potted plant", "houseplant", "house plant", "plant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table"),
    "toilet": ("toilet",),
    "tv": ("tv", "television", "tv set", "monitor"),
    "laptop": ("laptop", "notebook computer", "computer"),
    "mouse": ("mouse",),
    "remote": ("remote", "remote control", "controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "cellphone", "phone", "mobile phone", "smartphone", "iphone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy", "stuffed animal"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("toothbrush", "tooth brush"),
}  # fmt: skip
"""Phrases that mention each COCO category (singular; plurals are matched through :func:`lemma`)."""

_IRREGULAR: dict[str, str] = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
    "knives": "knife", "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "halves": "half",
    "loaves": "loaf", "calves": "calf", "geese": "goose", "feet": "foot", "teeth": "tooth", "oxen": "ox",
    "buses": "bus", "busses": "bus", "glasses": "glass", "scissors": "scissors", "skis": "ski",
    "tomatoes": "tomato", "potatoes": "potato", "ties": "tie", "cookies": "cookie", "movies": "movie",
    "lies": "lie", "pies": "pie", "dies": "die", "species": "species", "series": "series",
    "news": "news", "bus": "bus", "gas": "gas", "yes": "yes", "this": "this", "his": "his",
    "is": "is", "was": "was", "has": "has", "does": "does", "goes": "go", "as": "as", "us": "us",
    "its": "its", "always": "always", "perhaps": "perhaps", "pants": "pants", "jeans": "jeans",
    "shorts": "shorts", "sheep": "sheep", "broccoli": "broccoli",
}  # fmt: skip

_TOKEN = re.compile(r"[a-z0-9]+")


@functools.lru_cache(maxsize=65536)
def lemma(word: str) -> str:
    """Singular form of a lowercase English word by rule (a small WordNet-free noun lemmatizer).

    Irregular plurals come from a table; otherwise ``-ies`` -> ``-y``, ``-(s|x|z|ch|sh)es`` -> stem and a
    final ``-s`` (not ``-ss``, ``-us``, ``-is``) is dropped. Both the text and the synonym phrases go
    through the same function, so matching only needs the two sides to agree.
    """
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric tokens of ``text``, lemmatized (``"Two Horses!"`` -> ``["two", "horse"]``)."""
    return [lemma(t) for t in _TOKEN.findall(text.lower())]


def _blocked(category: str, phrase: tuple[str, ...], tokens: list[str], start: int) -> bool:
    """Context rules that stop a phrase from counting as a mention of ``category`` at ``start``."""
    prev = tokens[start - 1] if start > 0 else ""
    nxt = tokens[start + len(phrase)] if start + len(phrase) < len(tokens) else ""
    if phrase == ("dog",) and prev == "hot":
        return True  # "hot dog" is its own category
    if phrase == ("bear",) and prev in ("teddy", "stuffed"):
        return True
    if category == "orange" and nxt and nxt not in _ORANGE_NOUN_NEXT:
        return True  # "orange shirt": the colour; "an orange", "oranges and apples": the fruit
    if category in ("train", "book", "remote") and prev in ("to", "will", "can", "you", "they", "we"):
        return True  # "to train", "can book", verbs
    if category == "remote" and nxt in ("area", "location", "place", "island", "village", "region"):
        return True
    if phrase == ("bat",) and nxt in ("fly", "flying", "wing", "cave", "colony"):
        return True  # the animal
    return category == "tv" and phrase == ("monitor",) and prev in ("heart", "baby")


_ORANGE_NOUN_NEXT = frozenset(
    [
        "and",
        "or",
        "on",
        "in",
        "with",
        "is",
        "are",
        "was",
        "slice",
        "peel",
        "juice",
        "tree",
        "fruit",
        "of",
        "next",
        "at",
        "to",
        "near",
        "that",
        "this",
    ]
)


@dataclass
class ConceptMatcher:
    """Finds the categories a text mentions.

    A category is mentioned when the lemmatized tokens of one of its synonym phrases occur contiguously in
    the lemmatized tokens of the text and no context rule blocks it (``dog`` after ``hot``, ``bear`` after
    ``teddy``, ``orange`` followed by a noun it colours, ``remote area``, ``to train``, ...). When a longer
    phrase of another category covers the same tokens (``hot dog``, ``teddy bear``, ``wine glass``), only
    the longer one counts.

    Args:
        synonyms: Category name -> phrases that mention it.
    """

    synonyms: Mapping[str, Sequence[str]] = dc_field(default_factory=lambda: COCO_SYNONYMS)

    def __post_init__(self) -> None:
        self._phrases: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for cat, phrases in self.synonyms.items():
            for p in {cat, *phrases}:
                toks = tuple(tokenize(p))
                if toks:
                    self._phrases.setdefault(toks[0], []).append((cat, toks))
        for lst in self._phrases.values():
            lst.sort(key=lambda cp: -len(cp[1]))

    def find(self, text: str) -> set[str]:
        """The set of category names ``text`` mentions."""
        tokens = tokenize(text)
        phrases = self._phrases
        spans: list[tuple[int, int, str]] = []
        for i, tok in enumerate(tokens):
            for cat, phrase in phrases.get(tok, ()):
                j = i + len(phrase)
                if tuple(tokens[i:j]) == phrase and not _blocked(cat, phrase, tokens, i):
                    spans.append((i, j, cat))
        if len(spans) < 2:
            return {cat for _, _, cat in spans}
        covered = [False] * len(tokens)
        found: set[str] = set()
        for i, j, cat in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):  # longest first
            if not all(covered[i:j]):
                covered[i:j] = [True] * (j - i)
                found.add(cat)
        return found


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
                raise ValueError(f"SceSplit.{name}: unknown categories {sorted(unknown)}")
        if overlap := set(self.held_from_vqa_cap) & set(self.held_from_cls_loc):
            raise ValueError(f"SceSplit: categories held out from both groups: {sorted(overlap)}")
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
    ``val_fraction`` in expectation. Pass GPV-1's own partition through a JSON file (``sce_image_split``
    of the data modules) to reproduce the paper's exact sets.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
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
