"""Shared English for ShapesWorld: noun phrases, spatial predicates and COCO-style captions.

Every sentence is generated from the scene graph and is true of the image; the spatial
predicates only fire with a clear margin so that what is said is also visibly true.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightning_gpv.shapesworld.scene import PLURALS, Instance, SceneRecord

NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)

BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "plain gray"),
    "gradient": ("gradient", "shaded"),
    "noisy": ("grainy", "noisy"),
    "striped": ("striped",),
    "checkered": ("checkered",),
}

RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}

EXTREME_MARGIN = 0.08
"""An extreme ("leftmost") must lead the runner-up by this fraction of the image side."""

RELATION_MARGIN = 0.12
"""A relation ("left of") needs this fraction of the image side along its axis ..."""

AXIS_DOMINANCE = 1.5
"""... and must be this many times larger than the offset along the other axis."""

AREA_RATIO = 1.6
""""largest"/"smallest" need this ratio of visible pixels over the runner-up."""


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """A uniformly random element of ``options``."""
    return options[int(rng.integers(len(options)))]


def article(word: str) -> str:
    """``"an"`` before a vowel sound, else ``"a"``."""
    return "an" if word[:1] in "aeio" else "a"


def with_article(phrase: str) -> str:
    """``"a red circle"``, ``"an orange star"``."""
    return f"{article(phrase)} {phrase}"


def join_and(items: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def noun(shape: str | None, plural: bool = False) -> str:
    """Shape noun, or ``"shape(s)"`` when the shape is unspecified."""
    if shape is None:
        return "shapes" if plural else "shape"
    return PLURALS[shape] if plural else shape


def phrase(
    color: str | None = None, shape: str | None = None, size: str | None = None, plural: bool = False
) -> str:
    """Bare noun phrase such as ``"small red circle"`` (no article)."""
    words = [w for w in (size, color) if w]
    return " ".join([*words, noun(shape, plural)])


def counted(n: int, color: str | None = None, shape: str | None = None) -> str:
    """``"a red circle"``, ``"two red circles"``."""
    if n == 1:
        return with_article(phrase(color, shape))
    return f"{NUMBER_WORDS[n]} {phrase(color, shape, plural=True)}"


def select(
    record: SceneRecord, color: str | None = None, shape: str | None = None, size: str | None = None
) -> list[Instance]:
    """Instances with the given attributes (``None`` matches anything), in depth order."""
    return [
        inst
        for inst in record.instances
        if (color is None or inst.obj.color == color)
        and (shape is None or inst.obj.shape == shape)
        and (size is None or inst.obj.size == size)
    ]


def relation(a: Instance, b: Instance, width: int, height: int) -> str | None:
    """Where ``a`` is relative to ``b``: ``left of``, ``right of``, ``above``, ``below`` or ``None``."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= RELATION_MARGIN * width and abs(dx) >= AXIS_DOMINANCE * abs(dy):
        return "left of" if dx > 0 else "right of"
    if abs(dy) >= RELATION_MARGIN * height and abs(dy) >= AXIS_DOMINANCE * abs(dx):
        return "above" if dy > 0 else "below"
    return None


OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

WEAK_MARGIN = 0.04
"""Below this fraction of the side (or when the other axis dominates) a relation is clearly false."""


def relation_holds(a: Instance, b: Instance, rel: str, width: int, height: int) -> bool | None:
    """``True`` if ``a`` is clearly ``rel`` ``b``, ``False`` if clearly not, ``None`` if in between."""
    if relation(a, b, width, height) == rel:
        return True
    horizontal = rel in ("left of", "right of")
    along = (b.cx - a.cx) / width if horizontal else (b.cy - a.cy) / height
    across = (b.cy - a.cy) / height if horizontal else (b.cx - a.cx) / width
    if rel in ("right of", "below"):
        along = -along
    if along <= WEAK_MARGIN or abs(along) < 0.5 * abs(across):
        return False
    return None


def is_extreme(target: Instance, group: Sequence[Instance], which: str, width: int, height: int) -> bool:
    """Whether ``target`` is clearly the ``which`` one of ``group`` (it must be in ``group``).

    ``which`` is one of ``left``, ``right``, ``top``, ``bottom``, ``largest``, ``smallest``. A group
    of one has no extreme.
    """
    others = [o for o in group if o is not target]
    if not others:
        return False
    if which == "left":
        return target.cx + EXTREME_MARGIN * width < min(o.cx for o in others)
    if which == "right":
        return target.cx - EXTREME_MARGIN * width > max(o.cx for o in others)
    if which == "top":
        return target.cy + EXTREME_MARGIN * height < min(o.cy for o in others)
    if which == "bottom":
        return target.cy - EXTREME_MARGIN * height > max(o.cy for o in others)
    if which == "largest":
        return target.pixels >= AREA_RATIO * max(o.pixels for o in others)
    if which == "smallest":
        return target.pixels * AREA_RATIO <= min(o.pixels for o in others)
    raise ValueError(f"unknown extreme {which!r}")


def position_phrase(record: SceneRecord, inst: Instance) -> str:
    """``"in the top left corner"``, ``"at the top"``, ``"on the left"``, ``"in the center"``."""
    row, column = record.position(inst).split()
    if row == "middle" and column == "center":
        return "in the center"
    if row == "middle":
        return f"on the {column}"
    if column == "center":
        return f"at the {row}"
    return f"in the {row} {column} corner"


def inventory(record: SceneRecord, colors: bool = True) -> list[str]:
    """Counted phrases of the scene's contents, ordered left to right by first member."""
    groups: dict[tuple[str | None, str], list[Instance]] = {}
    for inst in sorted(record.instances, key=lambda i: (i.cx, i.cy)):
        groups.setdefault((inst.obj.color if colors else None, inst.obj.shape), []).append(inst)
    return [counted(len(members), color, shape) for (color, shape), members in groups.items()]


def background_word(record: SceneRecord, rng: np.random.Generator) -> str:
    """An adjective for the background pattern."""
    return pick(rng, BACKGROUND_WORDS[record.scene.background.kind])


def _style(text: str, rng: np.random.Generator) -> str:
    """Vary capitalisation and the final period the way COCO captions do."""
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.5:
        text += "."
    return text


def _relation_caption(record: SceneRecord, rng: np.random.Generator) -> str | None:
    pairs = []
    for a in record.instances:
        for b in record.instances:
            same = (a.obj.color, a.obj.shape) == (b.obj.color, b.obj.shape)
            rel = None if same else relation(a, b, record.width, record.height)
            if rel is not None:
                pairs.append((a, b, rel))
    if not pairs:
        return None
    a, b, rel = pairs[int(rng.integers(len(pairs)))]
    first = with_article(phrase(a.obj.color, a.obj.shape))
    second = with_article(phrase(b.obj.color, b.obj.shape))
    return f"{first} {RELATION_PHRASES[rel]} {second}"


def _detail_caption(record: SceneRecord, rng: np.random.Generator) -> str:
    """Occlusion, size or colour-count statement (whichever the scene supports)."""
    if record.occlusions:
        front, back = record.occlusions[int(rng.integers(len(record.occlusions)))]
        f, b = record.instances[front].obj, record.instances[back].obj
        fp, bp = with_article(phrase(f.color, f.shape)), with_article(phrase(b.color, b.shape))
        if rng.random() < 0.5:
            return f"{fp} partly covering {bp}"
        return f"{bp} partially hidden behind {fp}"
    largest = [i for i in record.instances if is_extreme(i, record.instances, "largest", 1, 1)]
    if largest:
        obj = largest[0].obj
        return f"the largest shape is {with_article(phrase(obj.color, obj.shape))}"
    inst = record.instances[int(rng.integers(len(record.instances)))]
    n = len(select(record, color=inst.obj.color))
    verb = "is" if n == 1 else "are"
    return f"there {verb} {counted(n, inst.obj.color)} in the image"


def captions(record: SceneRecord, rng: np.random.Generator, count: int = 5) -> list[str]:
    """``count`` distinct, true, COCO-style captions of a scene (at least 3)."""
    n = len(record.instances)
    bg = background_word(record, rng)
    inv = join_and(inventory(record))
    candidates = [f"{inv} on {with_article(bg)} background"]
    if n == 1:
        obj = record.instances[0].obj
        where = position_phrase(record, record.instances[0])
        candidates.append(f"a single {phrase(obj.color, obj.shape, obj.size)} {where}")
    else:
        opener = pick(rng, ("an image with", "a picture of", "there are"))
        candidates.append(f"{opener} {NUMBER_WORDS[n]} shapes: {inv}")
    rel = _relation_caption(record, rng)
    if rel is not None:
        candidates.append(rel)
    colors = sorted(
        {i.obj.color for i in record.instances}, key=[i.obj.color for i in record.instances].index
    )
    shapes_only = join_and(inventory(record, colors=False))
    candidates.append(f"{pick(rng, ('a picture of', 'an image of', 'a drawing of'))} {shapes_only}")
    candidates.append(_detail_caption(record, rng))
    if n > 1:
        candidates.append(f"{join_and(colors)} shapes on {with_article(bg)} background")
    candidates.append(f"{NUMBER_WORDS[n]} {noun(None, n > 1)} on {with_article(bg)} background")
    out: list[str] = []
    for text in candidates:
        if text not in out:
            out.append(text)
    return [_style(text, rng) for text in out[:count]]
