"""RefCOCO family (plain pickle) and gRefCOCO (JSON) files, read back by the refer rules."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from lightning_gpv.shapesworld.scene import COLORS, CURVED_SHAPES, SHAPES

FILES = [
    ("refcoco", "unc", {"train", "val", "testA", "testB"}),
    ("refcoco", "google", {"train", "val", "test"}),
    ("refcoco+", "unc", {"train", "val", "testA", "testB"}),
    ("refcocog", "umd", {"train", "val", "test"}),
    ("refcocog", "google", {"train", "val"}),
]
LOCATION_WORDS = {"left", "right", "top", "bottom", "above", "below", "upper", "lower"}
LOCATION_WORDS |= {"leftmost", "rightmost", "topmost", "bottommost"}
REF_FIELDS = {"ref_id", "ann_id", "category_id", "file_name", "image_id", "split", "sent_ids", "sentences"}


def _instances(path: Path) -> tuple[dict, dict]:
    doc = json.loads(path.read_text())
    return {a["id"]: a for a in doc["annotations"]}, {i["id"]: i for i in doc["images"]}


def _check_sentences(ref: dict) -> None:
    assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]] and ref["sentences"]
    for s in ref["sentences"]:
        assert set(s) == {"raw", "sent", "sent_id", "tokens"}
        assert s["tokens"] == s["sent"].split() and s["sent"] == s["sent"].lower()


@pytest.mark.parametrize(("dataset", "scheme", "splits"), FILES)
def test_refs_pickle(shapes_root: Path, dataset: str, scheme: str, splits: set[str]) -> None:
    folder = shapes_root / "refcoco" / dataset
    with open(folder / f"refs({scheme}).p", "rb") as fh:
        refs = pickle.load(fh)
    anns, images = _instances(folder / "instances.json")
    assert refs and {r["split"] for r in refs} <= splits and "train" in {r["split"] for r in refs}
    assert len({r["ref_id"] for r in refs}) == len(refs)
    assert len({s for r in refs for s in r["sent_ids"]}) == sum(len(r["sent_ids"]) for r in refs)
    for ref in refs:
        assert set(ref) == REF_FIELDS
        ann = anns[ref["ann_id"]]
        assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]
        assert images[ref["image_id"]]["file_name"].startswith("COCO_train2014_")
        assert ref["file_name"] == images[ref["image_id"]]["file_name"][:-4] + f"_{ref['ann_id']}.jpg"
        _check_sentences(ref)
        if ref["split"] == "testA":
            assert SHAPES[ref["category_id"] - 1] in CURVED_SHAPES
        if ref["split"] == "testB":
            assert SHAPES[ref["category_id"] - 1] not in CURVED_SHAPES
        if dataset == "refcoco+":
            assert not LOCATION_WORDS & {t for s in ref["sentences"] for t in s["tokens"]}


def test_refs_single_out_their_target(shapes_root: Path) -> None:
    """An expression "<color> <shape>" names exactly one object of its image."""
    folder = shapes_root / "refcoco" / "refcoco+"
    with open(folder / "refs(unc).p", "rb") as fh:
        refs = pickle.load(fh)
    anns, _ = _instances(folder / "instances.json")
    by_image: dict[int, list[dict]] = {}
    for ann in anns.values():
        by_image.setdefault(ann["image_id"], []).append(ann)
    checked = 0
    for ref in refs:
        for s in ref["sentences"]:
            if len(s["tokens"]) == 2 and s["tokens"][0] in COLORS and s["tokens"][1] in SHAPES:
                color, shape = s["tokens"]
                hits = [
                    a["id"]
                    for a in by_image[ref["image_id"]]
                    if a["attributes"]["color"] == color and SHAPES[a["category_id"] - 1] == shape
                ]
                assert hits == [ref["ann_id"]]
                checked += 1
    assert checked > 0


def test_grefs(shapes_root: Path) -> None:
    folder = shapes_root / "grefcoco"
    refs = json.loads((folder / "grefs(unc).json").read_text())
    anns, images = _instances(folder / "instances.json")
    assert isinstance(refs, list) and {r["split"] for r in refs} <= {"train", "val", "testA", "testB"}
    kinds = set()
    for ref in refs:
        assert isinstance(ref["ann_id"], list) and isinstance(ref["category_id"], list)
        assert ref["image_id"] in images
        _check_sentences(ref)
        if ref["ann_id"] == [-1]:
            assert ref["no_target"] is True and ref["category_id"] == [-1]
            kinds.add("none")
            continue
        assert ref["no_target"] is False
        kinds.add("single" if len(ref["ann_id"]) == 1 else "multi")
        for ann_id, cat in zip(ref["ann_id"], ref["category_id"]):
            assert anns[ann_id]["image_id"] == ref["image_id"] and anns[ann_id]["category_id"] == cat
    assert kinds == {"single", "multi", "none"}
