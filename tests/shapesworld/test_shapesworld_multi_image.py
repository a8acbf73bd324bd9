"""NLVR2 (JSON lines), PASCAL-layout co-segmentation, AttCoSeg and the COCO-SCE split files."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from lightning_gpv.shapesworld import SHAPES, statements

NLVR2_FIELDS = {"identifier", "sentence", "left_url", "right_url", "label", "writer", "validation", "synset"}


def test_nlvr2_json_lines(shapes_root: Path) -> None:
    root = shapes_root / "nlvr2"
    labels = set()
    true_pairs: dict[tuple[str, str, str], int] = defaultdict(int)
    for split in ("train", "dev", "test1"):
        lines = (root / "data" / f"{split}.json").read_text().splitlines()
        assert lines
        by_sentence = defaultdict(set)
        for line in lines:
            row = json.loads(line)
            assert set(row) >= NLVR2_FIELDS | {"query"}
            assert row["label"] in ("True", "False")
            labels.add(row["label"])
            s, set_id, pair_id, sent_id = row["identifier"].split("-")
            true_pairs[(split, set_id, sent_id)] += row["label"] == "True"
            assert s == split
            by_sentence[(set_id, sent_id)].add(row["sentence"])
            for side, key in ((0, "left_url"), (1, "right_url")):
                name = f"{split}-{set_id}-{pair_id}-img{side}.png"
                assert row[key].endswith(name)
                with Image.open(root / row[key]) as im:
                    assert im.format == "PNG"
            if split == "train":
                assert row["directory"] == int(set_id) % 100 and f"/{row['directory']}/" in row["left_url"]
            else:
                assert len(row["extra_validations"]) == 4
        assert all(len(v) == 1 for v in by_sentence.values())  # one sentence per (set, sentence id)
    assert labels == {"True", "False"}
    # Balanced as NLVR2 is: each sentence is true on two of its set's four pairs, so that always
    # answering one label scores 0.5 and no sentence is all-true or all-false.
    assert set(true_pairs.values()) == {2}, sorted(true_pairs.items())


def _scripted(monkeypatch: pytest.MonkeyPatch, verdicts: list[list[bool | None]]) -> list[int]:
    """Make ``statements.candidate`` return statements with these truth values on pairs 0-3, in turn;
    returns the list of indices drawn so far."""
    drawn: list[int] = []

    def candidate(pair: object, rng: np.random.Generator, topic: str) -> statements.Statement:
        index = len(drawn) % len(verdicts)
        drawn.append(index)
        return statements.Statement(f"s{index}", lambda left, right: verdicts[index][left], topic)

    monkeypatch.setattr(statements, "candidate", candidate)
    return drawn


def test_statement_for_prefers_the_wanted_pairs_then_balance_then_agreement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pairs = [(i, i) for i in range(4)]  # the scripted predicates read the pair's index
    want = [True, True, False, False]
    rng = np.random.default_rng(0)
    exact, near, balanced, blurred = [True, True, False, False], [True, False, False, False], [
        False, False, True, True], [None, True, True, False]  # fmt: skip

    drawn = _scripted(monkeypatch, [near, exact, balanced])
    assert statements.statement_for(pairs, want, rng, "circle", tries=5).sentence == "s1"
    assert len(drawn) == 2  # the exact one ends the search at once

    # No exact one: from `tries` candidates on, a balanced one beats one that agrees on more pairs.
    drawn = _scripted(monkeypatch, [near, blurred, balanced])
    assert statements.statement_for(pairs, want, rng, "circle", tries=2).sentence == "s2"
    assert len(drawn) == 3

    # Nothing balanced within 10 * tries: the one agreeing on most pairs (the first of equals).
    unbalanced = [[False, False, False, False], near, [True, True, True, False]]
    drawn = _scripted(monkeypatch, unbalanced)
    assert statements.statement_for(pairs, want, rng, "circle", tries=2).sentence == "s1"
    assert len(drawn) == 20

    _scripted(monkeypatch, [blurred])  # borderline everywhere: never used
    with pytest.raises(RuntimeError, match="no unambiguous statement"):
        statements.statement_for(pairs, want, rng, "circle", tries=2)


def test_coseg_pairs(shapes_root: Path) -> None:
    root = shapes_root / "coseg" / "pascal"
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(SHAPES)
    for cls in SHAPES:
        images = sorted((root / "images" / cls).glob("*.jpg"))
        assert len(images) >= 2
        for path in images:
            gt_path = root / "GT" / cls / (path.stem + ".png")
            with Image.open(path) as im, Image.open(gt_path) as gt:
                assert im.size == gt.size and gt.mode == "L"
                values = np.unique(np.asarray(gt))
            assert set(values.tolist()) == {0, 255}


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_attcoseg_groups(shapes_root: Path) -> None:
    root = shapes_root / "attcoseg"
    total = 0
    for split in ("train", "val", "test"):
        doc = json.loads((root / f"attcoseg_{split}.json").read_text())
        coco = _coco(root / f"attcoseg_{split}.json")
        for group in doc["groups"]:
            total += 1
            assert group["split"] == split and 3 <= len(group["image_ids"]) <= 5
            tuples = []
            for image_id in group["image_ids"]:
                anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
                attrs = [(SHAPES[a["category_id"] - 1], a["attributes"]) for a in anns]
                tuples.append({(s, a["color"], a["size"], a["position"]) for s, a in attrs})
            sharing = [
                (i, j) for i in range(len(tuples)) for j in range(i + 1, len(tuples)) if tuples[i] & tuples[j]
            ]
            assert sharing == [tuple(group["positive_indices"])]  # exactly two images share
            i, j = group["positive_indices"]
            attrs = group["attributes"]
            target = (attrs["shape"], attrs["color"], attrs["size"], attrs["position"])
            assert tuples[i] & tuples[j] == {target}
            for k, image_id in enumerate(group["image_ids"]):
                img = coco.loadImgs(image_id)[0]
                with Image.open(root / img["mask_file"]) as gt, Image.open(root / img["file_name"]) as im:
                    mask = np.asarray(gt) > 127
                    assert im.size == gt.size
                if k in (i, j):
                    ann = coco.loadAnns(group["ann_ids"][(i, j).index(k)])[0]
                    poly = coco.annToMask(ann).astype(bool)
                    assert (poly & mask).sum() / (poly | mask).sum() > 0.95
                else:
                    assert not mask.any()
    assert total > 0


def test_coco_sce_split(shapes_root: Path) -> None:
    sce = shapes_root / "coco_sce"
    cats = json.loads((sce / "split_categories.json").read_text())
    sets = [set(cats[k]) for k in ("held_out_vqa_cap", "held_out_cls_loc", "shared")]
    assert sum(map(len, sets)) == len(SHAPES) and set().union(*sets) == set(SHAPES)
    for task in ("vqa", "captioning"):
        assert set(cats["tasks"][task]["unseen"]) == sets[0]
    for task in ("classification", "localization"):
        assert set(cats["tasks"][task]["unseen"]) == sets[1]
    images = json.loads((sce / "split_images.json").read_text())
    coco = shapes_root / "coco" / "annotations"
    train = {i["id"] for i in json.loads((coco / "instances_train2014.json").read_text())["images"]}
    val = {i["id"] for i in json.loads((coco / "instances_val2014.json").read_text())["images"]}
    assert set(images["train"]) | set(images["val"]) == train
    assert not set(images["train"]) & set(images["val"])
    assert set(images["test"]) == val and images["val"]
