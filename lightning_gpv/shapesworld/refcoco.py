"""RefCOCO / RefCOCO+ / RefCOCOg ``refs(*).p`` records and gRefCOCO ``grefs(unc).json`` records.

Split rules (by image index ``i``, 0-based, over the COCO ``train2014`` images only, as in the
real data sets): ``i % 20 in {1, 11}`` -> ``val``, ``i % 20 in {2, 12}`` -> test, else ``train``.
Test expressions go to ``testA`` when all their targets are curved shapes (circle, ellipse,
semicircle, heart; the role "people" plays in RefCOCO) and to ``testB`` otherwise. ``google``
splits use ``test`` instead (RefCOCOg-google has only ``train``/``val``: its test images go to
``val``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from lightning_gpv.shapesworld.coco import annotation_id, coco_file_name
from lightning_gpv.shapesworld.referring import (
    Expression,
    multi_expressions,
    no_target_expressions,
    single_expressions,
)
from lightning_gpv.shapesworld.scene import CURVED_SHAPES, SceneRecord, category_id

REFS_PER_IMAGE = 100
"""Ref ids are ``image_id * 100 + r`` and sentence ids ``ref_id * 10 + s``."""

REFER_FILES: dict[str, tuple[str, ...]] = {
    "refcoco": ("unc", "google"),
    "refcoco+": ("unc",),
    "refcocog": ("umd", "google"),
}
"""Data set -> split schemes, one ``refs({scheme}).p`` file each (as distributed by the refer API)."""

STYLES = {"refcoco": "refcoco", "refcoco+": "refcoco+", "refcocog": "refcocog"}
MAX_REFS = {"refcoco": 3, "refcoco+": 3, "refcocog": 2}


def image_part(index: int) -> str:
    """``train``, ``val`` or ``test`` for the ``index``-th generated image."""
    r = index % 20
    return "val" if r in (1, 11) else "test" if r in (2, 12) else "train"


def split_name(part: str, shapes: tuple[str, ...], dataset: str, scheme: str) -> str:
    """The ``split`` string of a ref in ``refs({scheme}).p`` of ``dataset`` (see module doc)."""
    if part != "test":
        return part
    if scheme == "unc":
        curved = bool(shapes) and all(s in CURVED_SHAPES for s in shapes)
        return "testA" if curved else "testB"
    if dataset == "refcocog" and scheme == "google":
        return "val"
    return "test"


def sentence(text: str, sent_id: int, rng: np.random.Generator) -> dict[str, Any]:
    """A refer-API sentence ``{raw, sent, sent_id, tokens}``; ``raw`` varies case and punctuation."""
    raw = text
    if rng.random() < 0.3:
        raw = raw[0].upper() + raw[1:]
    if rng.random() < 0.2:
        raw += "."
    sent = re.sub(r"[^a-z0-9\- ]", "", raw.lower()).strip()
    return {"raw": raw, "sent": sent, "sent_id": sent_id, "tokens": sent.split()}


def _choose(rng: np.random.Generator, texts: list[str], low: int, high: int) -> list[str]:
    k = min(len(texts), int(rng.integers(low, high + 1)))
    return [texts[int(i)] for i in sorted(rng.choice(len(texts), size=k, replace=False))]


def _ref(
    image_id: int, r: int, ann_ids: list[int], cat_ids: list[int], texts: list[str], rng: np.random.Generator
) -> dict[str, Any]:
    ref_id = image_id * REFS_PER_IMAGE + r
    sentences = [sentence(t, ref_id * 10 + s, rng) for s, t in enumerate(texts)]
    return {
        "ann_id": ann_ids,
        "category_id": cat_ids,
        "file_name": coco_file_name("train2014", image_id)[:-4] + f"_{ann_ids[0]}.jpg",
        "image_id": image_id,
        "ref_id": ref_id,
        "sent_ids": [s["sent_id"] for s in sentences],
        "sentences": sentences,
    }


def image_refs(
    record: SceneRecord, image_id: int, dataset: str, rng: np.random.Generator
) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """RefCOCO-family refs of one image (without ``split``), each with the target's shape.

    Like the real data, only images with at least two objects get refs; each ref has one target
    and one to three sentences that single it out.
    """
    if len(record.instances) < 2:
        return []
    out = []
    for k in rng.permutation(len(record.instances)):
        inst = record.instances[int(k)]
        texts = single_expressions(record, inst, STYLES[dataset], rng)
        if not texts:
            continue
        ann = annotation_id(image_id, inst.index)
        ref = _ref(
            image_id, len(out) + 1, [ann], [category_id(inst.obj.shape)], _choose(rng, texts, 1, 3), rng
        )
        ref["ann_id"], ref["category_id"] = ann, category_id(inst.obj.shape)
        out.append((ref, (inst.obj.shape,)))
        if len(out) == MAX_REFS[dataset]:
            break
    return out


def image_grefs(
    record: SceneRecord, image_id: int, rng: np.random.Generator
) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """gRefCOCO refs of one image: up to two single-, two multi- and one no-target ref.

    ``ann_id`` and ``category_id`` are always lists; a no-target ref has ``ann_id == [-1]``,
    ``category_id == [-1]`` and ``no_target == True``.
    """
    exprs: list[tuple[Expression, list[str]]] = []
    for k in rng.permutation(len(record.instances))[:2]:
        inst = record.instances[int(k)]
        texts = single_expressions(record, inst, "refcoco", rng)
        if texts:
            expr = Expression(texts[0], (inst.index,), (inst.obj.shape,))
            exprs.append((expr, _choose(rng, texts, 1, 2)))
    multi = multi_expressions(record, rng)
    for k in rng.permutation(len(multi))[:2]:
        exprs.append((multi[int(k)], [multi[int(k)].text]))
    for expr in no_target_expressions(record, rng)[:1]:
        exprs.append((expr, [expr.text]))
    out = []
    for r, (expr, texts) in enumerate(exprs, start=1):
        if expr.targets:
            anns = [annotation_id(image_id, i) for i in expr.targets]
            cats = [category_id(record.instances[i].obj.shape) for i in expr.targets]
        else:
            anns, cats = [-1], [-1]
        ref = _ref(image_id, r, anns, cats, texts, rng)
        ref["no_target"] = not expr.targets
        out.append((ref, expr.shapes))
    return out
