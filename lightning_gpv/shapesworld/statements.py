"""NLVR2-style statements about a left/right pair of ShapesWorld scenes.

A :class:`Statement` carries its own truth function, so one sentence can be judged on several
image pairs, as in NLVR2 where each sentence of a set is paired with all four image pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lightning_gpv.shapesworld.language import (
    NUMBER_WORDS,
    RELATION_PHRASES,
    noun,
    phrase,
    pick,
    relation,
    relation_holds,
    select,
    with_article,
)
from lightning_gpv.shapesworld.scene import SceneRecord

Pair = tuple[SceneRecord, SceneRecord]


@dataclass(frozen=True)
class Statement:
    """A sentence and the predicate that decides it on a ``(left, right)`` pair (``None``: unclear)."""

    sentence: str
    holds: Callable[[SceneRecord, SceneRecord], bool | None]
    topic: str


def _count(record: SceneRecord, color: str | None, shape: str | None) -> int:
    return len(select(record, color=color, shape=shape))


def _amount(n: int, color: str | None, shape: str | None) -> str:
    """``"no red circles"``, ``"exactly one red circle"``, ``"exactly three red circles"``."""
    if n == 0:
        return f"no {phrase(color, shape, plural=True)}"
    if n == 1:
        return f"exactly one {phrase(color, shape)}"
    return f"exactly {NUMBER_WORDS[n]} {phrase(color, shape, plural=True)}"


def _attributes(pair: Pair, rng: np.random.Generator, topic: str) -> tuple[str | None, str | None]:
    """A ``(color, shape)`` query (one of them may be ``None``) drawn from the pair's objects."""
    insts = [*pair[0].instances, *pair[1].instances]
    inst = insts[int(rng.integers(len(insts)))]
    color, shape = inst.obj.color, inst.obj.shape
    if rng.random() < 0.4:
        shape = topic
    kind = int(rng.integers(3))
    return (color, shape) if kind == 0 else (None, shape) if kind == 1 else (color, None)


def _has_relation(record: SceneRecord, a: tuple[str, str], b: tuple[str, str], rel: str) -> bool | None:
    """Whether some ``a`` is clearly ``rel`` some ``b``; ``None`` when only borderline cases exist."""
    verdicts = [
        relation_holds(x, y, rel, record.width, record.height)
        for x in select(record, color=a[0], shape=a[1])
        for y in select(record, color=b[0], shape=b[1])
        if x is not y
    ]
    if True in verdicts:
        return True
    return None if None in verdicts else False


def candidate(pair: Pair, rng: np.random.Generator, topic: str) -> Statement:
    """One random statement whose parameters are drawn from ``pair`` (true or false on it)."""
    kind = int(rng.integers(8))
    color, shape = _attributes(pair, rng, topic)
    side = int(rng.integers(2))
    side_name = ("left", "right")[side]
    about = shape or topic
    if kind == 0:
        n = max(_count(pair[side], color, shape) + int(rng.integers(-1, 2)), 0)
        text = f"The {side_name} image contains {_amount(n, color, shape)}."
        return Statement(text, lambda left, right: _count((left, right)[side], color, shape) == n, about)
    if kind == 1:
        text = (
            f"There are more {phrase(color, shape, plural=True)} in the left image than in the right image."
        )
        return Statement(
            text, lambda left, right: _count(left, color, shape) > _count(right, color, shape), about
        )
    if kind == 2:
        what = pick(rng, (f"at least one {phrase(color, shape)}", with_article(phrase(color, shape))))
        text = f"Both images contain {what}."
        return Statement(
            text,
            lambda left, right: _count(left, color, shape) > 0 and _count(right, color, shape) > 0,
            about,
        )
    if kind == 3:
        text = f"Exactly one image contains {with_article(phrase(color, shape))}."
        return Statement(
            text,
            lambda left, right: (_count(left, color, shape) > 0) != (_count(right, color, shape) > 0),
            about,
        )
    if kind == 4:
        n = max(_count(pair[0], color, shape) + _count(pair[1], color, shape) + int(rng.integers(-1, 2)), 1)
        words = f"{NUMBER_WORDS[n]} {phrase(color, shape, plural=n > 1)}"
        text = f"There {'is' if n == 1 else 'are'} exactly {words} in total."
        return Statement(
            text, lambda left, right: _count(left, color, shape) + _count(right, color, shape) == n, about
        )
    if kind == 5:
        n = len(pair[side].instances)
        text = f"Each image contains exactly {NUMBER_WORDS[n]} {noun(None, n > 1)}."
        return Statement(text, lambda left, right: len(left.instances) == n == len(right.instances), about)
    if kind == 6:
        record = pair[side]
        if len(record.instances) >= 2:
            a, b = (record.instances[i] for i in rng.choice(len(record.instances), size=2, replace=False))
            rel = relation(a, b, record.width, record.height) or pick(rng, tuple(RELATION_PHRASES))
            ka, kb = (a.obj.color, a.obj.shape), (b.obj.color, b.obj.shape)
            if ka != kb:
                first, second = with_article(phrase(*ka)), with_article(phrase(*kb))
                text = f"The {side_name} image shows {first} {RELATION_PHRASES[rel]} {second}."
                return Statement(
                    text, lambda left, right: _has_relation((left, right)[side], ka, kb, rel), ka[1]
                )
    kinds = ("plain", "striped", "checkered", "gradient")
    bg = pair[side].scene.background.kind if rng.random() < 0.5 else pick(rng, kinds)
    word = {"gradient": "shaded", "noisy": "grainy"}.get(bg, bg)
    text = f"The {side_name} image has {with_article(word)} background."
    return Statement(text, lambda left, right: (left, right)[side].scene.background.kind == bg, about)


def statement_for(
    pairs: Sequence[Pair], want: Sequence[bool], rng: np.random.Generator, topic: str, tries: int = 40
) -> Statement:
    """A statement true on as many of ``pairs`` as ``want`` asks, preferably on exactly those.

    Candidates are drawn from the pairs that should make it true (as an NLVR2 writer looks at the
    pairs they must describe). The first one true on exactly the wanted pairs wins. Otherwise, from
    ``tries`` candidates on, the best one so far that is true on as many pairs as ``want`` asks
    (NLVR2's labels are balanced; the near misses, mostly true on their source pair only, would tilt
    them towards "False"). Failing that within ``10 * tries`` candidates, the one that agrees with
    ``want`` on most pairs. Candidates that are borderline on some pair are never used.
    """
    sources = [p for p, w in zip(pairs, want) if w] or list(pairs)
    wanted = sum(bool(w) for w in want)
    best, best_key = None, (False, -1)
    for attempt in range(10 * tries):
        if attempt >= tries and best_key[0]:
            break
        st = candidate(sources[int(rng.integers(len(sources)))], rng, topic)
        verdicts = [st.holds(*p) for p in pairs]
        if None in verdicts:  # borderline on some pair: a human could not judge it
            continue
        key = (sum(verdicts) == wanted, sum(v == w for v, w in zip(verdicts, want)))
        if key > best_key:
            best, best_key = st, key
        if key[1] == len(pairs):
            break
    if best is None:
        raise RuntimeError("no unambiguous statement found")
    return best
