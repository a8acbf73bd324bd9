"""COCO-SCE: Table 9 category sets, the concept matcher, the image partition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.errors import DataFormatError
from datamodules.sce import (
    COCO_SYNONYMS,
    HELD_FROM_CLS_LOC,
    HELD_FROM_VQA_CAP,
    ConceptMatcher,
    SceProtocol,
    SceSplit,
    is_val_image,
    lemma,
    load_sce_split,
)
from lightning_gpv.tasks.catalogue import Task


def test_table9_split() -> None:
    assert len(COCO_SYNONYMS) == 80
    held = set(HELD_FROM_VQA_CAP) | set(HELD_FROM_CLS_LOC)
    assert len(HELD_FROM_VQA_CAP) == len(HELD_FROM_CLS_LOC) == 10 and len(held) == 20
    assert held <= set(COCO_SYNONYMS) and "person" not in held
    split = SceSplit.coco()
    assert split.unseen_for(Task.VQA) == split.unseen_for("captioning") == frozenset(HELD_FROM_VQA_CAP)
    assert split.unseen_for(Task.LOCALIZATION) == frozenset(HELD_FROM_CLS_LOC)
    assert split.unseen_for(Task.REC) == frozenset()


@pytest.mark.parametrize(
    ("word", "singular"),
    [("horses", "horse"), ("benches", "bench"), ("people", "person"), ("glasses", "glass"), ("buses", "bus"),
     ("ponies", "pony"), ("knives", "knife"), ("sheep", "sheep"), ("grass", "grass"), ("bus", "bus"),
     ("ties", "tie"), ("boxes", "box")],
)  # fmt: skip
def test_lemma(word: str, singular: str) -> None:
    assert lemma(word) == singular


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Two horses grazing.", {"horse"}),
        ("What is on the hot dog?", {"hot dog"}),  # not "dog"
        ("A dog eats a hotdog", {"dog", "hot dog"}),
        ("a teddy bear on a bed", {"teddy bear", "bed"}),  # not "bear"
        ("a brown bear", {"bear"}),
        ("two wine glasses", {"wine glass"}),
        ("a man wearing an orange shirt", {"person"}),  # orange the colour
        ("oranges and apples", {"orange", "apple"}),
        ("is this a remote area?", set()),
        ("he holds the remote control", {"remote"}),
        ("women on their cell phones", {"person", "cell phone"}),
        ("people waiting to train", {"person"}),
        ("a train at the station", {"train"}),
        ("Is the TV on?", {"tv"}),
        ("", set()),
    ],
)
def test_matcher(text: str, found: set[str]) -> None:
    assert ConceptMatcher().find(text) == found


def test_tags_and_judge() -> None:
    proto = SceProtocol()
    concepts = proto.split.concepts(["A horse next to a banana"])
    assert proto.split.tag(Task.CAPTIONING, concepts) == {"seen": ["banana"], "unseen": ["horse"]}
    assert proto.judge("train", Task.CAPTIONING, concepts) is None
    assert proto.judge("train", Task.LOCALIZATION, {"horse"}) == {
        "coco_categories": {"seen": ["horse"], "unseen": []},
        "sce": "seen",
    }
    assert proto.judge("test", Task.VQA, concepts)["sce"] == "unseen"  # type: ignore[index]


def test_image_partition_is_stable() -> None:
    ids = np.arange(1, 20001)
    val = is_val_image(ids)
    assert 0.18 < val.mean() < 0.22
    # each image's side depends only on (seed, id), not on which other ids are present
    np.testing.assert_array_equal(is_val_image(ids[::7]), val[::7])
    assert not np.array_equal(is_val_image(ids, seed=1), val)
    proto = SceProtocol()
    train, valm = proto.image_mask("train", ids), proto.image_mask("val", ids)
    assert not (train & valm).any() and (train | valm).all() and proto.image_mask("test", ids).all()


def test_load_split_definitions(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"held_out_vqa_cap": ["heart"], "held_out_cls_loc": ["star"],
                                "shared": ["circle"],
                                "synonyms": {"heart": ["heart", "hearts", "love symbol"]}}))  # fmt: skip
    split = load_sce_split(path)
    assert set(split.categories) == {"heart", "star", "circle"}
    assert split.concepts(["a love symbol and two circles"]) == {"heart", "circle"}
    path.write_text(json.dumps({"held_out_vqa_cap": ["heart"], "held_out_cls_loc": ["heart"]}))
    with pytest.raises(DataFormatError, match="held out from both"):
        load_sce_split(path)
    path.write_text(json.dumps({"held_out_vqa_cap": ["heart"]}))
    with pytest.raises(DataFormatError, match="held_out_cls_loc"):
        load_sce_split(path)
