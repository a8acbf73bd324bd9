"""Rasterising ShapesWorld scenes: outlines, exact masks, backgrounds and COCO polygons.

Coordinates follow the COCO convention: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``, so
its centre is ``(i + 0.5, j + 0.5)``. OpenCV puts pixel centres on integers, hence the half-pixel
shifts below. Masks are exact (no anti-aliasing): the image is painted through the very masks
the annotations come from.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon

from lightning_gpv.shapesworld.scene import Background, Instance, Scene, SceneRecord, ShapeObject

_SUBPIXEL_BITS = 4


def _regular(n: int, radius: float, start: float = -math.pi / 2) -> np.ndarray:
    t = start + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _unit_outline(shape: str) -> np.ndarray:
    """Outline of a shape of radius 1 centred at the origin, ``[K, 2]`` (y points down)."""
    if shape == "circle":
        return _regular(72, 1.0)
    if shape == "ellipse":
        return _regular(72, 1.0) * np.array([1.15, 0.62])
    if shape == "semicircle":
        t = np.linspace(0.0, math.pi, 37)
        arc = np.stack([1.2 * np.cos(t), -1.2 * np.sin(t)], axis=1)
        return arc + np.array([0.0, 4 * 1.2 / (3 * math.pi)])  # centroid at the origin
    if shape == "heart":
        t = 2 * math.pi * np.arange(72) / 72
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], axis=1) * (1.1 / 16)
    if shape == "square":
        return np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]])
    if shape == "rectangle":
        return np.array([[-1.1, -0.6], [1.1, -0.6], [1.1, 0.6], [-1.1, 0.6]])
    if shape == "triangle":
        return _regular(3, 1.15)
    if shape == "pentagon":
        return _regular(5, 1.0)
    if shape == "hexagon":
        return _regular(6, 1.0)
    if shape == "diamond":
        return np.array([[0.0, -1.15], [0.7, 0.0], [0.0, 1.15], [-0.7, 0.0]])
    if shape == "star":
        pts = _regular(10, 1.0)
        return pts * np.where(np.arange(10) % 2 == 0, 1.2, 0.5)[:, None]
    if shape == "cross":
        a, b = 0.33, 1.0
        return np.array(
            [
                [-a, -b],
                [a, -b],
                [a, -a],
                [b, -a],
                [b, a],
                [a, a],
                [a, b],
                [-a, b],
                [-a, a],
                [-b, a],
                [-b, -a],
                [-a, -a],
            ]
        )
    raise ValueError(f"unknown shape {shape!r}")


_UNIT_OUTLINES: dict[str, np.ndarray] = {}


def outline(shape: str, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Vertices ``[K, 2]`` (x, y in COCO pixel coordinates) of a placed, rotated shape."""
    unit = _UNIT_OUTLINES.get(shape)
    if unit is None:
        unit = _UNIT_OUTLINES.setdefault(shape, _unit_outline(shape))
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # counter-clockwise on screen (y down)
    return unit @ rot * radius + np.asarray(center)


def object_outline(obj: ShapeObject) -> np.ndarray:
    """:func:`outline` of a scene object."""
    return outline(obj.shape, obj.center, obj.radius, obj.angle)


def rasterize(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Exact binary mask (``uint8`` 0/1, ``[H, W]``) of a polygon: pixel centres inside it are set."""
    mask = np.zeros((height, width), dtype=np.uint8)
    fixed = np.round((points - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask


def render_background(bg: Background, width: int, height: int) -> np.ndarray:
    """The background as ``uint8 [H, W, 3]``."""
    c0 = np.asarray(bg.colors[0], dtype=np.uint8)
    c1 = np.asarray(bg.colors[1], dtype=np.uint8)
    if bg.kind == "plain":
        return np.broadcast_to(c0, (height, width, 3)).copy()
    if bg.kind == "noisy":
        noise_rng = np.random.Generator(np.random.PCG64(bg.noise_seed))
        noise = noise_rng.integers(-14, 15, size=(height, width, 1), dtype=np.int16)
        return np.clip(c0.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    cos, sin = np.float32(math.cos(bg.angle)), np.float32(math.sin(bg.angle))
    u = xs * cos + ys * sin
    if bg.kind == "gradient":
        # 256-level lookup table: index = position along the gradient direction.
        ramp = np.linspace(0.0, 1.0, 256)[:, None]
        lut = np.round(c0 + ramp * (c1.astype(np.float64) - c0)).astype(np.uint8)
        lo, hi = float(u.min()), float(u.max())
        index = ((u - lo) * np.float32(255.0 / max(hi - lo, 1e-6)) + np.float32(0.5)).astype(np.uint8)
        return lut[index]
    if bg.kind == "striped":
        odd = np.floor(u * np.float32(2.0 / bg.period)).astype(np.int32) & 1
    elif bg.kind == "checkered":
        v = ys * cos - xs * sin
        scale = np.float32(1.0 / bg.period)
        odd = (np.floor(u * scale).astype(np.int32) + np.floor(v * scale).astype(np.int32)) & 1
    else:
        raise ValueError(f"unknown background {bg.kind!r}")
    return np.stack([c0, c1])[odd]


def full_masks(scene: Scene) -> list[np.ndarray]:
    """The unoccluded mask of every object, in depth order."""
    return [rasterize(object_outline(o), scene.width, scene.height) for o in scene.objects]


def visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """What remains of each mask once every later (nearer) mask is drawn over it."""
    covered = np.zeros_like(masks[0]) if masks else None
    out: list[np.ndarray] = [np.empty(0)] * len(masks)
    for i in range(len(masks) - 1, -1, -1):
        out[i] = masks[i] & (1 - covered)
        covered = covered | masks[i]
    return out


def render_scene(scene: Scene) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Paint a scene.

    Returns:
        ``(image uint8 [H, W, 3], full masks, visible masks)``; masks are ``uint8 [H, W]`` 0/1 in
        depth order.
    """
    image = render_background(scene.background, scene.width, scene.height).copy()
    full = full_masks(scene)
    for obj, mask in zip(scene.objects, full):
        image[mask.astype(bool)] = obj.rgb
    return image, full, visible_masks(full)


def mask_polygon(mask: np.ndarray) -> list[float]:
    """A COCO polygon ``[x1, y1, ...]`` whose ``pycocotools`` rasterisation reproduces ``mask``.

    The outer contour runs through the centres of the boundary pixels; growing it by half a
    pixel (mitred) moves it onto their outer edges. Only the largest outer contour is used.
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64) + 0.5
    if len(contour) >= 3:
        poly = Polygon(contour)
        if not poly.is_valid:
            poly = poly.buffer(0)
        grown = poly.buffer(0.5, join_style="mitre", mitre_limit=2.0)
    else:  # a one- or two-pixel blob: its boxes
        x, y = contour.min(axis=0) - 0.5
        x1, y1 = contour.max(axis=0) + 0.5
        grown = Polygon([(x, y), (x1, y), (x1, y1), (x, y1)])
    if grown.geom_type == "MultiPolygon":
        grown = max(grown.geoms, key=lambda g: g.area)
    coords = np.asarray(grown.exterior.coords)[:-1]
    return np.round(coords.reshape(-1), 2).tolist()


def polygon_area(polygon: list[float], width: int, height: int) -> float:
    """Pixel area of a COCO polygon as ``pycocotools`` rasterises it (= ``annToMask(ann).sum()``)."""
    rle = mask_utils.frPyObjects([polygon], height, width)
    return float(mask_utils.area(mask_utils.merge(rle)))


def make_record(scene: Scene, full: list[np.ndarray], visible: list[np.ndarray]) -> SceneRecord:
    """Instances (boxes, polygons, areas) and occlusion pairs of a rendered scene."""
    instances = []
    for i, (obj, fm, vm) in enumerate(zip(scene.objects, full, visible)):
        x, y, w, h = cv2.boundingRect(vm)
        polygon = mask_polygon(vm)
        pixels = cv2.countNonZero(vm)
        instances.append(
            Instance(
                index=i,
                obj=obj,
                bbox=(float(x), float(y), float(w), float(h)),
                area=polygon_area(polygon, scene.width, scene.height),
                polygon=tuple(polygon),
                pixels=pixels,
                visible_fraction=round(pixels / max(cv2.countNonZero(fm), 1), 4),
            )
        )
    occlusions = tuple(
        (j, i) for i in range(len(full)) for j in range(i + 1, len(full)) if bool(np.any(full[i] & full[j]))
    )
    return SceneRecord(scene=scene, instances=tuple(instances), occlusions=occlusions)


def render_record(scene: Scene) -> tuple[np.ndarray, SceneRecord, list[np.ndarray]]:
    """Render a scene and annotate it: ``(image, record, visible masks)``."""
    image, full, visible = render_scene(scene)
    return image, make_record(scene, full, visible), visible
