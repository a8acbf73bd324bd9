"""NLVR2-style data: sets of four left/right image pairs with two statements each.

Layout (as lil-lab/nlvr): ``nlvr2/data/{train,dev,test1}.json`` are JSON lines; images are
``nlvr2/images/train/<directory>/train-<set>-<pair>-img{0,1}.png`` and
``nlvr2/images/{dev,test1}/<split>-<set>-<pair>-img{0,1}.png``. Each set has a topic shape (the
NLVR2 "synset"); every statement of the set is judged on all four pairs, so the consistency
metric (all pairs of a sentence right) is meaningful.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lightning_gpv.shapesworld.files import write_jsonl, write_png
from lightning_gpv.shapesworld.language import pick
from lightning_gpv.shapesworld.render import render_record
from lightning_gpv.shapesworld.sample import DEFAULT_STYLE, ObjectSpec, SceneStyle, sample_scene
from lightning_gpv.shapesworld.scene import SHAPES, STREAMS, Scene, seed_rng
from lightning_gpv.shapesworld.statements import statement_for

SPLITS = ("train", "dev", "test1")
PAIRS_PER_SET = 4
SENTENCES_PER_SET = 2
DIRECTORIES = 100


def set_split(set_id: int) -> str:
    """``set_id % 10 == 8`` -> ``dev``, ``== 9`` -> ``test1``, else ``train``."""
    r = set_id % 10
    return "dev" if r == 8 else "test1" if r == 9 else "train"


def image_path(split: str, set_id: int, pair_id: int, side: int) -> str:
    """Image path relative to the ``nlvr2`` folder."""
    name = f"{split}-{set_id}-{pair_id}-img{side}.png"
    if split == "train":
        return f"images/train/{set_id % DIRECTORIES}/{name}"
    return f"images/{split}/{name}"


def _scene(rng: np.random.Generator, topic: str, style: SceneStyle) -> Scene:
    required = (ObjectSpec(shape=topic),) if rng.random() < 0.6 else ()
    return sample_scene(rng, required=required, style=style)


def _judgements(rng: np.random.Generator, label: bool, count: int) -> dict[str, str]:
    out: dict[str, str] = {}
    while len(out) < count:
        agree = rng.random() < 0.95
        out[str(int(rng.integers(0, 160)))] = str(label if agree else not label)
    return out


def build_set(root: Path, seed: int, set_id: int, style: SceneStyle = DEFAULT_STYLE) -> list[dict[str, Any]]:
    """Render the eight images of one set under ``root`` and return its JSON-lines rows."""
    rng = seed_rng(seed, STREAMS["nlvr2"], set_id)
    split = set_split(set_id)
    topic = pick(rng, SHAPES)
    pairs = []
    for pair_id in range(PAIRS_PER_SET):
        records = []
        for side in range(2):
            image, record, _ = render_record(_scene(rng, topic, style))
            write_png(root / image_path(split, set_id, pair_id, side), image)
            records.append(record)
        pairs.append((records[0], records[1]))
    rows = []
    for sentence_id in range(SENTENCES_PER_SET):
        want = [bool(w) for w in rng.permutation([True, True, False, False])]
        st = statement_for(pairs, want, rng, topic)
        writer = str(int(rng.integers(0, 160)))
        for pair_id, pair in enumerate(pairs):
            label = bool(st.holds(*pair))
            row = {
                "identifier": f"{split}-{set_id}-{pair_id}-{sentence_id}",
                "label": str(label),
                "left_url": image_path(split, set_id, pair_id, 0),
                "query": f"{topic} shapes{set_id}",
                "right_url": image_path(split, set_id, pair_id, 1),
                "sentence": st.sentence,
                "synset": topic,
                "validation": _judgements(rng, label, 1),
                "writer": writer,
            }
            if split == "train":
                row["directory"] = set_id % DIRECTORIES
            else:
                row["extra_validations"] = _judgements(rng, label, 4)
            rows.append(row)
    return rows


def build_nlvr2(
    root: Path, seed: int, num_sets: int, tick: Callable[[int], None], style: SceneStyle = DEFAULT_STYLE
) -> dict[str, int]:
    """Write the NLVR2 files under ``root`` (the ``nlvr2`` folder); return example counts per split."""
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for set_id in range(num_sets):
        rows[set_split(set_id)].extend(build_set(root, seed, set_id, style))
        tick(2 * PAIRS_PER_SET)
    for split, split_rows in rows.items():
        write_jsonl(root / "data" / f"{split}.json", split_rows)
    return {split: len(r) for split, r in rows.items()}
