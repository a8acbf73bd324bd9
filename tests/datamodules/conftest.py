"""Fixtures for the data module tests: tiny hand-built files in the official formats, and one ShapesWorld set.

The hand-built sets are written by the ``make_*`` functions below into a fresh folder per test (tests that
damage files get their own copy). They follow ``metrics_and_formats.md`` §3-§7, independently of ShapesWorld.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

# -- images --------------------------------------------------------------------------------------------------


def write_image(path: Path, height: int, width: int, value: int = 120, fmt: str | None = None) -> Path:
    """A small RGB image with a gradient (so resizes are not trivial)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 7 + value) % 256, (yy * 5 + value) % 256, np.full_like(xx, value)], -1).astype(
        np.uint8
    )
    Image.fromarray(img).save(path, format=fmt)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def rect_polygon(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


# -- COCO ----------------------------------------------------------------------------------------------------

COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 19, "name": "horse", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 15, "name": "bench", "supercategory": "outdoor"},
    {"id": 52, "name": "banana", "supercategory": "food"},
]

# image id -> (height, width), per split
COCO_IMAGES = {"train2014": {1: (40, 60), 2: (50, 50), 3: (30, 64)}, "val2014": {10: (40, 40), 11: (48, 32)}}

COCO_ANNS = {
    # (ann id, image id, category id, [x, y, w, h], iscrowd)
    "train2014": [
        (101, 1, 1, [2, 3, 10, 20], 0),
        (102, 1, 1, [20, 5, 8, 12], 0),
        (100, 1, 1, [40, 10, 10, 10], 0),
        (103, 1, 19, [5, 25, 30, 10], 0),
        (201, 2, 18, [1, 1, 20, 20], 0),
        (202, 2, 52, [30, 30, 10, 10], 0),
        (301, 3, 15, [0, 0, 64, 30], 1),
    ],
    "val2014": [
        (1001, 10, 19, [5, 5, 10, 10], 0),
        (1002, 10, 52, [20, 20, 5, 5], 0),
        (1101, 11, 1, [3, 3, 9, 9], 0),
    ],
}

COCO_CAPTIONS = {
    "train2014": [
        (1, 1, "Three people stand near a horse."),
        (2, 1, "A group of people outside."),
        (3, 2, "A dog next to a banana."),
        (4, 3, "An empty bench in the park."),
        (5, 3, "A wooden bench."),
    ],
    "val2014": [
        (6, 10, "A horse eats a banana."),
        (7, 10, "An animal and fruit."),
        (8, 11, "A man standing."),
    ],
}


def coco_image_entry(image_id: int, split: str, hw: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": image_id,
        "file_name": f"COCO_{split}_{image_id:012d}.jpg",
        "height": hw[0],
        "width": hw[1],
        "license": 1,
        "coco_url": "",
        "date_captured": "",
        "flickr_url": "",
    }


def coco_annotation(ann: tuple[int, int, int, list[float], int], hw: tuple[int, int]) -> dict[str, Any]:
    ann_id, image_id, cat, box, crowd = ann
    if crowd:
        h, w = hw
        mask = np.zeros((h, w), np.uint8)
        mask[int(box[1]) : int(box[1] + box[3]), int(box[0]) : int(box[0] + box[2])] = 1
        flat = mask.ravel(order="F")
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
        seg: Any = {"size": [h, w], "counts": ([0] if flat[0] else []) + runs}
    else:
        seg = [rect_polygon(*box)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": box,
        "area": float(box[2] * box[3]),
        "iscrowd": crowd,
        "segmentation": seg,
    }


def make_coco(root: Path, images: bool = True) -> Path:
    """``root/annotations/{instances,captions}_{train,val}2014.json`` + ``root/{split}/*.jpg``."""
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    for split, imgs in COCO_IMAGES.items():
        entries = [coco_image_entry(i, split, hw) for i, hw in imgs.items()]
        anns = [coco_annotation(a, imgs[a[1]]) for a in COCO_ANNS[split]]
        inst = {
            "info": {},
            "licenses": [],
            "images": entries,
            "annotations": anns,
            "categories": COCO_CATEGORIES,
        }
        (ann_dir / f"instances_{split}.json").write_text(json.dumps(inst))
        caps = [{"id": c, "image_id": i, "caption": t} for c, i, t in COCO_CAPTIONS[split]]
        (ann_dir / f"captions_{split}.json").write_text(json.dumps({"images": entries, "annotations": caps}))
        if images:
            for e in entries:
                write_image(root / split / e["file_name"], e["height"], e["width"], fmt="JPEG")
    test = [coco_image_entry(500, "test2014", (20, 20))]
    (ann_dir / "image_info_test2014.json").write_text(
        json.dumps({"images": test, "categories": COCO_CATEGORIES})
    )
    write_image(root / "test2014" / test[0]["file_name"], 20, 20, fmt="JPEG")
    return root


# -- VQAv2 ---------------------------------------------------------------------------------------------------

VQA_QUESTIONS = {
    "train2014": [
        (1, 11, "What animal is this?", ["horse"] * 4 + ["pony"] * 3 + ["dog", "cat", "cow"], "horse"),
        (2, 21, "Is it sunny?", ["yes"] * 2 + ["no"] * 2 + ["maybe", "a", "b", "c", "d", "e"], "yes"),
        (2, 22, "What is on the bench?", ["book"] * 10, "book"),
        (3, 31, "How many people?", ["2"] * 3 + ["3"] * 7, "3"),
    ],
    "val2014": [
        (10, 101, "What color is the horse?", ["brown"] * 10, "brown"),
        (11, 111, "Is he tall?", ["yes"] * 10, "yes"),
    ],
}


def make_vqa(root: Path, images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in VQA_QUESTIONS.items():
        qs = [{"image_id": i, "question": q, "question_id": qid} for i, qid, q, _, _ in rows]
        (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "questions": qs})
        )
        anns = [
            {
                "question_id": qid,
                "image_id": i,
                "question_type": "what",
                "answer_type": "other",
                "multiple_choice_answer": mc,
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(ans)
                ],
            }
            for i, qid, _, ans, mc in rows
        ]
        (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps({"annotations": anns}))
        if images:
            for i in {r[0] for r in rows}:
                write_image(root / "images" / split / f"COCO_{split}_{i:012d}.jpg", 24, 32, fmt="JPEG")
    qs = [{"image_id": 900, "question": "What is it?", "question_id": 9001}]
    (root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text(json.dumps({"questions": qs}))
    if images:
        write_image(root / "images" / "test2015" / "COCO_test2015_000000000900.jpg", 24, 32, fmt="JPEG")
    return root


# -- RefCOCO family ------------------------------------------------------------------------------------------


def sentence(sent_id: int, text: str) -> dict[str, Any]:
    return {"raw": text.capitalize(), "sent": text, "sent_id": sent_id, "tokens": text.split()}


def ref_instances() -> dict[str, Any]:
    imgs = {1: (40, 60), 2: (50, 50)}
    entries = [coco_image_entry(i, "train2014", hw) for i, hw in imgs.items()]
    anns = [
        coco_annotation((11, 1, 1, [2, 3, 10, 20], 0), imgs[1]),
        coco_annotation((12, 1, 19, [20, 5, 30, 30], 0), imgs[1]),
        coco_annotation((21, 2, 18, [1, 1, 20, 20], 0), imgs[2]),
        coco_annotation((22, 2, 18, [25, 25, 20, 20], 0), imgs[2]),
    ]
    return {"images": entries, "annotations": anns, "categories": COCO_CATEGORIES}


REFS = [
    # ref_id, ann_id, image_id, split, sentences
    (1, 11, 1, "train", [(100, "man on the left"), (101, "left person")]),
    (2, 12, 1, "train", [(102, "brown horse")]),
    (3, 21, 2, "val", [(103, "dog top left"), (104, "upper dog")]),
    (4, 22, 2, "testA", [(105, "dog bottom right")]),
    (5, 11, 1, "testB", [(106, "the guy")]),
]


def make_refcoco(root: Path, images: bool = True, dataset: str = "refcoco", split_by: str = "unc") -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    inst = ref_instances()
    (folder / "instances.json").write_text(json.dumps(inst))
    refs = [
        {
            "ref_id": r,
            "ann_id": a,
            "image_id": i,
            "split": s,
            "category_id": 1,
            "sent_ids": [k for k, _ in sents],
            "sentences": [sentence(k, t) for k, t in sents],
            "file_name": f"COCO_train2014_{i:012d}_{a}.jpg",
        }
        for r, a, i, s, sents in REFS
    ]
    (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    if images:
        for e in inst["images"]:
            write_image(root / "images" / "train2014" / e["file_name"], e["height"], e["width"], fmt="JPEG")
    return root


GREFS = [
    # ref_id, ann_ids, image_id, split, sentences
    (1, [11], 1, "train", [(200, "the person")]),
    (2, [21, 22], 2, "train", [(201, "both dogs"), (202, "two dogs")]),
    (3, [-1], 2, "train", [(203, "the cat")]),
    (4, 12, 1, "val", [(204, "horse")]),
    (5, [-1], 1, "testA", [(205, "the zebra")]),
]


def make_grefcoco(root: Path, images: bool = True, as_pickle: bool = False) -> Path:
    folder = root / "grefcoco"
    folder.mkdir(parents=True, exist_ok=True)
    inst = ref_instances()
    (folder / "instances.json").write_text(json.dumps(inst))
    grefs = [
        {
            "ref_id": r,
            "ann_id": a,
            "image_id": i,
            "split": s,
            "category_id": [1],
            "sent_ids": [k for k, _ in sents],
            "sentences": [sentence(k, t) for k, t in sents],
            "file_name": f"COCO_train2014_{i:012d}.jpg",
            "no_target": a == [-1],
        }
        for r, a, i, s, sents in GREFS
    ]
    if as_pickle:
        (folder / "grefs(unc).p").write_bytes(pickle.dumps(grefs, protocol=2))
    else:
        (folder / "grefs(unc).json").write_text(json.dumps(grefs))
    if images:
        for e in inst["images"]:
            write_image(root / "images" / "train2014" / e["file_name"], e["height"], e["width"], fmt="JPEG")
    return folder


# -- NLVR2 ---------------------------------------------------------------------------------------------------


def make_nlvr2(root: Path, images: bool = True) -> Path:
    rows = {
        "train": [
            ("train-10-0-0", "There are two dogs.", "True", 7),
            ("train-10-1-0", "There are two dogs.", "False", 7),
        ],
        "dev": [
            ("dev-850-0-0", "One image has a horse.", "True", None),
            ("dev-850-1-0", "One image has a horse.", "False", None),
        ],
        "test1": [("test1-3-0-1", "Both images are red.", "False", None)],
    }
    for split, items in rows.items():
        lines = []
        for ident, sent, label, directory in items:
            row = {
                "identifier": ident,
                "sentence": sent,
                "label": label,
                "writer": "1",
                "synset": "n0",
                "query": "q",
            }
            stem = "-".join(ident.split("-")[:3])
            row["left_url"], row["right_url"] = f"http://x/{stem}-img0.png", f"http://x/{stem}-img1.png"
            folder = root / "images" / split
            if directory is not None:
                row["directory"] = directory
                folder = folder / str(directory)
            lines.append(json.dumps(row))
            if images:
                write_image(folder / f"{stem}-img0.png", 20, 30, 10)
                write_image(folder / f"{stem}-img1.png", 30, 20, 200)
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{split}.json").write_text("\n".join(lines) + "\n")
    return root


# -- co-segmentation -----------------------------------------------------------------------------------------


def make_coseg(
    root: Path, layout: str, classes: tuple[str, ...] = ("cat", "plane"), per_class: int = 5
) -> Path:
    """Images ``h x w`` with a square object; GT masks where it is."""
    for c, cls in enumerate(classes):
        for k in range(per_class):
            h, w = 20 + k, 24
            mask = np.zeros((h, w), bool)
            mask[2 + k : 10 + k, 3 + c : 12 + c] = True
            name = f"{cls}_{k:02d}"
            if layout == "pascal":
                write_image(root / "images" / cls / f"{name}.jpg", h, w, fmt="JPEG")
                write_mask(root / "GT" / cls / f"{name}.png", mask)
            elif layout == "icoseg":
                write_image(root / "images" / cls / f"{name}.jpg", h, w, fmt="JPEG")
                write_mask(root / "ground_truth" / cls / f"{name}.png", mask)
            else:  # msrc
                write_image(root / cls / f"{name}.bmp", h, w, fmt="BMP")
                gt = np.stack([mask * 255] * 3, -1).astype(np.uint8)  # RGB ground truth
                (root / cls / "GroundTruth").mkdir(parents=True, exist_ok=True)
                Image.fromarray(gt).save(root / cls / "GroundTruth" / f"{name}.png")
    return root


# -- AttCoSeg ------------------------------------------------------------------------------------------------


def make_attcoseg(root: Path, with_ann_ids: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, gids in {"train": [0, 1], "val": [8], "test": [9]}.items():
        images, anns, groups = [], [], []
        for gid in gids:
            ids = []
            for k in range(3):
                iid = gid * 10 + k + 1
                name = f"{gid:06d}_{k}"
                images.append(
                    {"id": iid, "file_name": f"images/{split}/{name}.jpg", "height": 30, "width": 40,
                     "group_id": gid, "mask_file": f"GT/{split}/{name}.png"}
                )  # fmt: skip
                write_image(root / "images" / split / f"{name}.jpg", 30, 40, fmt="JPEG")
                mask = np.zeros((30, 40), bool)
                if k in (0, 2):
                    mask[5:15, 10:20] = True
                    anns.append(coco_annotation((iid * 100 + 1, iid, 1, [10, 5, 10, 10], 0), (30, 40)))
                write_mask(root / "GT" / split / f"{name}.png", mask)
                ids.append(iid)
            attrs = {"shape": "square", "color": "red", "size": "small", "position": "top left"}
            group = {"id": gid, "image_ids": ids, "positive_indices": [0, 2],
                     "positive_image_ids": [ids[0], ids[2]], "attributes": attrs}  # fmt: skip
            if with_ann_ids:
                group["ann_ids"] = [ids[0] * 100 + 1, ids[2] * 100 + 1]
            groups.append(group)
        doc = {"images": images, "annotations": anns, "categories": COCO_CATEGORIES, "groups": groups}
        (root / f"attcoseg_{split}.json").write_text(json.dumps(doc))
    return root


# -- fixtures ------------------------------------------------------------------------------------------------

Maker = Callable[..., Path]


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return make_coco(tmp_path / "coco")


@pytest.fixture
def vqa_root(tmp_path: Path) -> Path:
    return make_vqa(tmp_path / "vqav2")


@pytest.fixture
def refcoco_root(tmp_path: Path) -> Path:
    return make_refcoco(tmp_path / "refer")


@pytest.fixture
def grefcoco_root(tmp_path: Path) -> Path:
    return make_grefcoco(tmp_path / "data")


@pytest.fixture
def nlvr2_root(tmp_path: Path) -> Path:
    return make_nlvr2(tmp_path / "nlvr2")


@pytest.fixture
def attcoseg_root(tmp_path: Path) -> Path:
    return make_attcoseg(tmp_path / "attcoseg")


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small ShapesWorld set shared by the session (read-only: tests must not modify it)."""
    build = pytest.importorskip("lightning_gpv.shapesworld.build")
    root = tmp_path_factory.mktemp("shapes") / "sw"
    return build.make_shapes(root, num_images=40, seed=0, progress=False)


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """``{relative path: (size, mtime)}`` of every file under ``root`` (to prove nothing was written)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def build() -> SimpleNamespace:
    """The fixture writers, for tests that need a variant (no images, pickle refs, another layout)."""
    return SimpleNamespace(
        coco=make_coco,
        vqa=make_vqa,
        refcoco=make_refcoco,
        grefcoco=make_grefcoco,
        nlvr2=make_nlvr2,
        coseg=make_coseg,
        attcoseg=make_attcoseg,
        image=write_image,
        mask=write_mask,
        snapshot=snapshot,
    )
