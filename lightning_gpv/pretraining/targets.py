"""A seeded ShapesWorld pool with dense per-patch targets, for pretraining a ViT image encoder.

Scenes are sampled and rendered in memory (nothing is written), resized to the encoder's square input the
way the VistaLLM processor resizes images (bicubic, aspect ratio not kept), and annotated on the patch grid:

* ``shape``, ``color``: ``(N, G, G)`` int64 class of the object covering most of each patch (at least
  :data:`MIN_COVER` of it, or the patch it covers most), 0 for background; shapes are ``SHAPES.index + 1``,
  colours ``COLORS`` order + 1;
* ``boxes``: ``(N, G, G, 4)`` float32 visible box of that object, ``(x0, y0, x1, y1)`` as fractions of the
  image width and height (the resize does not change them); zeros on background patches;
* ``fine``: ``(N, G * K, G * K)`` float32 foreground occupancy of ``K x K`` cells per patch (any object).

``G = image_size // patch_size``. Image ``i`` of a pool depends only on ``(seed, i)`` and the style
(:func:`~lightning_gpv.shapesworld.scene.seed_rng` on its own stream), never on the pool size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from lightning_gpv.shapesworld.render import render_scene
from lightning_gpv.shapesworld.sample import SceneStyle, sample_scene
from lightning_gpv.shapesworld.scene import COLORS, SHAPES, STREAMS, seed_rng

MIN_COVER = 0.3
"""Least fraction of a patch an object must cover to label it (else the patch is background)."""
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)


@dataclass
class PatchTargets:
    """Images and their dense targets (see the module docstring for shapes and frames)."""

    images: torch.Tensor  # (N, S, S, 3) uint8
    shape: torch.Tensor  # (N, G, G) int64
    color: torch.Tensor  # (N, G, G) int64
    boxes: torch.Tensor  # (N, G, G, 4) float32, normalised xyxy
    fine: torch.Tensor  # (N, G*K, G*K) float32 in {0, 1}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, index: torch.Tensor) -> PatchTargets:
        """The samples at ``index`` (a 1-D index tensor)."""
        return PatchTargets(*(t[index] for t in (self.images, self.shape, self.color, self.boxes, self.fine)))


def resize_image(image: np.ndarray, side: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 to ``(side, side, 3)`` uint8, bicubic, as the VistaLLM processor resizes."""
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))


def scene_targets(
    image: np.ndarray, masks: Sequence[np.ndarray], shapes: Sequence[int], colors: Sequence[int], *,
    side: int, grid: int, cells: int,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Targets of one rendered scene: ``(image, shape, color, boxes, fine)`` as in :class:`PatchTargets`.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        masks: Visible ``(H, W)`` 0/1 masks, one per object.
        shapes, colors: 1-based class of each object.
        side: Encoder input side in pixels.
        grid: Patches per side.
        cells: Occupancy cells per patch side.
    """
    height, width = image.shape[:2]
    cover = np.zeros((len(masks) + 1, grid, grid), dtype=np.float32)
    cover[0] = MIN_COVER  # background wins unless an object covers at least MIN_COVER
    fine = np.zeros((grid * cells, grid * cells), dtype=np.float32)
    boxes = np.zeros((len(masks) + 1, 4), dtype=np.float32)
    for k, mask in enumerate(masks, start=1):
        cover[k] = cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
        # An object smaller than MIN_COVER of every patch still owns the patch it covers most.
        cover[k].flat[cover[k].argmax()] = max(cover[k].max(), MIN_COVER + 1e-3)
        occupied = cv2.resize(mask.astype(np.float32), (grid * cells,) * 2, interpolation=cv2.INTER_AREA)
        fine = np.maximum(fine, (occupied >= 0.5).astype(np.float32))
        ys, xs = np.nonzero(mask)
        boxes[k] = (xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height)
    owner = cover.argmax(axis=0)
    shape = np.asarray([0, *shapes], dtype=np.int64)[owner]
    color = np.asarray([0, *colors], dtype=np.int64)[owner]
    return resize_image(image, side), shape, color, boxes[owner], fine


def make_pool(
    num_images: int,
    *,
    seed: int,
    styles: Sequence[SceneStyle],
    image_size: int,
    patch_size: int,
    cells: int = 4,
    start: int = 0,
) -> PatchTargets:
    """Render images ``start .. start + num_images - 1`` of the pretraining stream and their targets.

    Image ``i`` uses ``styles[i % len(styles)]`` (a mix of worlds, e.g. the demo's sparse one and the
    full one). A held-out pool is the same call with a ``start`` past the training pool.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    grid = image_size // patch_size
    rows: list[tuple[np.ndarray, ...]] = []
    for i in range(start, start + num_images):
        scene = sample_scene(seed_rng(seed, STREAMS["pretraining"], i), style=styles[i % len(styles)])
        image, _, visible = render_scene(scene)
        shapes = [SHAPES.index(obj.shape) + 1 for obj in scene.objects]
        colors = [COLOR_NAMES.index(obj.color) + 1 for obj in scene.objects]
        rows.append(scene_targets(image, visible, shapes, colors, side=image_size, grid=grid, cells=cells))
    columns = [torch.from_numpy(np.stack(column)) for column in zip(*rows)]
    return PatchTargets(*columns)
