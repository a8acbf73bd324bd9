"""COCO ``instances_*.json`` / ``captions_*.json`` and VQAv2 question/annotation files."""

from __future__ import annotations

from typing import Any

from lightning_gpv.shapesworld.scene import GENERATOR_VERSION, SHAPES, SceneRecord, category_id, supercategory

ANNOTATIONS_PER_IMAGE = 100
"""Annotation ids are ``image_id * 100 + k`` (``k`` = 1-based depth index), so an object's id
does not depend on how many images were generated."""

LICENSES = [
    {"id": 1, "name": "CC0 1.0 (synthetic)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
]

DATE = "2014-01-01 00:00:00"
"""A fixed date: the files must not depend on when they were made."""


def info(seed: int, description: str) -> dict[str, Any]:
    """The ``info`` block of COCO-style files."""
    return {
        "contributor": "lightning-gpv ShapesWorld",
        "date_created": DATE.split()[0].replace("-", "/"),
        "description": f"{description} (ShapesWorld, seed {seed})",
        "url": "",
        "version": GENERATOR_VERSION,
        "year": 2014,
    }


def categories() -> list[dict[str, Any]]:
    """COCO categories: one per shape, ``supercategory`` ``curved`` or ``angular``."""
    return [{"id": category_id(s), "name": s, "supercategory": supercategory(s)} for s in SHAPES]


def coco_file_name(subset: str, image_id: int) -> str:
    """``COCO_train2014_000000000042.jpg``."""
    return f"COCO_{subset}_{image_id:012d}.jpg"


def image_entry(image_id: int, file_name: str, record: SceneRecord) -> dict[str, Any]:
    """A COCO ``images`` entry."""
    return {
        "coco_url": "",
        "date_captured": DATE,
        "file_name": file_name,
        "flickr_url": "",
        "height": record.height,
        "id": image_id,
        "license": 1,
        "width": record.width,
    }


def annotation_id(image_id: int, index: int) -> int:
    """Id of the annotation of object ``index`` (0-based depth order) of an image."""
    return image_id * ANNOTATIONS_PER_IMAGE + index + 1


def annotation_entries(record: SceneRecord, image_id: int) -> list[dict[str, Any]]:
    """COCO ``annotations`` of a scene: polygon of the visible part, tight box, polygon area.

    Besides the official fields each annotation has ``attributes`` (colour, size class, grid
    position, depth index, visible fraction), which COCO readers ignore.
    """
    out = []
    for inst in record.instances:
        out.append(
            {
                "area": inst.area,
                "attributes": {
                    "color": inst.obj.color,
                    "depth": inst.index,
                    "position": record.position(inst),
                    "size": inst.obj.size,
                    "visible_fraction": inst.visible_fraction,
                },
                "bbox": list(inst.bbox),
                "category_id": category_id(inst.obj.shape),
                "id": annotation_id(image_id, inst.index),
                "image_id": image_id,
                "iscrowd": 0,
                "segmentation": [list(inst.polygon)],
            }
        )
    return out


def instances_json(
    seed: int, images: list[dict[str, Any]], annotations: list[dict[str, Any]], description: str
) -> dict[str, Any]:
    """A complete ``instances`` file."""
    return {
        "annotations": annotations,
        "categories": categories(),
        "images": images,
        "info": info(seed, description),
        "licenses": LICENSES,
    }


def captions_json(
    seed: int, images: list[dict[str, Any]], captions: list[dict[str, Any]], subset: str
) -> dict[str, Any]:
    """A complete ``captions_{subset}.json``; captions are ``{id, image_id, caption}``."""
    return {
        "annotations": captions,
        "images": images,
        "info": info(seed, f"COCO-style captions {subset}"),
        "licenses": LICENSES,
    }


def vqa_questions_json(seed: int, subset: str, questions: list[dict[str, Any]]) -> dict[str, Any]:
    """``v2_OpenEnded_mscoco_{subset}_questions.json`` (``{image_id, question, question_id}`` each)."""
    return {
        "data_subtype": subset,
        "data_type": "mscoco",
        "info": info(seed, f"VQAv2-style questions {subset}"),
        "license": LICENSES[0],
        "questions": questions,
        "task_type": "Open-Ended",
    }


def vqa_annotations_json(seed: int, subset: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """``v2_mscoco_{subset}_annotations.json``."""
    return {
        "annotations": annotations,
        "data_subtype": subset,
        "data_type": "mscoco",
        "info": info(seed, f"VQAv2-style annotations {subset}"),
        "license": LICENSES[0],
    }
