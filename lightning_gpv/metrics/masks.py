"""Mask inputs of the segmentation metrics: boolean masks, polygons (from the output parser) or ``None``.

Resolution rules (the metrics compare a prediction and its target on one pixel grid):

* both masks: they must have the same ``H x W`` (resize beforehand; :class:`MaskIoU` and friends never
  resample);
* a polygon paired with a mask is rasterized on the mask's grid (polygon coordinates in that grid's
  pixels, or in ``[0, 1]`` when ``normalized=True``);
* two polygons (or a polygon and ``None``) need the metric's ``canvas_size``.

Where the official code rasterizes: ReLA (GRES) compares masks at the test-transform resolution
(``Resize((480, 480))``, ground truth built after the transform); VistaLLM scales normalized 16-point contours
by 1000, truncates them to integers and fills them with ``cv2.drawContours`` on a 1000 x 1000 canvas
(``canvas_size=(1000, 1000), normalized=True, rasterizer="cv2"``); RefCOCO RES masks are usually evaluated at
the original image resolution with COCO polygon rasterization (``rasterizer="coco"``, pycocotools);
MCANet's co-segmentation evaluation resizes images and masks to 321 x 321.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["MaskLike", "Rasterizer", "polygons_to_mask", "to_mask", "mask_pair"]

Polygon = Sequence[float] | Sequence[Sequence[float]] | np.ndarray | Tensor
#: A boolean ``H x W`` tensor/array, a list of polygons (each flat ``[x0, y0, x1, y1, ...]`` or ``(P, 2)``),
#: a single float ``(P, 2)`` tensor/array, or ``None`` (nothing).
MaskLike = Tensor | np.ndarray | Sequence[Polygon] | None
Rasterizer = Literal["coco", "cv2"]


def _is_mask(obj: object) -> bool:
    if isinstance(obj, Tensor):
        return obj.dtype in (torch.bool, torch.uint8) and obj.ndim == 2
    if isinstance(obj, np.ndarray):
        return obj.dtype in (np.bool_, np.uint8) and obj.ndim == 2
    return False


def _polygon_list(obj: MaskLike) -> list[np.ndarray]:
    """Normalize polygon input to a list of ``(P, 2)`` float64 arrays."""
    if isinstance(obj, (Tensor, np.ndarray)):
        arr = np.asarray(obj.detach().cpu() if isinstance(obj, Tensor) else obj, dtype=np.float64)
        if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 2) or arr.size % 2:
            # e.g. an H x W mask of another dtype than bool/uint8: never read it as coordinates.
            raise ValueError(
                f"A polygon must be (P, 2) or flat [x0, y0, ...], got shape {tuple(arr.shape)}; "
                "masks must be bool or uint8 H x W."
            )
        return [arr.reshape(-1, 2)]
    polygons = []
    for poly in obj:  # type: ignore[union-attr]
        arr = np.asarray(poly.detach().cpu() if isinstance(poly, Tensor) else poly, dtype=np.float64)
        polygons.append(arr.reshape(-1, 2))
    return polygons


def polygons_to_mask(
    polygons: Sequence[Polygon],
    height: int,
    width: int,
    normalized: bool = False,
    rasterizer: Rasterizer = "coco",
) -> Tensor:
    """Rasterize the union of polygons into a bool ``(height, width)`` mask.

    ``rasterizer="coco"`` uses pycocotools through :func:`lightning_gpv.geometry.masks.polygons_to_mask`
    (the convention of COCO/RefCOCO ground-truth masks: a pixel is in when its centre is);
    ``"cv2"`` truncates the coordinates to integers and fills the contours with ``cv2.drawContours``
    (VistaLLM). Polygons with fewer than 3 points are ignored.
    """
    scale = np.array([width, height], dtype=np.float64) if normalized else np.ones(2)
    polys = [p * scale for p in _polygon_list(polygons) if p.shape[0] >= 3]
    if not polys:
        return torch.zeros(height, width, dtype=torch.bool)
    if rasterizer == "coco":
        from lightning_gpv.geometry.masks import polygons_to_mask as coco_polygons_to_mask

        return torch.from_numpy(coco_polygons_to_mask(polys, height, width).astype(bool))
    if rasterizer == "cv2":
        import cv2

        canvas = np.zeros((height, width), dtype=np.uint8)
        contours = [p.astype(np.int32).reshape(-1, 1, 2) for p in polys]
        cv2.drawContours(canvas, contours, -1, 1, thickness=-1)
        return torch.from_numpy(canvas.astype(bool))
    raise ValueError(f"Unknown rasterizer {rasterizer!r}.")


def to_mask(
    obj: MaskLike,
    size: tuple[int, int] | None,
    normalized: bool = False,
    rasterizer: Rasterizer = "coco",
) -> Tensor | None:
    """Bool mask for ``obj``: masks are returned as bool tensors, polygons rasterized at ``size`` (H, W)."""
    if obj is None:
        return None
    if _is_mask(obj):
        mask = obj if isinstance(obj, Tensor) else torch.from_numpy(np.asarray(obj))
        return mask.detach().to("cpu").bool()
    if size is None:
        raise ValueError("A polygon needs a grid: pair it with a mask or set the metric's canvas_size.")
    return polygons_to_mask(obj, size[0], size[1], normalized=normalized, rasterizer=rasterizer)  # type: ignore[arg-type]


def mask_pair(
    pred: MaskLike,
    target: MaskLike,
    canvas_size: tuple[int, int] | None = None,
    normalized: bool = False,
    rasterizer: Rasterizer = "coco",
) -> tuple[Tensor | None, Tensor | None]:
    """Bring a prediction and a target to one grid (see the module's resolution rules)."""
    size = canvas_size
    for obj in (target, pred):
        if _is_mask(obj):
            size = tuple(obj.shape)  # type: ignore[union-attr,assignment]
            break
    pred_mask = to_mask(pred, size, normalized, rasterizer)
    target_mask = to_mask(target, size, normalized, rasterizer)
    if pred_mask is not None and target_mask is not None and pred_mask.shape != target_mask.shape:
        raise ValueError(
            f"Prediction {tuple(pred_mask.shape)} and target {tuple(target_mask.shape)} masks differ in "
            "size; resize them to one grid first."
        )
    return pred_mask, target_mask
