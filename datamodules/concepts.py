"""Which COCO categories a text mentions: the concept matcher of COCO-SCE (:mod:`datamodules.sce`).

Captions and VQA questions carry no category labels, so COCO-SCE finds the categories they mention by
text. Both the text and each category's synonym phrases are lowercased, split into alphanumeric tokens and
singularised by :func:`lemma`; a category is mentioned when one of its phrases occurs as a contiguous token
sequence that no context rule blocks (see :class:`ConceptMatcher` and ``docs/datamodules.md``).
GPV-1 used NLTK WordNet lemmas and spaCy POS tags, which are not dependencies here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field

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
