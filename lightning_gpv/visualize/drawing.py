"""Drawing primitives: boxes, masks, points and text over one image, grids of pictures, saving.

See :mod:`lightning_gpv.visualize` for the geometry conventions and the accepted mask forms.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lightning_gpv.geometry.masks import Mask, polygons_to_mask
from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.processing import to_rgb as pil_to_rgb
from lightning_gpv.tasks.samples import ImageRef

Color = tuple[int, int, int]
PALETTE: tuple[Color, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
"""Instance colours (matplotlib's tab10): box ``i``, mask ``i`` and label ``i`` share ``PALETTE[i % 10]``."""
TARGET_COLOR: Color = (0, 230, 0)
"""Colour of ground-truth geometry drawn next to a prediction (dashed boxes, mask outlines)."""
_POINT_COLOR: Color = (255, 230, 0)
_REGION_COLOR: Color = (255, 255, 255)
_BAR_COLOR: Color = (245, 245, 245)

MaskInput = np.ndarray | Mask | Sequence[Any]


def to_rgb(image: ImageRef | Image.Image) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array of anything a picture is drawn from.

    Files are decoded by :func:`~lightning_gpv.tasks.processing.load_image` (the processors' decoder).
    Arrays may be gray ``(H, W)``, RGBA, channels-first ``(3, H, W)`` (a CPU tensor works too), bool, or
    float in ``[0, 1]`` (scaled by 255; other floats are rounded and clipped to 0..255).
    """
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):  # any mode: 16-bit, palette with transparency, CMYK, ...
        return pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (3, 4):  # (C, H, W) tensor layout
        arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


def mask_to_image(
    mask: np.ndarray, foreground: Color = (190, 190, 190), background: Color = (255, 255, 255)
) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of a bool mask (light gray on white by default)."""
    m = np.asarray(mask).astype(bool)
    out = np.empty((*m.shape, 3), dtype=np.uint8)
    out[:] = background
    out[m] = foreground
    return out


def _is_color(value: Any) -> bool:
    return len(value) == 3 and all(isinstance(v, (int, np.integer)) for v in value)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        length = float(font.getlength(paragraph))
        if length <= width:
            lines.append(paragraph)
            continue
        avg = max(length / max(len(paragraph), 1), 1.0)
        lines.extend(textwrap.wrap(paragraph, max(int(width / avg), 1)) or [""])
    return lines


def _split_masks(mask: MaskInput, height: int, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(bool (H, W) raster, [(K, 2) polygons to outline])`` of one mask input."""
    if isinstance(mask, Mask):
        if (mask.height, mask.width) != (height, width):
            raise ValueError(f"Mask of {mask.height}x{mask.width} drawn on a {height}x{width} image")
        polys = list(mask.polygons) if mask.polygons is not None else []
        return mask.to_array(), polys
    # Arrays and tensors (anything with __array__ that is not a plain list of polygons).
    arr = np.asarray(mask) if hasattr(mask, "__array__") and not isinstance(mask, (list, tuple)) else None
    if arr is not None and arr.ndim == 2 and (arr.dtype == bool or arr.shape == (height, width)):
        if arr.shape != (height, width):
            raise ValueError(f"a {arr.shape} mask drawn on a {height}x{width} image")
        return arr.astype(bool), []
    if arr is not None and arr.ndim == 2 and arr.shape[1] == 2:
        polys = [arr.astype(np.float64)]
    else:
        polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in mask]  # type: ignore[union-attr]
    return polygons_to_mask(polys, height, width), polys


def _resize_bool(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[::-1] == size:
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)).astype(bool)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour in the background (image borders count as background)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


class _Canvas:
    """An enlarged RGB copy of the image and the mapping of pixel coordinates onto it."""

    def __init__(self, image: np.ndarray, scale: float, line_width: int, font_size: int | None) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.height, self.width = image.shape[:2]
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        self.sx, self.sy = size[0] / self.width, size[1] / self.height
        self.pixels = np.array(Image.fromarray(image).resize(size, Image.NEAREST))
        self.line_width = line_width
        self.font = _font(font_size or int(min(max(size[0] // 28, 10), 18)))
        self._draw: ImageDraw.ImageDraw | None = None
        self._image: Image.Image | None = None

    def xy(self, points: np.ndarray) -> list[tuple[float, float]]:
        # Point (x, y) in pixel-corner coordinates; PIL puts pixel centres at integers, hence the -0.5.
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return [(x * self.sx - 0.5, y * self.sy - 0.5) for x, y in p]

    def fill(self, mask: np.ndarray, color: Color, alpha: float, outline: bool = True) -> None:
        if self._image is not None:  # lines were drawn already: continue from them
            self.pixels, self._image, self._draw = np.array(self._image), None, None
        big = _resize_bool(mask, (self.pixels.shape[1], self.pixels.shape[0]))
        if alpha > 0:
            blend = self.pixels[big].astype(np.float32) * (1 - alpha) + np.float32(color) * alpha
            self.pixels[big] = blend.round().astype(np.uint8)
        if outline:
            self.pixels[_boundary(big)] = color

    @property
    def draw(self) -> ImageDraw.ImageDraw:
        if self._draw is None:
            self._image = Image.fromarray(self.pixels)
            self._draw = ImageDraw.Draw(self._image)
        return self._draw

    def image(self) -> Image.Image:
        if self._image is None:
            self._image = Image.fromarray(self.pixels)
        return self._image

    def box(self, box: np.ndarray, color: Color, dashed: bool = False) -> tuple[float, float]:
        x0, y0, x1, y1 = (float(v) for v in box)
        left, top = x0 * self.sx, y0 * self.sy
        right, bottom = max(x1 * self.sx - 1, left), max(y1 * self.sy - 1, top)
        if not dashed:
            self.draw.rectangle([left, top, right, bottom], outline=color, width=self.line_width)
        else:
            corners = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
            for a, b in zip(corners[:-1], corners[1:]):
                self._dashed(a, b, color)
        return left, top

    def _dashed(
        self, a: tuple[float, float], b: tuple[float, float], color: Color, dash: float = 6.0
    ) -> None:
        length = math.hypot(b[0] - a[0], b[1] - a[1])
        steps = max(int(length // dash), 1)
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min((i + 1) / steps, 1.0)
            p = (a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0)
            q = (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)
            self.draw.line([p, q], fill=color, width=self.line_width)

    def polygon(self, poly: np.ndarray, color: Color) -> None:
        pts = self.xy(poly)
        if len(pts) >= 2:
            self.draw.line([*pts, pts[0]], fill=color, width=self.line_width, joint="curve")

    def points(
        self, points: np.ndarray, color: Color | Sequence[Color], radius: float | Sequence[float]
    ) -> None:
        xy = self.xy(points)
        colors = [color] * len(xy) if _is_color(color) else list(color)
        radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(xy),))
        if len(colors) != len(xy):
            raise ValueError(f"{len(colors)} point colours for {len(xy)} points")
        for (x, y), c, r in zip(xy, colors, radii):
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=c, outline=(0, 0, 0))

    def cross(self, point: np.ndarray, color: Color, radius: float) -> None:
        (x, y) = self.xy(point)[0]
        for dx, dy in ((radius, radius), (radius, -radius)):
            self.draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=color, width=self.line_width + 1)

    def label(self, xy: tuple[float, float], text: str, color: Color) -> None:
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        w, h = right - left + 4, bottom - top + 4
        x = min(max(xy[0], 0), max(self.pixels.shape[1] - w, 0))
        y = xy[1] - h if xy[1] - h >= 0 else xy[1]
        self.draw.rectangle([x, y, x + w, y + h], fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        self.draw.text((x + 2 - left, y + 2 - top), text, fill=ink, font=self.font)


def _with_bars(
    image: Image.Image, title: str | None, text: str | None, font: Any, border: Color | None
) -> Image.Image:
    if border is not None:
        framed = Image.new("RGB", (image.width + 8, image.height + 8), border)
        framed.paste(image, (4, 4))
        image = framed
    if not title and not text:
        return image
    line_h = int(font.getbbox("Ag")[3] - font.getbbox("Ag")[1]) + 4
    top = _wrap(title, font, image.width - 8) if title else []
    bottom = _wrap(text, font, image.width - 8) if text else []
    top_h = len(top) * line_h + (6 if top else 0)
    bottom_h = len(bottom) * line_h + (6 if bottom else 0)
    out = Image.new("RGB", (image.width, image.height + top_h + bottom_h), _BAR_COLOR)
    out.paste(image, (0, top_h))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(top):
        draw.text((4, 3 + i * line_h), line, fill=(0, 0, 0), font=font)
    for i, line in enumerate(bottom):
        draw.text((4, top_h + image.height + 3 + i * line_h), line, fill=(0, 0, 0), font=font)
    return out


def _top_k(
    boxes: np.ndarray, scores: np.ndarray | None, threshold: float | None, max_boxes: int | None
) -> np.ndarray:
    order = np.arange(len(boxes))
    if scores is not None:
        order = np.argsort(-scores, kind="stable")
        if threshold is not None:
            order = order[scores[order] >= threshold]
    if max_boxes is not None:
        order = order[:max_boxes]
    return order


Mark = tuple[str, Any]
"""Extra geometry drawn over the prediction: ``("region", box)``, ``("point", xy)`` (the sample's input)
or ``("target_box", box)``, ``("target_mask", mask)``, ``("target_points", points)`` (the ground truth)."""


def _draw_marks(canvas: _Canvas, marks: Sequence[Mark]) -> None:
    width = canvas.line_width
    for kind, value in marks:
        if kind == "region":
            canvas.box(np.asarray(value), _REGION_COLOR, dashed=True)
        elif kind == "point":
            canvas.cross(np.asarray(value), _REGION_COLOR, 3.0 + width)
        elif kind == "target_box":
            canvas.box(np.asarray(value), TARGET_COLOR, dashed=True)
        elif kind == "target_mask":
            raster, polys = _split_masks(value, canvas.height, canvas.width)
            for poly in polys:
                canvas.polygon(poly, TARGET_COLOR)
            if not polys:
                canvas.fill(raster, TARGET_COLOR, 0.0, outline=True)
        elif kind == "target_points":
            canvas.points(np.asarray(value), TARGET_COLOR, max(2.0, width + 1.0))
        else:
            raise ValueError(f"unknown mark {kind!r}")


def draw_prediction(
    image: np.ndarray | Image.Image,
    boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    scores: np.ndarray | Sequence[float] | None = None,
    masks: Sequence[MaskInput] | None = None,
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
    text: str | None = None,
    title: str | None = None,
    *,
    labels: Sequence[str] | None = None,
    scale: float = 1.0,
    score_threshold: float | None = None,
    max_boxes: int | None = None,
    colors: Sequence[Color] | None = None,
    mask_alpha: float = 0.45,
    point_color: Color | Sequence[Color] = _POINT_COLOR,
    point_radius: float | Sequence[float] | None = None,
    line_width: int = 2,
    font_size: int | None = None,
    border: Color | None = None,
    marks: Sequence[Mark] = (),
) -> Image.Image:
    """Draw one image with boxes, masks, points, a caption and a title.

    Args:
        image: ``(H, W, 3)`` uint8 RGB array (gray, RGBA, float in [0, 1] and PIL images are converted).
        boxes: ``(k, 4)`` absolute ``xyxy`` pixels, drawn in ``PALETTE`` order (box ``i`` in colour ``i``).
        scores: ``(k,)`` box scores: printed on the boxes, and used to rank them for ``score_threshold`` and
            ``max_boxes`` (the colours follow the rank).
        masks: masks in any of the forms of the module docstring; mask ``i`` is filled in colour ``i``.
        points: ``(k, 2)`` ``(x, y)`` pixels, drawn as dots.
        text: caption written in a bar under the image (wrapped), e.g. the answer or the expression.
        title: written in a bar above the image.
        labels: one label per box (e.g. a class name), written with the score.
        scale: enlarge the image (nearest neighbour) before drawing.
        score_threshold: hide boxes scored below it.
        max_boxes: draw at most this many boxes (the best scored when ``scores`` is given).
        colors: instance colours instead of ``PALETTE``.
        mask_alpha: opacity of mask fills (0 draws outlines only).
        point_color: colour of the points, or one colour per point.
        point_radius: dot radius in output pixels, or one per point (default from ``line_width``).
        line_width: width of box and polygon lines in output pixels.
        font_size: label and caption size (default from the output width).
        border: draw a 4-pixel frame of this colour around the image (e.g. a selected image).
        marks: extra geometry drawn last (see :data:`Mark`): dashed white input regions, green targets.

    Returns:
        A new RGB image of size ``scale`` times the input, plus the text bars.
    """
    pixels = to_rgb(image)
    canvas = _Canvas(pixels, scale, line_width, font_size)
    palette = tuple(colors) if colors else PALETTE
    height, width = pixels.shape[:2]
    outlines: list[tuple[np.ndarray, Color]] = []
    for i, mask in enumerate(masks or []):
        raster, polys = _split_masks(mask, height, width)
        color = palette[i % len(palette)]
        canvas.fill(raster, color, mask_alpha, outline=not polys)
        outlines.extend((p, color) for p in polys)
    for poly, color in outlines:
        canvas.polygon(poly, color)
    box_arr = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4)
    score_arr = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if score_arr is not None and len(score_arr) != len(box_arr):
        raise ValueError(f"{len(score_arr)} scores for {len(box_arr)} boxes")
    if labels is not None and len(labels) != len(box_arr):
        raise ValueError(f"{len(labels)} labels for {len(box_arr)} boxes")
    order = _top_k(box_arr, score_arr, score_threshold, max_boxes)
    corners = []
    for rank, i in enumerate(order):
        color = palette[rank % len(palette)]
        corners.append((canvas.box(box_arr[i], color), i, color))
    _draw_marks(canvas, marks)
    if points is not None and np.asarray(points).size:
        radius = max(2.0, line_width + 1.0) if point_radius is None else point_radius
        canvas.points(np.asarray(points), point_color, radius)
    for corner, i, color in corners:
        parts = [labels[i]] if labels is not None else []
        if score_arr is not None:
            parts.append(f"{score_arr[i]:.2f}")
        if parts:
            canvas.label(corner, " ".join(parts), color)
    return _with_bars(canvas.image(), title, text, canvas.font, border)


def make_grid(
    images: Sequence[Image.Image | np.ndarray],
    cols: int | None = None,
    pad: int = 4,
    background: Color = (255, 255, 255),
) -> Image.Image:
    """Tile images row by row into one picture (cells as large as the largest image, top-left aligned).

    Args:
        images: PIL images or arrays (converted with :func:`to_rgb`).
        cols: images per row (default ``ceil(sqrt(n))``).
        pad: gap between cells and around the grid, in pixels.
        background: colour of the gaps.
    """
    pictures = [Image.fromarray(to_rgb(im)) for im in images]
    if not pictures:
        raise ValueError("make_grid needs at least one image")
    cols = max(1, min(cols or math.ceil(math.sqrt(len(pictures))), len(pictures)))
    rows = math.ceil(len(pictures) / cols)
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    grid = Image.new("RGB", (cols * cell_w + (cols + 1) * pad, rows * cell_h + (rows + 1) * pad), background)
    for k, picture in enumerate(pictures):
        r, c = divmod(k, cols)
        grid.paste(picture, (pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    return grid


def save_image(image: Image.Image | np.ndarray, path: str | Path) -> Path:
    """Save a picture (format from the suffix, e.g. ``.png``), creating parent folders; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = image if isinstance(image, Image.Image) else Image.fromarray(to_rgb(image))
    picture.save(out)
    return out
