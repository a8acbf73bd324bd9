"""VQAv2-style questions about a ShapesWorld scene, with ten noisy human-like answers each.

Question types are taken from the official list (``QuestionTypes/mscoco_question_types.txt``):
``question_type`` is the longest official prefix of the question. Answers follow the VQA
conventions: lower case, digits for numbers, ``yes``/``no``. Disagreement is simulated: most of
the ten annotators give the right answer, the others a synonym, a neighbouring count or a
confusable colour/shape, with a lower ``answer_confidence``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lightning_gpv.shapesworld.language import (
    NUMBER_WORDS,
    OPPOSITE,
    is_extreme,
    noun,
    phrase,
    pick,
    relation,
    select,
    with_article,
)
from lightning_gpv.shapesworld.scene import COLORS, SHAPES, Instance, SceneRecord

COLOR_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "red": ("orange", "dark red"),
    "orange": ("red", "yellow"),
    "yellow": ("orange", "gold"),
    "green": ("dark green", "teal"),
    "blue": ("purple", "dark blue"),
    "purple": ("violet", "blue"),
    "white": ("gray", "silver"),
    "black": ("gray", "dark gray"),
}

SHAPE_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "circle": ("round", "ellipse"),
    "ellipse": ("oval", "circle"),
    "semicircle": ("half circle", "half moon"),
    "heart": ("love heart",),
    "square": ("rectangle", "box"),
    "rectangle": ("square", "box"),
    "triangle": ("pyramid",),
    "pentagon": ("hexagon",),
    "hexagon": ("pentagon", "octagon"),
    "diamond": ("rhombus", "square"),
    "star": ("starfish",),
    "cross": ("plus", "plus sign"),
}

BACKGROUND_ANSWERS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "gray"),
    "gradient": ("gradient", "shaded", "faded"),
    "noisy": ("noisy", "grainy", "speckled"),
    "striped": ("striped", "stripes", "lines"),
    "checkered": ("checkered", "checkerboard", "squares"),
}


OFFICIAL_TYPES: tuple[str, ...] = (
    "how many",
    "is the",
    "what",
    "what color is the",
    "what is the",
    "what kind of",
    "is there a",
    "is there",
    "what color are the",
    "are there",
    "which",
    "is",
    "are",
    "are there any",
    "what color is",
    "what color",
    "what is",
)
"""The official VQA question types (a subset of the 65) that ShapesWorld questions can start with."""


def question_type(question: str) -> str:
    """The longest official type that prefixes ``question`` word-wise (VQA's ``question_type``)."""
    words = question.lower().rstrip("?").split()
    best = ""
    for qt in OFFICIAL_TYPES:
        n = len(qt.split())
        if words[:n] == qt.split() and len(qt) > len(best):
            best = qt
    return best or "none of the above"


@dataclass(frozen=True)
class Question:
    """One question with its ground truth (the ten answers are drawn by :func:`annotate`)."""

    question: str
    answer: str
    answer_type: str
    confusions: tuple[str, ...] = ()

    @property
    def question_type(self) -> str:
        """VQA ``question_type`` (see :func:`question_type`)."""
        return question_type(self.question)


def _unique_name(record: SceneRecord, inst: Instance) -> str | None:
    """Shortest ``"[color] shape"`` phrase that singles out ``inst``, if any."""
    if len(select(record, shape=inst.obj.shape)) == 1:
        return inst.obj.shape
    if len(select(record, color=inst.obj.color, shape=inst.obj.shape)) == 1:
        return phrase(inst.obj.color, inst.obj.shape)
    return None


def _random_instance(record: SceneRecord, rng: np.random.Generator) -> Instance:
    return record.instances[int(rng.integers(len(record.instances)))]


def _count_confusions(n: int) -> tuple[str, ...]:
    near = [str(n + 1)] + ([str(n - 1)] if n > 0 else [])
    return (*near, NUMBER_WORDS[n])


def q_color(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "What color is the star?" about a shape that occurs once."""
    inst = _random_instance(record, rng)
    if len(select(record, shape=inst.obj.shape)) != 1:
        return None
    c = inst.obj.color
    return Question(f"What color is the {inst.obj.shape}?", c, "other", COLOR_CONFUSIONS[c])


def q_color_plural(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "What color are the squares?" when all instances of a repeated shape share a colour."""
    inst = _random_instance(record, rng)
    same = select(record, shape=inst.obj.shape)
    if len(same) < 2 or len({i.obj.color for i in same}) != 1:
        return None
    c = inst.obj.color
    q = f"What color are the {noun(inst.obj.shape, True)}?"
    return Question(q, c, "other", COLOR_CONFUSIONS[c])


def q_count(record: SceneRecord, rng: np.random.Generator) -> Question:
    """ "How many circles are there?", "How many red shapes ...", "How many shapes ..." (0 allowed)."""
    kind = int(rng.integers(3))
    if kind == 0:
        shape = pick(rng, [i.obj.shape for i in record.instances] + [pick(rng, SHAPES)])
        n = len(select(record, shape=shape))
        q = f"How many {noun(shape, True)} are there?"
    elif kind == 1:
        color = pick(rng, [i.obj.color for i in record.instances] + [pick(rng, tuple(COLORS))])
        n = len(select(record, color=color))
        things, where = pick(rng, ("shapes", "objects")), pick(rng, ("image", "picture"))
        q = f"How many {color} {things} are in the {where}?"
    else:
        n = len(record.instances)
        q = pick(rng, ("How many shapes are there?", "How many objects are in the picture?"))
    return Question(q, str(n), "number", _count_confusions(n))


def q_exists(record: SceneRecord, rng: np.random.Generator) -> Question:
    """ "Is there a blue star?" (half the time about an absent but plausible combination)."""
    inst = _random_instance(record, rng)
    color, shape = inst.obj.color, inst.obj.shape
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            color = pick(rng, tuple(COLORS))
        else:
            shape = pick(rng, SHAPES)
    if rng.random() < 0.3:
        ans = "yes" if select(record, shape=shape) else "no"
        return Question(f"Are there any {noun(shape, True)}?", ans, "yes/no", ("no", "yes"))
    ans = "yes" if select(record, color=color, shape=shape) else "no"
    q = f"Is there {with_article(phrase(color, shape))}?"
    return Question(q, ans, "yes/no", ("no", "yes"))


def q_shape(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "What shape is the purple object?" about a colour that occurs once."""
    inst = _random_instance(record, rng)
    if len(select(record, color=inst.obj.color)) != 1:
        return None
    s = inst.obj.shape
    what, thing = pick(rng, ("shape", "kind of shape")), pick(rng, ("object", "shape"))
    q = f"What {what} is the {inst.obj.color} {thing}?"
    return Question(q, s, "other", SHAPE_CONFUSIONS[s])


def q_side(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "Is the red circle on the left or the right?" when it is clearly on one side."""
    inst = _random_instance(record, rng)
    name = _unique_name(record, inst)
    if name is None or abs(inst.cx - record.width / 2) < 0.15 * record.width:
        return None
    side = "left" if inst.cx < record.width / 2 else "right"
    q = f"Is the {name} on the left or the right side of the image?"
    return Question(q, side, "other", ("left side" if side == "left" else "right side", "middle"))


def q_relation(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "Is the green square to the left of the star?" (yes/no)."""
    if len(record.instances) < 2:
        return None
    a, b = (record.instances[i] for i in rng.choice(len(record.instances), size=2, replace=False))
    na, nb = _unique_name(record, a), _unique_name(record, b)
    rel = relation(a, b, record.width, record.height)
    if na is None or nb is None or rel is None:
        return None
    asked = rel if rng.random() < 0.5 else OPPOSITE[rel]  # the opposite is clearly false
    words = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
    ans = "yes" if asked == rel else "no"
    return Question(f"Is the {na} {words[asked]} the {nb}?", ans, "yes/no", ("no", "yes"))


def q_more(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "Are there more circles than squares?" (counts must differ)."""
    s1, s2 = (SHAPES[i] for i in rng.choice(len(SHAPES), size=2, replace=False))
    if rng.random() < 0.7 and len(record.instances) > 1:
        s1 = _random_instance(record, rng).obj.shape
    n1, n2 = len(select(record, shape=s1)), len(select(record, shape=s2))
    if s1 == s2 or n1 == n2:
        return None
    q = f"Are there more {noun(s1, True)} than {noun(s2, True)}?"
    return Question(q, "yes" if n1 > n2 else "no", "yes/no", ("no", "yes"))


def q_extreme(record: SceneRecord, rng: np.random.Generator) -> Question | None:
    """ "What color is the largest shape?" / "What shape is on the far left?"."""
    which = pick(rng, ("largest", "smallest", "left", "right"))
    hits = [
        i for i in record.instances if is_extreme(i, record.instances, which, record.width, record.height)
    ]
    if not hits:
        return None
    obj = hits[0].obj
    if which in ("largest", "smallest"):
        q = f"What color is the {which} shape?"
        return Question(q, obj.color, "other", COLOR_CONFUSIONS[obj.color])
    return Question(f"What shape is on the far {which}?", obj.shape, "other", SHAPE_CONFUSIONS[obj.shape])


def q_background(record: SceneRecord, rng: np.random.Generator) -> Question:
    """ "What pattern is the background?" or "Is the background striped?"."""
    kind = record.scene.background.kind
    answers = BACKGROUND_ANSWERS[kind]
    if rng.random() < 0.5:
        return Question("What pattern is the background?", answers[0], "other", answers[1:])
    asked = pick(rng, ("plain", "striped", "checkered")) if rng.random() < 0.5 else kind
    word = {"plain": "plain", "gradient": "shaded", "noisy": "grainy"}.get(asked, asked)
    return Question(f"Is the background {word}?", "yes" if asked == kind else "no", "yes/no", ("no", "yes"))


GENERATORS: tuple[Callable[[SceneRecord, np.random.Generator], Question | None], ...] = (
    q_color,
    q_color_plural,
    q_count,
    q_exists,
    q_shape,
    q_side,
    q_relation,
    q_more,
    q_extreme,
    q_background,
)

ERROR_RATES = {"yes/no": 0.06, "number": 0.12, "other": 0.09}


def questions(record: SceneRecord, rng: np.random.Generator, low: int = 4, high: int = 6) -> list[Question]:
    """Between ``low`` and ``high`` distinct questions about a scene, of varied types.

    A generator may be used again only for a different answer, so near-duplicates such as "What
    shape is the red object?" / "What shape is the red shape?" do not occur together.
    """
    want = int(rng.integers(low, high + 1))
    out: list[Question] = []
    used: set[tuple[int, str]] = set()
    for _ in range(8 * want):
        if len(out) == want:
            break
        k = int(rng.integers(len(GENERATORS)))
        q = GENERATORS[k](record, rng)
        if q is not None and (k, q.answer) not in used and all(q.question != o.question for o in out):
            out.append(q)
            used.add((k, q.answer))
    return out


def annotate(q: Question, rng: np.random.Generator) -> tuple[list[dict[str, object]], str]:
    """Ten VQA answers with realistic disagreement, and the ``multiple_choice_answer``.

    At most four of the ten disagree with the truth, so the majority answer is always correct.
    """
    rate = ERROR_RATES[q.answer_type]
    if q.answer_type == "number":
        rate += 0.04 * max(int(q.answer) - 2, 0)
    confusions = [c for c in q.confusions if c != q.answer]
    wrong = min(int(rng.binomial(10, rate)), 4) if confusions else 0
    texts = [q.answer] * (10 - wrong) + [pick(rng, confusions) for _ in range(wrong)]
    order = rng.permutation(10)
    answers = []
    for answer_id, k in enumerate(order, start=1):
        text = texts[int(k)]
        if text == q.answer:
            conf = "yes" if rng.random() < 0.9 else "maybe"
        else:
            conf = pick(rng, ("maybe", "maybe", "yes", "no"))
        answers.append({"answer": text, "answer_confidence": conf, "answer_id": answer_id})
    counts = Counter(texts)
    best = max(counts.values())
    mc = q.answer if counts[q.answer] == best else sorted(a for a, c in counts.items() if c == best)[0]
    return answers, mc
