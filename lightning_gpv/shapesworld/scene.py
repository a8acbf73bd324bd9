"""The ShapesWorld vocabulary and scene graph.

A scene is a background plus 1 to 6 flat-coloured shapes drawn back to front. Everything the
writers need (categories, attributes, visible masks, boxes) derives from these frozen
dataclasses, so the images and every annotation file always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the same seed would produce different bytes."""

RGB = tuple[int, int, int]

SHAPES: tuple[str, ...] = (
    "circle",
    "ellipse",
    "semicircle",
    "heart",
    "square",
    "rectangle",
    "triangle",
    "pentagon",
    "hexagon",
    "diamond",
    "star",
    "cross",
)
"""The categories, in category-id order (``category_id = SHAPES.index(name) + 1``)."""

CURVED_SHAPES: tuple[str, ...] = ("circle", "ellipse", "semicircle", "heart")
"""Supercategory ``curved``; all the other shapes are ``angular``. RefCOCO ``testA`` holds the
expressions about curved shapes (the role "people" plays in the real RefCOCO), ``testB`` the rest."""

PLURALS: dict[str, str] = {name: name + "s" for name in SHAPES} | {"cross": "crosses"}

COLORS: dict[str, RGB] = {
    "red": (214, 38, 38),
    "orange": (245, 135, 25),
    "yellow": (240, 212, 36),
    "green": (46, 168, 60),
    "blue": (36, 84, 220),
    "purple": (140, 52, 186),
    "white": (246, 246, 246),
    "black": (22, 22, 22),
}
"""Object colour names and their base RGB (each object is jittered by a few levels)."""

SIZES: dict[str, tuple[float, float]] = {
    "small": (0.060, 0.085),
    "medium": (0.110, 0.140),
    "large": (0.170, 0.210),
}
"""Size class -> range of the shape radius as a fraction of ``min(width, height)``; the gaps
between the ranges keep the classes visually distinct."""

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (240, 320), (256, 256), (384, 288), (288, 384))
"""Possible ``(width, height)`` of an image."""

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noisy", "striped", "checkered")

ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLUMNS: tuple[str, ...] = ("left", "center", "right")

MIN_VISIBLE_FRACTION = 0.5
"""An object must keep at least this fraction of its pixels visible after occlusion."""

MIN_VISIBLE_PIXELS = 80
"""... and at least this many pixels."""


def category_id(shape: str) -> int:
    """The COCO ``category_id`` of a shape (1-based, in :data:`SHAPES` order)."""
    return SHAPES.index(shape) + 1


def supercategory(shape: str) -> str:
    """``"curved"`` or ``"angular"``."""
    return "curved" if shape in CURVED_SHAPES else "angular"


def position_name(x: float, y: float, width: int, height: int) -> str:
    """The 3 x 3 grid cell of a point, e.g. ``"top left"`` or ``"middle center"``."""
    row = ROWS[min(int(3 * y / height), 2)]
    column = COLUMNS[min(int(3 * x / width), 2)]
    return f"{row} {column}"


@dataclass(frozen=True)
class ShapeObject:
    """One shape of a scene, in image pixel coordinates.

    Attributes:
        shape: Category name, one of :data:`SHAPES`.
        color: Colour name, one of :data:`COLORS`.
        size: Size class, one of :data:`SIZES`.
        center: ``(x, y)`` of the shape's centre, in pixels.
        radius: Circumradius-like scale of the outline, in pixels.
        angle: Rotation in radians (counter-clockwise on screen).
        rgb: The exact fill colour (the base colour plus a small jitter).
    """

    shape: str
    color: str
    size: str
    center: tuple[float, float]
    radius: float
    angle: float
    rgb: RGB


@dataclass(frozen=True)
class Background:
    """How the background is painted.

    Attributes:
        kind: One of :data:`BACKGROUNDS`.
        colors: Two muted RGB colours (``plain`` and ``noisy`` use only the first).
        angle: Direction of the gradient or the stripes, in radians.
        period: Stripe or checker period in pixels.
        noise_seed: Seed of the per-pixel noise of ``noisy`` backgrounds.
    """

    kind: str
    colors: tuple[RGB, RGB]
    angle: float
    period: float
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    """A complete scene graph: objects are listed back to front (list order = depth order)."""

    width: int
    height: int
    background: Background
    objects: tuple[ShapeObject, ...]


@dataclass(frozen=True)
class Instance:
    """The visible part of one object of a rendered scene.

    Attributes:
        index: Position of the object in ``Scene.objects`` (0 = furthest back).
        obj: The object itself.
        bbox: Tight ``[x, y, w, h]`` box of the visible pixels (pixel-edge convention).
        area: Pixel area of the polygon segmentation (what ``pycocotools`` ``annToMask`` gives).
        polygon: One COCO polygon ``[x1, y1, x2, y2, ...]`` outlining the visible pixels.
        pixels: Number of visible pixels in the exact raster mask.
        visible_fraction: ``pixels`` divided by the pixel count of the unoccluded shape.
    """

    index: int
    obj: ShapeObject
    bbox: tuple[float, float, float, float]
    area: float
    polygon: tuple[float, ...]
    pixels: int
    visible_fraction: float

    @property
    def cx(self) -> float:
        """Horizontal centre of the visible box."""
        return self.bbox[0] + self.bbox[2] / 2

    @property
    def cy(self) -> float:
        """Vertical centre of the visible box."""
        return self.bbox[1] + self.bbox[3] / 2


@dataclass(frozen=True)
class SceneRecord:
    """A rendered scene without its pixels: what the annotation writers consume.

    Attributes:
        scene: The scene graph.
        instances: Visible instances, in depth order (same order as ``scene.objects``).
        occlusions: ``(front, back)`` instance-index pairs where ``front`` hides part of ``back``.
    """

    scene: Scene
    instances: tuple[Instance, ...]
    occlusions: tuple[tuple[int, int], ...] = field(default=())

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return self.scene.width

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return self.scene.height

    def position(self, inst: Instance) -> str:
        """Grid cell (see :func:`position_name`) of an instance's visible centre."""
        return position_name(inst.cx, inst.cy, self.width, self.height)


def seed_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``stream``: independent of how many items are made.

    Uses ``SeedSequence(seed, spawn_key=(stream, index))``, i.e. the child that ``spawn`` would
    give, so image ``i`` is the same for every ``--num-images`` larger than ``i``.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, index))))


STREAMS: dict[str, int] = {
    "scenes": 0,
    "captions": 1,
    "vqa": 2,
    "refcoco": 3,
    "refcoco+": 4,
    "refcocog": 5,
    "grefcoco": 6,
    "nlvr2": 7,
    "coseg": 8,
    "attcoseg": 9,
    "pretraining": 10,
}
"""Independent random streams (first ``spawn_key`` entry of :func:`seed_rng`)."""
