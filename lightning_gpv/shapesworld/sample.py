"""Sampling ShapesWorld scene graphs with controlled occlusion.

Objects are added front-most one at a time and a candidate is rejected if it would hide too much
of an object already placed (below :data:`MIN_VISIBLE_FRACTION` or :data:`MIN_VISIBLE_PIXELS`),
split it in two or punch a hole in it (COCO polygons cannot express either), or touch an object
of the same colour (the boundary would be invisible). So every object of a scene is clearly
visible and countable, and the language derived from the scene graph is true of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lightning_gpv.shapesworld.render import object_outline, rasterize
from lightning_gpv.shapesworld.scene import (
    BACKGROUNDS,
    COLORS,
    COLUMNS,
    IMAGE_SIZES,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    RGB,
    ROWS,
    SHAPES,
    SIZES,
    Background,
    Scene,
    ShapeObject,
)

_KERNEL = np.ones((5, 5), dtype=np.uint8)
_CELL_MARGIN = 3.0


MAX_OBJECTS = 6
"""Most objects in a scene (without ``num_objects``)."""


@dataclass(frozen=True)
class SceneStyle:
    """How cluttered the scenes of a data set are.

    The default is the full ShapesWorld (1 to 6 objects on any background). Sparser scenes on plain
    backgrounds make localisation learnable by small models trained from scratch in CPU minutes; the
    language and annotation rules stay the same.

    Attributes:
        max_objects: Free scenes have 1 to ``max_objects`` objects (scenes with required objects may have
            more: every required object is placed).
        backgrounds: Background kinds drawn from (uniformly), a non-empty subset of ``BACKGROUNDS``.
        sizes: Size classes of free objects (uniformly), a non-empty subset of ``SIZES``' keys.
    """

    max_objects: int = MAX_OBJECTS
    backgrounds: tuple[str, ...] = BACKGROUNDS
    sizes: tuple[str, ...] = tuple(SIZES)

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {self.max_objects}")
        for name, allowed in (("backgrounds", BACKGROUNDS), ("sizes", tuple(SIZES))):
            values = tuple(getattr(self, name))
            if not values or len(set(values)) != len(values) or not set(values) <= set(allowed):
                raise ValueError(f"{name} must be distinct names out of {allowed}, got {values}")
            object.__setattr__(self, name, values)

    def to_json(self) -> dict[str, object]:
        """The style as written into the manifest."""
        return {
            "backgrounds": list(self.backgrounds),
            "max_objects": self.max_objects,
            "sizes": list(self.sizes),
        }


DEFAULT_STYLE = SceneStyle()
SPARSE_STYLE = SceneStyle(max_objects=3, backgrounds=("plain",), sizes=("medium", "large"))
"""The demo's world: 1-3 medium or large objects on plain backgrounds."""


@dataclass(frozen=True)
class ObjectSpec:
    """Constraints on an object that a scene must contain (``None`` = free).

    ``position`` is a grid cell such as ``"top left"`` that the centre of the object's box must
    fall into (with a few pixels of margin). Required objects are drawn on top of all others.
    """

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    position: str | None = None


def _rgb(values: np.ndarray) -> RGB:
    r, g, b = (int(v) for v in np.clip(values, 0, 255))
    return (r, g, b)


def sample_background(rng: np.random.Generator, kinds: tuple[str, ...] = BACKGROUNDS) -> Background:
    """A muted, low-saturation background of one of ``kinds``, so that every object colour stands out."""
    kind = kinds[int(rng.integers(len(kinds)))]
    level = int(rng.integers(95, 166))
    tint = rng.integers(-16, 17, size=3)
    c0 = _rgb(level + tint)
    delta = int(rng.integers(25, 51)) * (1 if level < 130 else -1)
    tint2 = rng.integers(-16, 17, size=3)
    c1 = _rgb(level + delta + tint2)
    return Background(
        kind=kind,
        colors=(c0, c1),
        angle=round(float(rng.uniform(0.0, np.pi)), 4),
        period=round(float(rng.uniform(14.0, 40.0)), 2),
        noise_seed=int(rng.integers(2**31)),
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _sample_object(
    rng: np.random.Generator,
    width: int,
    height: int,
    spec: ObjectSpec,
    existing: list[ShapeObject],
    sizes: tuple[str, ...] = tuple(SIZES),
) -> ShapeObject | None:
    """One candidate object (``None`` when ``spec.position`` cannot fit this size)."""
    shape = spec.shape
    if shape is None:
        reuse = existing and rng.random() < 0.3
        shape = existing[int(rng.integers(len(existing)))].shape if reuse else _pick(rng, SHAPES)
    color = spec.color
    if color is None:
        reuse = existing and rng.random() < 0.3
        color = existing[int(rng.integers(len(existing)))].color if reuse else _pick(rng, tuple(COLORS))
    size = spec.size or _pick(rng, sizes)
    lo, hi = SIZES[size]
    radius = round(float(rng.uniform(lo, hi)) * min(width, height), 2)
    angle = float(rng.uniform(-0.35, 0.35)) if shape == "heart" else float(rng.uniform(0.0, 2 * np.pi))
    angle = round(angle, 4)
    pts = object_outline(ShapeObject(shape, color, size, (0.0, 0.0), radius, angle, (0, 0, 0)))
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    # Centre range that keeps the outline inside the image with a 1-pixel margin.
    cx_lo, cx_hi = 1.0 - x0, width - 1.0 - x1
    cy_lo, cy_hi = 1.0 - y0, height - 1.0 - y1
    if spec.position is not None:
        row, column = spec.position.split()
        bx, by = (x0 + x1) / 2, (y0 + y1) / 2  # box centre relative to the shape centre
        c, r = COLUMNS.index(column), ROWS.index(row)
        cx_lo = max(cx_lo, c * width / 3 + _CELL_MARGIN - bx)
        cx_hi = min(cx_hi, (c + 1) * width / 3 - _CELL_MARGIN - bx)
        cy_lo = max(cy_lo, r * height / 3 + _CELL_MARGIN - by)
        cy_hi = min(cy_hi, (r + 1) * height / 3 - _CELL_MARGIN - by)
    if cx_lo >= cx_hi or cy_lo >= cy_hi:
        return None
    center = (round(float(rng.uniform(cx_lo, cx_hi)), 2), round(float(rng.uniform(cy_lo, cy_hi)), 2))
    jitter = rng.integers(-10, 11, size=3)
    return ShapeObject(shape, color, size, center, radius, angle, _rgb(np.asarray(COLORS[color]) + jitter))


def _clean(mask: np.ndarray, full_pixels: int) -> bool:
    """Whether a visible mask is big enough, one piece and free of holes."""
    pixels = cv2.countNonZero(mask)
    if pixels < MIN_VISIBLE_PIXELS or pixels < MIN_VISIBLE_FRACTION * full_pixels:
        return False
    contours, _ = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return len(contours) == 1


class _Canvas:
    """Objects placed so far with their full and visible masks."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.objects: list[ShapeObject] = []
        self.full: list[np.ndarray] = []
        self.visible: list[np.ndarray] = []
        self.pinned: list[int] = []  # indices that nothing may cover (required objects)

    def try_add(self, obj: ShapeObject, pin: bool = False) -> bool:
        """Put ``obj`` on top if every rule still holds; return whether it was added."""
        mask = rasterize(object_outline(obj), self.width, self.height)
        pixels = cv2.countNonZero(mask)
        if pixels < MIN_VISIBLE_PIXELS:
            return False
        updated = []
        for k, other in enumerate(self.objects):
            if not np.any(mask & self.full[k]):
                if other.color == obj.color and np.any(mask & cv2.dilate(self.full[k], _KERNEL)):
                    return False
                updated.append(self.visible[k])
                continue
            if other.color == obj.color or k in self.pinned:
                return False
            vis = self.visible[k] & (1 - mask)
            if not _clean(vis, cv2.countNonZero(self.full[k])):
                return False
            updated.append(vis)
        self.objects.append(obj)
        self.full.append(mask)
        self.visible = [*updated, mask]
        if pin:
            self.pinned.append(len(self.objects) - 1)
        return True


def sample_scene(
    rng: np.random.Generator,
    required: tuple[ObjectSpec, ...] = (),
    num_objects: int | None = None,
    image_size: tuple[int, int] | None = None,
    max_tries: int = 30,
    style: SceneStyle = DEFAULT_STYLE,
) -> Scene:
    """Sample a scene of 1 to ``style.max_objects`` objects (or ``num_objects``) on one of
    ``style.backgrounds`` that contains every ``required`` object.

    Free objects are placed first; required ones go on top and are never occluded. If a required
    object cannot be placed, the whole scene is drawn again (from the same ``rng``, so the result
    is still deterministic).
    """
    for _ in range(100):
        width, height = image_size or IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        background = sample_background(rng, style.backgrounds)
        total = num_objects if num_objects is not None else int(rng.integers(1, style.max_objects + 1))
        canvas = _Canvas(width, height)
        for _ in range(max(total - len(required), 0)):
            for _ in range(max_tries):
                obj = _sample_object(rng, width, height, ObjectSpec(), canvas.objects, style.sizes)
                if obj is not None and canvas.try_add(obj):
                    break
        ok = True
        for spec in required:
            for _ in range(4 * max_tries):
                obj = _sample_object(rng, width, height, spec, canvas.objects, style.sizes)
                if obj is not None and canvas.try_add(obj, pin=True):
                    break
            else:
                ok = False
                break
        if ok and canvas.objects:
            return Scene(width=width, height=height, background=background, objects=tuple(canvas.objects))
    raise RuntimeError(f"could not place the required objects {required}")
