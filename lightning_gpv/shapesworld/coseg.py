"""Co-segmentation (PASCAL co-seg layout) and AttCoSeg (project-defined JSON format).

CoSeg: one group per shape category; every image contains at least one instance of it and its
ground truth is the union of their visible masks: ``coseg/pascal/images/<class>/<class>_<k>.jpg``
and ``coseg/pascal/GT/<class>/<class>_<k>.png`` (``L`` mode, 0 background / 255 object).

AttCoSeg: groups of 3 to 5 images in which exactly two images share an object with the same
shape, colour, size class and grid position; no attribute tuple is shared by any other pair of
images of the group. Negatives often contain hard distractors that share two or three of the
four attributes. See ``docs/shapesworld.md`` for the JSON format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_gpv.shapesworld.coco import (
    LICENSES,
    annotation_entries,
    annotation_id,
    categories,
    image_entry,
    info,
)
from lightning_gpv.shapesworld.files import write_jpeg, write_json, write_png
from lightning_gpv.shapesworld.language import pick
from lightning_gpv.shapesworld.render import render_record
from lightning_gpv.shapesworld.sample import DEFAULT_STYLE, ObjectSpec, SceneStyle, sample_scene
from lightning_gpv.shapesworld.scene import (
    COLORS,
    COLUMNS,
    ROWS,
    SHAPES,
    SIZES,
    STREAMS,
    Instance,
    SceneRecord,
    seed_rng,
)

ATTRIBUTES = ("shape", "color", "size", "position")
POSITIONS = tuple(f"{r} {c}" for r in ROWS for c in COLUMNS)
ATTCOSEG_SPLITS = ("train", "val", "test")

Attrs = tuple[str, str, str, str]


def build_coseg(
    root: Path, seed: int, per_class: int, tick: Callable[[int], None], style: SceneStyle = DEFAULT_STYLE
) -> int:
    """Write the PASCAL-layout co-segmentation set under ``root`` (``coseg/pascal``); return #images."""
    for c, shape in enumerate(SHAPES):
        for k in range(per_class):
            rng = seed_rng(seed, STREAMS["coseg"], c * 100_000 + k)
            image, record, visible = render_record(
                sample_scene(rng, required=(ObjectSpec(shape=shape),), style=style)
            )
            gt = np.zeros((record.height, record.width), dtype=np.uint8)
            for inst, mask in zip(record.instances, visible):
                if inst.obj.shape == shape:
                    gt[mask.astype(bool)] = 255
            write_jpeg(root / "images" / shape / f"{shape}_{k:04d}.jpg", image)
            write_png(root / "GT" / shape / f"{shape}_{k:04d}.png", gt)
        tick(per_class)
    return len(SHAPES) * per_class


def group_split(group_id: int) -> str:
    """``group_id % 10 == 8`` -> ``val``, ``== 9`` -> ``test``, else ``train``."""
    r = group_id % 10
    return "val" if r == 8 else "test" if r == 9 else "train"


def attributes(record: SceneRecord, inst: Instance) -> Attrs:
    """The ``(shape, color, size, position)`` tuple that AttCoSeg matches on."""
    return (inst.obj.shape, inst.obj.color, inst.obj.size, record.position(inst))


def _tuples(record: SceneRecord) -> set[Attrs]:
    return {attributes(record, i) for i in record.instances}


def _hard_negative(target: Attrs, rng: np.random.Generator) -> ObjectSpec:
    """A spec sharing two or three of the target's attributes (never all four)."""
    values = dict(zip(ATTRIBUTES, target))
    choices: dict[str, tuple[str, ...]] = {
        "shape": SHAPES,
        "color": tuple(COLORS),
        "size": tuple(SIZES),
        "position": POSITIONS,
    }
    for k in rng.choice(len(ATTRIBUTES), size=int(rng.integers(1, 3)), replace=False):
        name = ATTRIBUTES[int(k)]
        values[name] = pick(
            rng, [v for v in choices[name] if v != values[name] and _far(name, v, values[name])]
        )
    return ObjectSpec(**values)


def _far(name: str, a: str, b: str) -> bool:
    """Positions of a hard negative are at least two grid steps (Manhattan) from the target's."""
    if name != "position":
        return True
    (ra, ca), (rb, cb) = a.split(), b.split()
    return abs(ROWS.index(ra) - ROWS.index(rb)) + abs(COLUMNS.index(ca) - COLUMNS.index(cb)) >= 2


@dataclass(frozen=True)
class Rendered:
    """A rendered scene: pixels, annotations and exact visible masks."""

    image: np.ndarray
    record: SceneRecord
    visible: list[np.ndarray]


@dataclass(frozen=True)
class Group:
    """An AttCoSeg group: its images in order, the two positive indices and the shared tuple."""

    members: list[Rendered]
    positives: tuple[int, int]
    target: Attrs


def _draw(rng: np.random.Generator, required: tuple[ObjectSpec, ...], style: SceneStyle) -> Rendered:
    return Rendered(*render_record(sample_scene(rng, required=required, style=style)))


def sample_group(rng: np.random.Generator, max_tries: int = 200, style: SceneStyle = DEFAULT_STYLE) -> Group:
    """Sample one AttCoSeg group (3 to 5 images; see the module docstring for the rules)."""
    size = int(rng.integers(3, 6))
    first, second = sorted(int(i) for i in rng.choice(size, size=2, replace=False))
    positives = (first, second)
    target: Attrs = (
        pick(rng, SHAPES),
        pick(rng, tuple(COLORS)),
        pick(rng, tuple(SIZES)),
        pick(rng, POSITIONS),
    )
    slots: list[Rendered | None] = [None] * size
    order = [*positives, *(i for i in range(size) if i not in positives)]
    for idx in order:
        for _ in range(max_tries):
            if idx in positives:
                item = _draw(rng, (ObjectSpec(*target),), style)
                if sum(attributes(item.record, i) == target for i in item.record.instances) != 1:
                    continue
                allowed = {target}
            else:
                item = _draw(rng, (_hard_negative(target, rng),) if rng.random() < 0.6 else (), style)
                allowed = set()
            if all(_tuples(item.record) & _tuples(o.record) == allowed for o in slots if o is not None):
                slots[idx] = item
                break
        else:
            raise RuntimeError(f"could not sample AttCoSeg image {idx} for {target}")
    return Group([m for m in slots if m is not None], positives, target)


def build_attcoseg(
    root: Path, seed: int, num_groups: int, tick: Callable[[int], None], style: SceneStyle = DEFAULT_STYLE
) -> dict[str, int]:
    """Write AttCoSeg under ``root`` (the ``attcoseg`` folder); return the number of groups per split."""
    data: dict[str, dict[str, list[Any]]] = {
        s: {"images": [], "annotations": [], "groups": []} for s in ATTCOSEG_SPLITS
    }
    for group_id in range(num_groups):
        rng = seed_rng(seed, STREAMS["attcoseg"], group_id)
        split = group_split(group_id)
        group = sample_group(rng, style=style)
        pos, target = group.positives, group.target
        image_ids, ann_ids = [], []
        for k, member in enumerate(group.members):
            record = member.record
            image_id = group_id * 10 + k + 1
            stem = f"{group_id:06d}_{k}"
            entry = image_entry(image_id, f"images/{split}/{stem}.jpg", record)
            entry["group_id"] = group_id
            entry["mask_file"] = f"GT/{split}/{stem}.png"
            data[split]["images"].append(entry)
            data[split]["annotations"].extend(annotation_entries(record, image_id))
            gt = np.zeros((record.height, record.width), dtype=np.uint8)
            if k in pos:
                inst = next(i for i in record.instances if attributes(record, i) == target)
                gt[member.visible[inst.index].astype(bool)] = 255
                ann_ids.append(annotation_id(image_id, inst.index))
            write_jpeg(root / entry["file_name"], member.image)
            write_png(root / entry["mask_file"], gt)
            image_ids.append(image_id)
        data[split]["groups"].append(
            {
                "ann_ids": ann_ids,
                "attributes": dict(zip(ATTRIBUTES, target)),
                "id": group_id,
                "image_ids": image_ids,
                "positive_image_ids": [image_ids[i] for i in pos],
                "positive_indices": list(pos),
                "split": split,
            }
        )
        tick(1)
    for split, d in data.items():
        doc = {
            "annotations": d["annotations"],
            "attributes": {
                "color": list(COLORS),
                "position": list(POSITIONS),
                "shape": list(SHAPES),
                "size": list(SIZES),
            },
            "categories": categories(),
            "format": "shapesworld-attcoseg-1",
            "groups": d["groups"],
            "images": d["images"],
            "info": info(seed, f"AttCoSeg {split}"),
            "licenses": LICENSES,
        }
        write_json(root / f"attcoseg_{split}.json", doc)
    return {split: len(d["groups"]) for split, d in data.items()}
