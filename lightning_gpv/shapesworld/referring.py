"""Referring expressions for the RefCOCO family and gRefCOCO.

Every expression is checked against the scene graph: a single-target expression matches
exactly its target, a multi-target one exactly its target set and a no-target one nothing.
Styles mirror the real data sets:

* ``refcoco``: short, location words allowed ("left red circle", "leftmost shape");
* ``refcoco+``: appearance only, no location words ("small red circle", "bigger star");
* ``refcocog``: longer, often over-specified sentences ("a small red circle in the top left
  corner", "the blue square that is to the left of the star").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_gpv.shapesworld.language import (
    RELATION_PHRASES,
    is_extreme,
    noun,
    phrase,
    pick,
    position_phrase,
    relation,
    relation_holds,
    select,
)
from lightning_gpv.shapesworld.scene import COLORS, SHAPES, Instance, SceneRecord

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized"),
    "large": ("big", "large"),
}

SIDE_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left", "leftmost"),
    "right": ("right", "rightmost"),
    "top": ("top", "upper", "topmost"),
    "bottom": ("bottom", "lower", "bottommost"),
}


@dataclass(frozen=True)
class Expression:
    """A referring expression (lower case, no final punctuation) and what it refers to.

    Attributes:
        text: The expression.
        targets: Indices into ``SceneRecord.instances``; empty for a no-target expression.
        shapes: Shape names the expression is about (targets' shapes, or the absent shape named).
    """

    text: str
    targets: tuple[int, ...]
    shapes: tuple[str, ...]


def unique_name(record: SceneRecord, inst: Instance) -> str | None:
    """Shortest ``"[color] shape"`` phrase that singles out ``inst``, if any."""
    if len(select(record, shape=inst.obj.shape)) == 1:
        return inst.obj.shape
    if len(select(record, color=inst.obj.color, shape=inst.obj.shape)) == 1:
        return phrase(inst.obj.color, inst.obj.shape)
    return None


def _appearance(record: SceneRecord, t: Instance, rng: np.random.Generator) -> list[str]:
    """Descriptions of ``t`` that use only colour, shape and size."""
    o = t.obj
    out = []
    if len(select(record, shape=o.shape)) == 1:
        out.append(o.shape)
    if len(select(record, color=o.color, shape=o.shape)) == 1:
        out.append(phrase(o.color, o.shape))
    if len(select(record, color=o.color)) == 1:
        out.append(f"{o.color} {pick(rng, ('shape', 'one', 'thing', 'object'))}")
    group = select(record, color=o.color, shape=o.shape)
    if len(group) > 1 and sum(i.obj.size == o.size for i in group) == 1:
        out.append(phrase(o.color, o.shape, pick(rng, SIZE_WORDS[o.size])))
    for base in (select(record, shape=o.shape), group):
        if len(base) < 2:
            continue
        name = o.shape if base is not group else phrase(o.color, o.shape)
        for which, (two, many) in {
            "largest": ("bigger", "biggest"),
            "smallest": ("smaller", "smallest"),
        }.items():
            if is_extreme(t, base, which, record.width, record.height):
                out.append(f"{two if len(base) == 2 else many} {name}")
    return out


def _location(record: SceneRecord, t: Instance, rng: np.random.Generator) -> list[tuple[str, str, bool]]:
    """Descriptions of ``t`` by its position among similar objects or relative to a landmark.

    Returns ``(head, tail, is_relation)`` triples; the expression is ``f"{head} {tail}"``.
    """
    o, w, h = t.obj, record.width, record.height
    out = []
    groups = [(select(record, color=o.color, shape=o.shape), phrase(o.color, o.shape))]
    groups.append((select(record, shape=o.shape), o.shape))
    groups.append((list(record.instances), pick(rng, ("shape", "object"))))
    for group, name in groups:
        for side in ("left", "right", "top", "bottom"):
            if is_extreme(t, group, side, w, h):
                word = pick(rng, SIDE_WORDS[side])
                if word == side and rng.random() < 0.5:
                    out.append((name, f"{'at' if side in ('top', 'bottom') else 'on'} the {side}", False))
                else:
                    out.append((f"{word} {name}", "", False))
    same = select(record, color=o.color, shape=o.shape)
    for other in record.instances:
        rel = relation(t, other, w, h) if other is not t else None
        landmark = unique_name(record, other) if rel else None
        if rel is None or landmark is None:
            continue
        if all(s is t or relation_holds(s, other, rel, w, h) is False for s in same):
            out.append((phrase(o.color, o.shape), f"{RELATION_PHRASES[rel]} the {landmark}", True))
    return out


def _long_forms(record: SceneRecord, t: Instance, rng: np.random.Generator) -> list[str]:
    """RefCOCOg-like sentences: a unique description plus true extra detail."""
    o = t.obj
    out = []
    full = phrase(o.color, o.shape, pick(rng, SIZE_WORDS[o.size]))
    unique_by_attrs = len(select(record, color=o.color, shape=o.shape, size=o.size)) == 1
    where = pick(rng, ("image", "picture"))
    if unique_by_attrs:
        out.append(f"a {full} {position_phrase(record, t)} of the {where}")
    for head, tail, is_relation in _location(record, t, rng):
        if is_relation:
            out.append(f"the {head} that is {tail}")
        else:
            out.append(f"the {head} {tail or f'in the {where}'}")
    for front, back in record.occlusions:
        if record.instances[back] is t and unique_by_attrs:
            landmark = unique_name(record, record.instances[front])
            if landmark is not None:
                out.append(f"the {full} partly hidden behind the {landmark}")
    return out


def single_expressions(record: SceneRecord, t: Instance, style: str, rng: np.random.Generator) -> list[str]:
    """All the expressions of ``style`` that pick out exactly ``t`` (deduplicated, in a stable order)."""
    if style == "refcoco+":
        texts = _appearance(record, t, rng)
    elif style == "refcoco":
        located = [f"{head} {tail}".strip() for head, tail, _ in _location(record, t, rng)]
        texts = _appearance(record, t, rng) + located
    elif style == "refcocog":
        texts = _long_forms(record, t, rng)
    else:
        raise ValueError(f"unknown style {style!r}")
    return list(dict.fromkeys(texts))


def _side_group(record: SceneRecord, side: str) -> list[Instance]:
    """Objects clearly in the left/right 40% of the image, if none sits in the middle 20%."""
    w = record.width
    middle = [i for i in record.instances if 0.4 * w <= i.cx <= 0.6 * w]
    if middle:
        return []
    return [i for i in record.instances if (i.cx < 0.4 * w if side == "left" else i.cx > 0.6 * w)]


def multi_expressions(record: SceneRecord, rng: np.random.Generator) -> list[Expression]:
    """gRefCOCO multi-target expressions (two or more targets each)."""
    out: list[Expression] = []

    def add(text: str, members: list[Instance]) -> None:
        out.append(Expression(text, tuple(m.index for m in members), tuple(m.obj.shape for m in members)))

    for color in dict.fromkeys(i.obj.color for i in record.instances):
        members = select(record, color=color)
        if len(members) >= 2:
            quant = "both" if len(members) == 2 else "all the"
            add(f"{pick(rng, (quant, 'the'))} {color} {pick(rng, ('shapes', 'objects', 'ones'))}", members)
    for shape in dict.fromkeys(i.obj.shape for i in record.instances):
        members = select(record, shape=shape)
        if len(members) >= 2:
            quant = pick(rng, ("both", "the two")) if len(members) == 2 else "all the"
            add(f"{quant} {noun(shape, True)}", members)
            colors = {m.obj.color for m in members}
            if len(colors) == 1:
                add(f"the {phrase(members[0].obj.color, shape, plural=True)}", members)
    named = [(i, unique_name(record, i)) for i in record.instances]
    named = [(i, n) for i, n in named if n is not None]
    if len(named) >= 2:
        k = rng.choice(len(named), size=2, replace=False)
        (a, na), (b, nb) = named[int(k[0])], named[int(k[1])]
        add(f"the {na} and the {nb}", sorted([a, b], key=lambda i: i.index))
    for side in ("left", "right"):
        members = _side_group(record, side)
        if len(members) >= 2:
            add(f"{pick(rng, ('the shapes', 'all objects', 'everything'))} on the {side}", members)
    return out


def no_target_expressions(record: SceneRecord, rng: np.random.Generator, tries: int = 20) -> list[Expression]:
    """Deceptive expressions that match nothing (they reuse a colour or shape of the scene).

    They read ``"the <phrase>"``, an article the single-target expressions (RefCOCO style) never start with,
    so the text alone tells a singular expression with no target from one with a target; the multi-target
    ones may start with "the" too. ``docs/benchmarks.md`` measures what a tiny VistaLLM makes of that cue and
    of the same world without it.
    """
    out: list[Expression] = []
    for _ in range(tries):
        inst = record.instances[int(rng.integers(len(record.instances)))]
        color, shape, size = inst.obj.color, inst.obj.shape, None
        kind = int(rng.integers(3))
        if kind == 0:
            color = pick(rng, tuple(COLORS))
        elif kind == 1:
            shape = pick(rng, SHAPES)
        elif inst.obj.size != "medium":
            size = "large" if inst.obj.size == "small" else "small"
        else:
            continue
        if select(record, color=color, shape=shape, size=size):
            continue
        words = pick(rng, SIZE_WORDS[size]) if size else None
        text = f"the {phrase(color, shape, words)}"
        if all(e.text != text for e in out):
            out.append(Expression(text, (), (shape,)))
        if len(out) >= 3:
            break
    return out
