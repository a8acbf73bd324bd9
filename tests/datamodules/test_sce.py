"""COCO-SCE: Table 9 category sets, held-out filtering and tags, the image partition, the options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.concepts import COCO_SYNONYMS
from datamodules.errors import DataFormatError
from datamodules.sce import (
    HELD_FROM_CLS_LOC,
    HELD_FROM_VQA_CAP,
    SceOptions,
    SceProtocol,
    SceSplit,
    is_val_image,
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


def test_sce_options_build_the_protocol(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        SceOptions(val_fraction=1.0)
    paper = SceOptions().protocol()
    assert paper.split.held_from_vqa_cap == HELD_FROM_VQA_CAP and paper.image_split_file is None
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"held_out_vqa_cap": ["heart"], "held_out_cls_loc": ["star"]}))
    own = SceOptions(definition=str(path), val_fraction=0.5, seed=3).protocol()
    assert set(own.split.categories) == {"heart", "star"} and (own.val_fraction, own.seed) == (0.5, 3)
    ids = list(range(200))
    np.testing.assert_array_equal(own.image_mask("val", ids), is_val_image(ids, 0.5, 3))
