"""A COCO-SCE-style split of ShapesWorld (GPV-1, Table 9).

The twelve shape categories are split into three disjoint concept sets, fixed for every seed:

* ``held_out_vqa_cap`` (H_vqa,cap): never seen by VQA and captioning in train/val;
* ``held_out_cls_loc`` (H_cls,loc): never seen by classification and localization in train/val;
* ``shared`` (S): seen by every task.

Images: COCO ``train2014`` images are split into SCE-train and SCE-val (image index
``i % 20 in {1, 7, 13}`` -> val: 3 of every 16 train2014 images, close to GPV-1's 80/20 split);
SCE-test is all of ``val2014``. A sample of a task is dropped from train/val when its text
(query and answer) or, for classification and localization, its category mentions an unseen
concept of that task; test keeps everything and tags it with ``coco_categories: {seen, unseen}``.
"""

from __future__ import annotations

from typing import Any

from lightning_gpv.shapesworld.scene import GENERATOR_VERSION, PLURALS, SHAPES

HELD_OUT_VQA_CAP: tuple[str, ...] = ("heart", "hexagon", "cross")
HELD_OUT_CLS_LOC: tuple[str, ...] = ("semicircle", "pentagon", "star")
SHARED: tuple[str, ...] = tuple(s for s in SHAPES if s not in HELD_OUT_VQA_CAP + HELD_OUT_CLS_LOC)

EXTRA_SYNONYMS: dict[str, tuple[str, ...]] = {
    "ellipse": ("oval", "ovals"),
    "diamond": ("rhombus",),
    "cross": ("plus",),
}
"""Words for a shape that only appear in minority VQA answers; generated queries and captions
use just the category name and its plural."""

TASKS = ("vqa", "captioning", "classification", "localization")


def sce_val(index: int) -> bool:
    """Whether the ``index``-th image (a ``train2014`` one) belongs to SCE-val."""
    return index % 20 in (1, 7, 13)


def split_categories() -> dict[str, Any]:
    """Content of ``coco_sce/split_categories.json``."""
    vqa_cap = {"seen": sorted(SHARED + HELD_OUT_CLS_LOC), "unseen": sorted(HELD_OUT_VQA_CAP)}
    cls_loc = {"seen": sorted(SHARED + HELD_OUT_VQA_CAP), "unseen": sorted(HELD_OUT_CLS_LOC)}
    synonyms = {s: sorted([s, PLURALS[s], *EXTRA_SYNONYMS.get(s, ())]) for s in SHAPES}
    return {
        "held_out_cls_loc": sorted(HELD_OUT_CLS_LOC),
        "held_out_vqa_cap": sorted(HELD_OUT_VQA_CAP),
        "shared": sorted(SHARED),
        "synonyms": synonyms,
        "tasks": {"captioning": vqa_cap, "classification": cls_loc, "localization": cls_loc, "vqa": vqa_cap},
        "version": GENERATOR_VERSION,
    }


def split_images(image_subsets: list[tuple[int, int, str]]) -> dict[str, Any]:
    """Content of ``coco_sce/split_images.json`` from ``(index, image_id, coco_subset)`` triples."""
    train = [iid for i, iid, sub in image_subsets if sub == "train2014" and not sce_val(i)]
    val = [iid for i, iid, sub in image_subsets if sub == "train2014" and sce_val(i)]
    test = [iid for _, iid, sub in image_subsets if sub == "val2014"]
    return {
        "subsets": {"test": "val2014", "train": "train2014", "val": "train2014"},
        "test": test,
        "train": train,
        "val": val,
    }
