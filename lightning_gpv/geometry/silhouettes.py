"""Real object silhouettes derived offline from scikit-image's sample photos, for contour-sampling checks.

Pixel-traced masks of photographs have the staircases and thin parts that synthetic shapes lack, which is what
separates contour samplers (see :mod:`lightning_gpv.geometry.contours`). Needs ``scikit-image`` (a test
extra); every image used ships inside the scikit-image wheel, so nothing is downloaded. Sources (66 masks):

* ``horse``: ``data.horse()`` inverted (the horse is dark), 1 mask.
* ``camera``: ``data.camera()`` below its Otsu threshold, largest component (the cameraman), 1 mask.
* ``coins``: ``data.coins()`` Sobel-watershed segmentation (markers < 30 and > 150), holes filled, 24 coins.
* ``astronaut``: the orange suit (HSV red-orange, saturated) and the black helmet (value < 0.15), 2 masks.
* ``coffee``: the white cup rim (saturation < 0.25, value > 0.7), 1 mask.
* ``chelsea``: the cat's two pupils (value < 0.12), 2 masks.
* ``rocket``: the white rocket body (saturation < 0.25, value > 0.6), 1 mask.
* ``clock``: ``data.clock()`` above its Otsu threshold, largest component, 1 mask.
* ``text``: handwritten strokes of ``data.text()`` below its Otsu threshold, components of >= 150 px (21).
* ``ihc``: the 12 largest haematoxylin-stained regions of ``data.immunohistochemistry()`` (Otsu on the H
  channel).

Each mask is a bool ``(H, W)`` array of its source image holding one connected component (holes filled, except
6 hole pixels of the horse, which is used as shipped).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = ["coco_sized_masks", "real_silhouettes"]


def _components(mask: np.ndarray, open_radius: int, min_area: int, max_count: int) -> list[np.ndarray]:
    from scipy import ndimage
    from skimage import morphology

    if open_radius:
        mask = morphology.opening(mask, morphology.disk(open_radius))
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    order = np.argsort(-sizes, kind="stable")[:max_count]
    return [labels == i + 1 for i in order if sizes[i] >= min_area]


@functools.lru_cache(maxsize=1)
def real_silhouettes() -> dict[str, tuple[np.ndarray, ...]]:
    """The silhouettes listed in the module docstring, by source (cached; ~0.5 s on first call).

    Returns:
        ``{source: (mask, ...)}`` with bool ``(H, W)`` masks. Treat them as read-only (they are shared).
    """
    try:
        from skimage import color, data, filters, segmentation
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("real_silhouettes() needs scikit-image: pip install 'lightning-gpv[test]'") from err

    out: dict[str, list[np.ndarray]] = {"horse": [~data.horse()]}
    camera = data.camera()
    out["camera"] = _components(camera < filters.threshold_otsu(camera), 0, 1000, 1)
    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2
    out["coins"] = _components(segmentation.watershed(filters.sobel(coins), markers) == 2, 0, 500, 50)
    h, s, v = np.moveaxis(color.rgb2hsv(data.astronaut()), -1, 0)
    suit = ((h < 0.08) | (h > 0.95)) & (s > 0.5) & (v > 0.4)
    out["astronaut"] = _components(suit, 3, 1000, 1) + _components(v < 0.15, 3, 1000, 1)
    _, s, v = np.moveaxis(color.rgb2hsv(data.coffee()), -1, 0)
    out["coffee"] = _components((s < 0.25) & (v > 0.7), 2, 1000, 1)
    out["chelsea"] = _components(color.rgb2hsv(data.chelsea())[..., 2] < 0.12, 1, 100, 2)
    _, s, v = np.moveaxis(color.rgb2hsv(data.rocket()), -1, 0)
    out["rocket"] = _components((s < 0.25) & (v > 0.6), 1, 300, 1)
    clock = data.clock()
    out["clock"] = _components(clock > filters.threshold_otsu(clock), 2, 300, 1)
    text = data.text()
    out["text"] = _components(text < filters.threshold_otsu(text), 0, 150, 30)
    stain = color.rgb2hed(data.immunohistochemistry())[..., 0]
    out["ihc"] = _components(stain > filters.threshold_otsu(stain), 2, 300, 12)
    for masks in out.values():
        for m in masks:
            m.setflags(write=False)
    return {name: tuple(masks) for name, masks in out.items()}


def coco_sized_masks(count: int, seed: int = 0, height: int = 480, width: int = 640) -> list[np.ndarray]:
    """COCO-like object masks: the real silhouettes, resized to a longest side of 50-300 px, in 640x480
    images.

    Args:
        count: number of masks (the silhouettes are cycled).
        seed: seed of the sizes and positions.
        height: image height.
        width: image width.

    Returns:
        ``count`` bool ``(height, width)`` masks.
    """
    sources = [m for masks in real_silhouettes().values() for m in masks]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        x, y, w, h = cv2.boundingRect(src.view(np.uint8))
        crop = src[y : y + h, x : x + w].astype(np.float32)
        scale = rng.uniform(50, 300) / max(h, w)
        new_w = min(width, max(1, round(w * scale)))
        new_h = min(height, max(1, round(h * scale)))
        obj = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_LINEAR) > 0.5
        canvas = np.zeros((height, width), dtype=bool)
        top, left = rng.integers(0, height - new_h + 1), rng.integers(0, width - new_w + 1)
        canvas[top : top + new_h, left : left + new_w] = obj
        out.append(canvas)
    return out
