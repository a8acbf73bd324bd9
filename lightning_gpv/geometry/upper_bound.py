"""Upper bound of segmentation through point sequences: IoU of the re-rasterised sampled polygon vs the mask.

A model that outputs masks as ``N`` contour points (VistaLLM) can at best reproduce the polygon through the
points sampled from the ground truth, so the mean IoU of that polygon (rasterised with the COCO rasteriser,
:func:`~lightning_gpv.geometry.masks.polygons_to_mask`) against the mask bounds its mIoU. The VistaLLM paper
reports 94.70 (uniform) and 97.26 (adaptive) on RefCOCO val at 32 points.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lightning_gpv.geometry.contours import DEFAULT_NUM_DENSE, SamplingMethod, sample_contour, sample_contours
from lightning_gpv.geometry.masks import mask_iou, polygons_to_mask

__all__ = ["contour_iou", "contour_upper_bound"]


def contour_iou(
    mask: np.ndarray,
    num_points: int = 32,
    method: SamplingMethod = "adaptive",
    parts: bool = False,
    num_dense: int = DEFAULT_NUM_DENSE,
) -> float:
    """IoU between a mask and the polygon(s) through ``N`` points sampled on its outline (the per-mask bound).

    Args:
        mask: ``(H, W)`` mask.
        num_points: ``N`` points sampled (in total over all parts when ``parts``).
        method: ``"uniform"``, ``"paper"`` or ``"adaptive"``.
        parts: ``False`` samples the largest component only (:func:`sample_contour`); ``True`` samples every
            component (:func:`sample_contours`) and rasterises the union.
        num_dense: ``M`` for ``"paper"``.

    Returns:
        IoU in ``[0, 1]``; an empty mask gives no points, an empty polygon mask, and IoU 1.
    """
    height, width = np.shape(mask)
    if parts:
        polygons = sample_contours(mask, num_points, method, num_dense=num_dense)
    else:
        points = sample_contour(mask, num_points, method, num_dense=num_dense)
        polygons = [points] if len(points) else []
    return mask_iou(polygons_to_mask(polygons, height, width), mask)


def contour_upper_bound(
    masks: Iterable[np.ndarray],
    num_points: int = 32,
    method: SamplingMethod = "adaptive",
    parts: bool = False,
    num_dense: int = DEFAULT_NUM_DENSE,
) -> float:
    """Mean over masks of :func:`contour_iou` (in ``[0, 1]``; multiply by 100 for the usual mIoU figure).

    Args:
        masks: ``(H, W)`` masks, possibly of different sizes.
        num_points: ``N``.
        method: ``"uniform"``, ``"paper"`` or ``"adaptive"``.
        parts: sample every component instead of the largest one (see :func:`contour_iou`).
        num_dense: ``M`` for ``"paper"``.

    Returns:
        The mean IoU.
    """
    ious = [contour_iou(m, num_points, method, parts, num_dense) for m in masks]
    if not ious:
        raise ValueError("contour_upper_bound needs at least one mask")
    return float(np.mean(ious))
