"""Geometry-consistent image transforms: whatever moves the pixels moves the boxes, masks and points too.

Everything works on :class:`ImageTargets` (an ``(H, W, 3)`` uint8 image with its ``(k, 4)`` float32 ``xyxy``
boxes, ``(m, H, W)`` bool masks and ``(p, 2)`` float32 points, all in the pixels of that image, COCO's
pixel-corner convention: the image spans ``[0, W] x [0, H]``). Functions are pure: they return a new
:class:`ImageTargets` and never modify their input. Models' processors call them; the two recipes of the
papers are:

* :func:`gpv1_resize`: GPV-1's 480 x 640 (H x W) resize, aspect ratio not preserved, anti-aliased;
* :func:`eva_preprocess`: VistaLLM's 224 EVA-CLIP input, ``expand2square`` padding with the CLIP mean colour
  (Shikra/VistaLLM), or a plain squash (LAVIS eval) or shorter-side resize + centre crop (open_clip).

Then :func:`to_tensor` normalises with :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD` (GPV-1) or
:data:`CLIP_MEAN`/:data:`CLIP_STD` (EVA). Flips and crops exist for augmentation of *box and mask* tasks only
through these functions, which move the targets with the pixels; a crop may cut targets (their boxes are
clipped, possibly to zero area).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.samples import TaskSample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Interpolation = Literal["nearest", "bilinear", "bicubic"]
_PIL = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass(frozen=True)
class ImageTargets:
    """An image and the geometric targets that live in its pixels.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(k, 4)`` float32 ``xyxy`` pixels.
        masks: ``(m, H, W)`` bool.
        points: ``(p, 2)`` float32 ``(x, y)`` pixels.
    """

    image: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    masks: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        points = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
        masks = np.zeros((0, h, w), bool) if self.masks is None else np.asarray(self.masks, dtype=bool)
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"masks must be (m, {h}, {w}), got {masks.shape}")
        object.__setattr__(self, "image", img)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "points", points)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def targets_of(sample: TaskSample, index: int = 0, image: np.ndarray | None = None) -> ImageTargets:
    """Image ``index`` of a sample with its boxes, masks and points (decodes the image unless given).

    Boxes and masks are those whose ``box_image``/``mask_image`` is ``index``; masks are rasterised at the
    image size. Points are the target points (all of them: points carry no image index).
    """
    img = load_image(sample.images[index]) if image is None else load_image(image)
    h, w = img.shape[:2]
    t = sample.target
    boxes = t.boxes[t.box_image == index]
    masks = [m for m, k in zip(t.masks, t.mask_image) if k == index]
    for m in masks:
        if (m.height, m.width) != (h, w):
            raise ValueError(
                f"sample {sample.sample_id!r}: mask is {m.height}x{m.width}, image {index} is {h}x{w}"
            )
    arr = np.stack([m.to_array() for m in masks]) if masks else np.zeros((0, h, w), bool)
    return ImageTargets(img, boxes, arr, t.points)


def resize(
    x: ImageTargets, height: int, width: int, interpolation: Interpolation = "bilinear"
) -> ImageTargets:
    """Resize to ``height x width`` (aspect ratio not kept). PIL filters, anti-aliased when shrinking.

    Boxes and points scale by ``width / W`` and ``height / H`` (exact in pixel-corner coordinates); masks use
    centre-aligned nearest neighbour, so a mask and its box stay within one pixel of each other.
    """
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {height}x{width}")
    sx, sy = width / x.width, height / x.height
    image = np.asarray(Image.fromarray(x.image).resize((width, height), _PIL[interpolation]))
    rows = np.minimum(((np.arange(height) + 0.5) / sy).astype(np.int64), x.height - 1)
    cols = np.minimum(((np.arange(width) + 0.5) / sx).astype(np.int64), x.width - 1)
    masks = x.masks[:, rows][:, :, cols]
    scale = np.array([sx, sy, sx, sy], dtype=np.float32)
    return ImageTargets(image, x.boxes * scale, masks, x.points * scale[:2])


def hflip(x: ImageTargets) -> ImageTargets:
    """Mirror left-right; ``x0' = W - x1``, ``x1' = W - x0``, points ``x' = W - x``."""
    w = float(x.width)
    boxes = x.boxes.copy()
    boxes[:, [0, 2]] = w - x.boxes[:, [2, 0]]
    points = x.points.copy()
    points[:, 0] = w - points[:, 0]
    return ImageTargets(
        np.ascontiguousarray(x.image[:, ::-1]), boxes, np.ascontiguousarray(x.masks[:, :, ::-1]), points
    )


def crop(x: ImageTargets, box: np.ndarray | tuple[float, float, float, float]) -> ImageTargets:
    """Crop to the integer pixel window covering ``box`` (``xyxy``; floor/ceil, clipped to the image).

    Boxes and points shift by the window's corner; boxes are clipped to the window (possibly to zero area).
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    c1, r1 = min(x.width, int(np.ceil(x1))), min(x.height, int(np.ceil(y1)))
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"crop box {[x0, y0, x1, y1]} is empty inside the {x.height}x{x.width} image")
    off = np.array([c0, r0, c0, r0], dtype=np.float32)
    boxes = x.boxes - off
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, c1 - c0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, r1 - r0)
    return ImageTargets(
        np.ascontiguousarray(x.image[r0:r1, c0:c1]),
        boxes,
        np.ascontiguousarray(x.masks[:, r0:r1, c0:c1]),
        x.points - off[:2],
    )


def pad(
    x: ImageTargets, top: int, left: int, height: int, width: int, fill: tuple[int, int, int]
) -> ImageTargets:
    """Paste the image at ``(top, left)`` of a ``height x width`` canvas of colour ``fill``; targets shift."""
    if top < 0 or left < 0 or top + x.height > height or left + x.width > width:
        raise ValueError(f"a {x.height}x{x.width} image at ({top}, {left}) does not fit in {height}x{width}")
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.asarray(fill, dtype=np.uint8)
    image[top : top + x.height, left : left + x.width] = x.image
    masks = np.zeros((len(x.masks), height, width), bool)
    masks[:, top : top + x.height, left : left + x.width] = x.masks
    off = np.array([left, top, left, top], dtype=np.float32)
    return ImageTargets(image, x.boxes + off, masks, x.points + off[:2])


def expand2square(x: ImageTargets, fill: tuple[int, int, int] | None = None) -> ImageTargets:
    """Pad the shorter side so the image is square and centred (Shikra/VistaLLM); fill = CLIP mean colour."""
    side = max(x.height, x.width)
    colour = fill if fill is not None else tuple(int(round(255 * m)) for m in CLIP_MEAN)
    return pad(x, (side - x.height) // 2, (side - x.width) // 2, side, side, colour)  # type: ignore[arg-type]


def center_crop(x: ImageTargets, height: int, width: int) -> ImageTargets:
    """Crop the central ``height x width`` window (torchvision's rounding)."""
    top = int(round((x.height - height) / 2.0))
    left = int(round((x.width - width) / 2.0))
    return crop(x, (left, top, left + width, top + height))


def resize_shorter(x: ImageTargets, size: int, interpolation: Interpolation = "bicubic") -> ImageTargets:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (torchvision ``Resize(int)``)."""
    if x.height <= x.width:
        return resize(x, size, int(size * x.width / x.height), interpolation)
    return resize(x, int(size * x.height / x.width), size, interpolation)


GPV1_SIZE = (480, 640)
"""GPV-1's training and evaluation input size ``(H, W)``."""


def gpv1_resize(x: ImageTargets) -> ImageTargets:
    """GPV-1: resize to 480 x 640 (H x W), aspect ratio not preserved, anti-aliased (skimage originally)."""
    return resize(x, *GPV1_SIZE, interpolation="bilinear")


def gpv1_classification_crop(x: ImageTargets, region: np.ndarray) -> ImageTargets:
    """GPV-1 classification input: crop the (already 20%-grown) ``region`` and resize it to 480 x 640."""
    return gpv1_resize(crop(x, region))


def eva_preprocess(
    x: ImageTargets,
    size: int = 224,
    mode: Literal["expand2square", "squash", "center_crop"] = "expand2square",
) -> ImageTargets:
    """VistaLLM's EVA-CLIP input geometry, ``size x size``, bicubic.

    ``expand2square`` (VistaLLM/Shikra: pad to a square with the CLIP mean colour, then resize; keeps every
    target), ``squash`` (LAVIS eval ``Resize((224, 224))``) or ``center_crop`` (open_clip: shorter side to
    ``size`` then centre crop; may cut targets).
    """
    if mode == "expand2square":
        return resize(expand2square(x), size, size, "bicubic")
    if mode == "squash":
        return resize(x, size, size, "bicubic")
    if mode == "center_crop":
        return center_crop(resize_shorter(x, size, "bicubic"), size, size)
    raise ValueError(f"mode must be 'expand2square', 'squash' or 'center_crop', got {mode!r}")


def to_tensor(
    image: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32, scaled to [0, 1] then normalised per channel."""
    arr = np.ascontiguousarray(image)
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        arr = arr.copy()
    scale = torch.tensor(std, dtype=torch.float32) * 255.0
    shift = torch.tensor(mean, dtype=torch.float32) * 255.0
    t = torch.from_numpy(arr).float().sub_(shift).div_(scale)  # (H, W, 3): channels broadcast last
    return t.permute(2, 0, 1).contiguous()


def normalized_boxes(x: ImageTargets) -> np.ndarray:
    """The boxes divided by the image width and height: ``(k, 4)`` float32, in [0, 1] inside the image."""
    return x.boxes / np.array([x.width, x.height, x.width, x.height], dtype=np.float32)


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "GPV1_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTargets",
    "center_crop",
    "crop",
    "eva_preprocess",
    "expand2square",
    "gpv1_classification_crop",
    "gpv1_resize",
    "hflip",
    "normalized_boxes",
    "pad",
    "resize",
    "resize_shorter",
    "targets_of",
    "to_tensor",
]
