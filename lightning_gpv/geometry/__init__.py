"""Geometry of targets: box formats, masks, polygons, COCO RLE and contour point sampling.

All coordinates are ``(x, y)`` pixels with pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)`` (COCO);
see :mod:`lightning_gpv.geometry.masks` and :mod:`lightning_gpv.geometry.contours`.
"""

from lightning_gpv.geometry.boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    denormalize_boxes,
    expand_box,
    generalized_box_iou,
    normalize_boxes,
)
from lightning_gpv.geometry.contours import (
    DEFAULT_NUM_DENSE,
    SamplingMethod,
    angle_scores,
    resample_closed,
    sample_contour,
    sample_contours,
    sample_polygon,
)
from lightning_gpv.geometry.masks import (
    Mask,
    Polygon,
    box_of_mask,
    mask_iou,
    mask_to_polygons,
    mask_to_rle,
    polygon_to_mask,
    polygons_to_mask,
    polygons_to_rle,
    rle_to_mask,
)
from lightning_gpv.geometry.outlines import largest_outline, mask_outlines
from lightning_gpv.geometry.upper_bound import contour_iou, contour_upper_bound

__all__ = [
    "DEFAULT_NUM_DENSE",
    "Mask",
    "Polygon",
    "SamplingMethod",
    "angle_scores",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "denormalize_boxes",
    "expand_box",
    "generalized_box_iou",
    "normalize_boxes",
    "box_of_mask",
    "contour_iou",
    "contour_upper_bound",
    "largest_outline",
    "mask_iou",
    "mask_outlines",
    "mask_to_polygons",
    "mask_to_rle",
    "polygon_to_mask",
    "polygons_to_mask",
    "polygons_to_rle",
    "resample_closed",
    "rle_to_mask",
    "sample_contour",
    "sample_contours",
    "sample_polygon",
]
