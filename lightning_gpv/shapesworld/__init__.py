"""ShapesWorld: a seeded synthetic world of rendered shapes, written in the official formats of
COCO, VQAv2, the RefCOCO family, gRefCOCO, NLVR2, PASCAL co-segmentation and AttCoSeg, plus a
COCO-SCE-style split. See ``docs/shapesworld.md``.
"""

from lightning_gpv.shapesworld.build import MANIFEST, coco_subset, make_shapes, plan, verify
from lightning_gpv.shapesworld.sample import SceneStyle
from lightning_gpv.shapesworld.scene import BACKGROUNDS, COLORS, GENERATOR_VERSION, SHAPES, SIZES

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "GENERATOR_VERSION",
    "MANIFEST",
    "SHAPES",
    "SIZES",
    "SceneStyle",
    "coco_subset",
    "make_shapes",
    "plan",
    "verify",
]
