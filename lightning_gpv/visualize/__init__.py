"""Draw boxes, masks, points and text over images with PIL, for notebooks, the demo and ``predict``.

Geometry follows the package conventions (:mod:`lightning_gpv.tasks.samples`): boxes are ``(k, 4)`` absolute
``xyxy`` pixels, points ``(k, 2)`` ``(x, y)`` pixels, pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``.
A mask is given as one of:

* a bool (or 0/1 integer) ``(H, W)`` array or CPU tensor of the image's size;
* a :class:`~lightning_gpv.geometry.masks.Mask` (polygons or RLE of the same ``H x W``);
* a polygon: a float ``(K, 2)`` array of ``(x, y)`` vertices;
* a list of polygons (each ``(K, 2)`` or flat ``[x0, y0, x1, y1, ...]``), whose union is the mask.

Polygons are filled with the COCO rasteriser (:func:`~lightning_gpv.geometry.masks.polygons_to_mask`, the
pixels a metric would count) and outlined with vector lines through their vertices. Everything returns a new
RGB :class:`PIL.Image.Image` (``scale`` enlarges it with nearest-neighbour sampling first, so small images
and pixel staircases stay readable); Jupyter displays those inline.

Example::

    from lightning_gpv.visualize import draw_prediction, save_image

    picture = draw_prediction(image, boxes=[[10, 20, 60, 90]], scores=[0.93], text="a red circle", scale=2)
    save_image(picture, "outputs/pred_0001.png")
"""

from lightning_gpv.visualize.drawing import (
    PALETTE,
    TARGET_COLOR,
    Color,
    Mark,
    draw_prediction,
    make_grid,
    mask_to_image,
    save_image,
    to_rgb,
)
from lightning_gpv.visualize.samples import draw_prediction_for, draw_sample

__all__ = [
    "PALETTE",
    "TARGET_COLOR",
    "Color",
    "Mark",
    "draw_prediction",
    "draw_prediction_for",
    "draw_sample",
    "make_grid",
    "mask_to_image",
    "save_image",
    "to_rgb",
]
