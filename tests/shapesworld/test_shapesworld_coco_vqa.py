"""COCO instances/captions and VQAv2 files, read back by the official rules."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from lightning_gpv.shapesworld import SHAPES
from lightning_gpv.shapesworld.questions import OFFICIAL_TYPES
from lightning_gpv.shapesworld.scene import PLURALS

SUBSETS = ("train2014", "val2014")


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.mark.parametrize("subset", SUBSETS)
def test_instances_read_by_pycocotools(shapes_root: Path, subset: str) -> None:
    coco = _coco(shapes_root / "coco" / "annotations" / f"instances_{subset}.json")
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
    img_ids = coco.getImgIds()
    assert img_ids
    for img in coco.loadImgs(img_ids):
        assert img["file_name"] == f"COCO_{subset}_{img['id']:012d}.jpg"
        with Image.open(shapes_root / "coco" / "images" / subset / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"]) and im.mode == "RGB"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert 1 <= len(anns) <= 6
        for ann in anns:
            assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"], list)
            mask = coco.annToMask(ann)
            assert mask.shape == (img["height"], img["width"])
            assert mask.sum() == ann["area"] > 0
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            ys, xs = np.nonzero(mask)
            # the polygon reproduces the visible mask: its extent equals the box (within a pixel)
            assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
            assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1


@pytest.mark.parametrize("subset", SUBSETS)
def test_captions(shapes_root: Path, subset: str) -> None:
    coco = _coco(shapes_root / "coco" / "annotations" / f"captions_{subset}.json")
    instances = _coco(shapes_root / "coco" / "annotations" / f"instances_{subset}.json")
    assert sorted(coco.getImgIds()) == sorted(instances.getImgIds())
    for image_id in coco.getImgIds():
        caps = [a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
        assert len(caps) >= 3 and len(set(caps)) == len(caps)
        cat_ids = [a["category_id"] for a in instances.imgToAnns[image_id]]
        names = {c["name"] for c in instances.loadCats(cat_ids)}
        # the first caption lists every shape of the image
        words = set(re.findall(r"[a-z]+", caps[0].lower()))
        assert all(n in words or PLURALS[n] in words for n in names)


@pytest.mark.parametrize("subset", SUBSETS)
def test_vqa_questions_and_annotations(shapes_root: Path, subset: str) -> None:
    vqa = shapes_root / "vqav2"
    qdoc = _load(vqa / f"v2_OpenEnded_mscoco_{subset}_questions.json")
    adoc = _load(vqa / f"v2_mscoco_{subset}_annotations.json")
    assert qdoc["task_type"] == "Open-Ended" and qdoc["data_subtype"] == adoc["data_subtype"] == subset
    questions = {q["question_id"]: q for q in qdoc["questions"]}
    assert len(questions) == len(qdoc["questions"]) == len(adoc["annotations"])
    image_ids = {
        i["id"] for i in _load(shapes_root / "coco/annotations" / f"instances_{subset}.json")["images"]
    }
    disagreement = 0
    for ann in adoc["annotations"]:
        q = questions[ann["question_id"]]
        assert q["image_id"] == ann["image_id"] and q["image_id"] in image_ids
        assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
        assert all(a["answer_confidence"] in ("yes", "maybe", "no") for a in ann["answers"])
        counts = Counter(a["answer"] for a in ann["answers"])
        assert counts[ann["multiple_choice_answer"]] == max(counts.values()) >= 6
        assert ann["answer_type"] in ("yes/no", "number", "other")
        assert ann["question_type"] in OFFICIAL_TYPES
        assert q["question"].lower().startswith(ann["question_type"])
        if ann["answer_type"] == "yes/no":
            assert ann["multiple_choice_answer"] in ("yes", "no")
        if ann["answer_type"] == "number":
            assert ann["multiple_choice_answer"].isdigit()
        disagreement += len(counts) > 1
    assert disagreement > 0


def test_vqa_counts_are_true(shapes_root: Path) -> None:
    """Answers to "How many <shapes> are there?" equal the number of instances of that category."""
    coco = _coco(shapes_root / "coco" / "annotations" / "instances_train2014.json")
    vqa = shapes_root / "vqav2"
    qs = _load(vqa / "v2_OpenEnded_mscoco_train2014_questions.json")["questions"]
    anns = {a["question_id"]: a for a in _load(vqa / "v2_mscoco_train2014_annotations.json")["annotations"]}
    plural_to_id = {PLURALS[s]: i + 1 for i, s in enumerate(SHAPES)}
    checked = 0
    for q in qs:
        m = re.fullmatch(r"How many (\w+) are there\?", q["question"])
        if m and m.group(1) in plural_to_id:
            n = len(coco.getAnnIds(imgIds=q["image_id"], catIds=[plural_to_id[m.group(1)]]))
            assert anns[q["question_id"]]["multiple_choice_answer"] == str(n)
            checked += 1
    assert checked > 0
