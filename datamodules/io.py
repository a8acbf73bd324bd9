"""Reading annotation files and fields with errors that name the file and the field.

Every helper raises :class:`~datamodules.errors.DataFormatError`; nothing here writes anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from datamodules.errors import DataFormatError
from lightning_gpv.geometry.masks import Mask

T = TypeVar("T")

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}


def read_json(path: str | Path, expect: type = dict) -> Any:
    """Parse a JSON file whose top level is ``expect`` (``dict`` or ``list``).

    Raises:
        DataFormatError: The file is missing, unreadable, not valid JSON (e.g. truncated; the message gives
            the line and column) or its top level has the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "annotation file not found")
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            path, None, f"malformed or truncated JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataFormatError(path, None, f"cannot read file: {err}") from err
    if not isinstance(data, expect):
        raise DataFormatError(
            path,
            None,
            f"top level must be {_TYPE_NAMES.get(expect, expect.__name__)}, got {type(data).__name__}",
        )
    return data


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataFormatError]]:
    """Yield ``(line_number, record)`` of a JSON-lines file; a bad line yields a :class:`DataFormatError`.

    Blank lines are ignored. The caller decides whether a bad line raises or is skipped.

    Raises:
        DataFormatError: The file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "annotation file not found")
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as err:
        raise DataFormatError(path, None, f"cannot read file: {err}") from err
    with fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    yield (
                        lineno,
                        DataFormatError(path, f"line {lineno}", f"malformed or truncated JSON: {err.msg}"),
                    )
                    continue
                if not isinstance(obj, dict):
                    yield lineno, DataFormatError(path, f"line {lineno}", "each line must be a JSON object")
                    continue
                yield lineno, obj
        except UnicodeDecodeError as err:
            raise DataFormatError(path, None, f"not UTF-8 text: {err}") from err


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_new_id(
    first: dict[int, int], value: int, path: str | Path, where: str, what: str, key: str = "id"
) -> None:
    """Raise if the ``what`` (``"image id"``) ``value`` was already seen: ``first`` maps ids to the index of
    their first record, ``where`` is ``"<list>[<index>]"``; the error names ``where.key`` and the first
    record."""
    if value in first:
        listing = where.split("[", 1)[0]
        first_at = f"{listing}[{first[value]}]"
        raise DataFormatError(path, f"{where}.{key}", f"duplicate {what} {value} (first at {first_at})")


def field(obj: Any, key: str, typ: type | tuple[type, ...], path: str | Path, where: str) -> Any:
    """``obj[key]`` checked to be of ``typ`` (``bool`` never passes for ``int``/``float``).

    Args:
        obj: The JSON object holding the field.
        key: The field name.
        typ: Accepted Python type(s); ``float`` also accepts ``int``. An ``int`` must fit 64 bits (ids
            become int64 arrays).
        path: The file, for the error message.
        where: The location of ``obj`` in the file, e.g. ``"annotations[3]"``.
    """
    name = f"{where}.{key}" if where else key
    if not isinstance(obj, dict):
        raise DataFormatError(path, where or None, f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise DataFormatError(path, name, "missing field")
    value = obj[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types:
        types = (*types, int)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        expected = " or ".join(
            _TYPE_NAMES.get(t, t.__name__) for t in (typ if isinstance(typ, tuple) else (typ,))
        )
        raise DataFormatError(path, name, f"expected {expected}, got {type(value).__name__} {value!r:.60}")
    if type(value) is int and float not in types and not INT64_MIN <= value <= INT64_MAX:
        # ids end up in int64 arrays (grouping, the COCO-SCE partition)
        raise DataFormatError(path, name, f"integer {value!r:.40} is outside the 64-bit range")
    return value


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite32(values: np.ndarray) -> np.ndarray:
    """Elementwise: finite once stored as float32 (the dtype of sample boxes); ``1e300`` is not."""
    with np.errstate(invalid="ignore"):
        return np.abs(values) < _FLOAT32_MAX


def xywh_box(value: Any, path: str | Path, name: str) -> np.ndarray:
    """A COCO ``[x, y, w, h]`` box as a ``(4,)`` float32 ``xyxy`` array, checked finite with w, h > 0.

    A box of zero width or height is refused: it encloses nothing, so it cannot be a localization target
    (see :func:`clip_boxes` for the check against the image).
    """
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 4:
        raise DataFormatError(path, name, f"expected 4 numbers [x, y, w, h], got {value!r:.60}")
    try:
        if not all(isinstance(v, (int, float)) for v in value):  # float("1") would take a string
            raise TypeError("not a number")
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        raise DataFormatError(path, name, f"expected 4 numbers [x, y, w, h], got {value!r:.60}") from None
    if not _finite32(np.array([x, y, x + w, y + h])).all() or w <= 0 or h <= 0:
        raise DataFormatError(path, name, f"invalid box {value!r:.60} (needs finite values and w, h > 0)")
    return np.array([x, y, x + w, y + h], dtype=np.float32)


MAX_IMAGE_SIDE = 65535
"""The largest image height or width a reader accepts: ``pycocotools`` indexes RLE pixels with 32-bit
integers (``H * W`` must fit) and rasterises polygons at 5x in ``int``."""


def image_size(height: Any, width: Any, path: str | Path, where: str) -> tuple[int, int]:
    """``(height, width)`` of an ``images[]`` entry, checked to be integers in ``1..MAX_IMAGE_SIDE``."""
    for key, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataFormatError(path, f"{where}.{key}", f"expected an integer, got {value!r:.60}")
        if not 1 <= value <= MAX_IMAGE_SIDE:
            raise DataFormatError(
                path, f"{where}.{key}", f"image {key} must be in 1..{MAX_IMAGE_SIDE}, got {value}"
            )
    return height, width


def overshoot_tolerance(side: float | np.ndarray) -> float | np.ndarray:
    """How far (pixels) a box or polygon may reach outside an image side of ``side`` pixels and be clipped
    back: ``max(2, 2% of the side)``. Annotation tools leave such slivers (a box ending at ``W + 0.5``); a
    shape farther out is in another frame or belongs to another image, and is refused."""
    return np.maximum(2.0, 0.02 * np.asarray(side, dtype=np.float64))


def clip_boxes(boxes: np.ndarray, height: Any, width: Any) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``(n, 4)`` ``xyxy`` pixel boxes to their images; which ones are acceptable.

    Args:
        boxes: ``(n, 4)`` finite ``xyxy`` boxes in pixels of their image (top-left origin).
        height: The image height ``H``, a scalar or one per box ``(n,)``.
        width: The image width ``W``, a scalar or one per box ``(n,)``.

    Returns:
        ``(n, 4)`` float32 boxes clipped to ``[0, W] x [0, H]``, and ``(n,)`` bool: the box lies inside the
        image up to :func:`overshoot_tolerance` and keeps a positive width and height once clipped.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h = np.broadcast_to(np.asarray(height, dtype=np.float64), (len(b),))
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(b),))
    tol_x, tol_y = overshoot_tolerance(w), overshoot_tolerance(h)
    inside = (b[:, 0] >= -tol_x) & (b[:, 2] <= w + tol_x) & (b[:, 1] >= -tol_y) & (b[:, 3] <= h + tol_y)
    clipped = np.stack(
        [np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h), np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)], 1
    ).astype(np.float32)
    ok = inside & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, ok


def box_in_image(box: np.ndarray, height: int, width: int, path: str | Path, name: str) -> np.ndarray:
    """One ``(4,)`` ``xyxy`` box clipped to its ``H x W`` image (see :func:`clip_boxes`), as float32.

    Raises:
        DataFormatError: The box reaches outside the image beyond the tolerance, or is empty once clipped.
    """
    clipped, ok = clip_boxes(np.asarray(box)[None], height, width)
    if not ok[0]:
        raise DataFormatError(path, name, box_outside_message(box, height, width))
    return clipped[0]


def box_outside_message(box: np.ndarray, height: int, width: int) -> str:
    """The reason :func:`clip_boxes` refuses an ``xyxy`` box of an ``H x W`` image."""
    x0, y0, x1, y1 = (round(float(v), 2) for v in box)
    return f"box [x0, y0, x1, y1] = [{x0}, {y0}, {x1}, {y1}] lies outside the {width}x{height} (WxH) image"


def first_existing(candidates: Sequence[Path], what: str, root: Path) -> Path:
    """The first existing path of ``candidates``, else a :class:`DataFormatError` listing them all."""
    for c in candidates:
        if c.exists():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DataFormatError(root, None, f"{what} not found; looked for: {tried}")


def coco_image_dirs(root: Path, split: str) -> list[Path]:
    """Where a data set built on COCO images may keep those of ``split`` (e.g. ``train2014``).

    ``root/{split}``, ``root/images/{split}`` (the data set's own copy), then the sibling COCO folder:
    ``root/../coco/images/{split}``, ``root/../coco/{split}`` and ``root/../images/{split}`` (ReLA's layout).
    """
    return [
        root / split,
        root / "images" / split,
        root.parent / "coco" / "images" / split,
        root.parent / "coco" / split,
        root.parent / "images" / split,
    ]


def xywh_boxes(
    values: Sequence[Any], path: str | Path, name: Callable[[int], str]
) -> tuple[np.ndarray, dict[int, DataFormatError]]:
    """Many COCO ``[x, y, w, h]`` boxes at once: ``(n, 4)`` float32 ``xyxy`` and the errors of the bad ones.

    The vectorised twin of :func:`xywh_box` for large files; a bad row's error (same message as
    :func:`xywh_box`, field ``name(k)``) is returned under its row index and the row is left NaN.
    """
    n = len(values)
    try:
        # No dtype: numpy would parse strings such as "12" as numbers; only numeric rows take this path.
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuf" or arr.shape != (n, 4):
            raise TypeError("not an (n, 4) numeric table")
        arr = arr.astype(np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged, non-numeric or huge rows: check one by one
        arr = np.full((n, 4), np.nan)
        for k, v in enumerate(values):
            try:
                x, y, x1, y1 = xywh_box(v, path, name(k))
                arr[k] = (x, y, x1 - x, y1 - y)
            except DataFormatError:
                pass
    corners = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:]], axis=1)
    ok = _finite32(corners).all(axis=1) & (arr[:, 2] > 0) & (arr[:, 3] > 0)
    errors: dict[int, DataFormatError] = {}
    for k in np.flatnonzero(~ok).tolist():
        try:
            xywh_box(values[k], path, name(k))
        except DataFormatError as err:
            errors[k] = err
        else:  # pragma: no cover - xywh_box and this check agree
            errors[k] = DataFormatError(path, name(k), f"invalid box {values[k]!r:.60}")
    with np.errstate(over="ignore", invalid="ignore"):  # the bad rows may not fit float32; they are dropped
        out = arr.astype(np.float32)
        out[:, 2:] += out[:, :2]
    return out, errors


def coco_mask(segmentation: Any, height: int, width: int, path: str | Path, name: str) -> Mask:
    """A COCO ``segmentation`` (flat polygons or RLE) of an ``height x width`` image as a :class:`Mask`.

    Readers check segmentations when they read them (:func:`checked_segmentation`) and build the mask in
    ``__getitem__``; a segmentation that still cannot be converted surfaces here as a :class:`DataFormatError`
    naming the annotation file and the field, which ``on_bad_sample="skip"`` skips.
    """
    try:
        return Mask.from_coco(segmentation, height, width)
    except (ValueError, TypeError, KeyError) as err:
        raise DataFormatError(path, name, f"invalid segmentation: {err}") from err


def checked_segmentation(
    segmentation: Any, height: int, width: int, path: str | Path, name: str
) -> list[list[float]] | dict[str, Any]:
    """A COCO ``segmentation`` of an ``H x W`` image, checked to describe a non-empty mask of that image.

    Polygons (``[[x0, y0, x1, y1, ...], ...]``, pixel coordinates of the image, top-left origin):

    * each polygon is a list of numbers of even length, all finite: else a :class:`DataFormatError`
      (field ``name[k]``);
    * every vertex lies in ``[0, W] x [0, H]`` up to :func:`overshoot_tolerance` (farther out is a
      :class:`DataFormatError`) and is clipped to the image;
    * a polygon with fewer than 3 distinct vertices or zero area is dropped (it rasterises to nothing, and
      ``pycocotools`` reads a first polygon of 4 numbers as a box); none left is a :class:`DataFormatError`;
    * the union must cover at least one pixel centre (the COCO rasteriser's rule).

    RLE (``{"size": [H, W], "counts": ...}``, column-major runs starting with zeros): ``size`` must be the
    image's ``[H, W]``; ``counts`` a list of non-negative integers or a COCO-compressed string (decoded here,
    never by ``pycocotools``, whose C decoder reads garbage strings out of bounds) whose runs sum to
    ``H * W``; at least one pixel must be foreground.

    Args:
        segmentation: The annotation's ``segmentation`` as read from the file.
        height: The image height ``H`` (``1..MAX_IMAGE_SIDE``).
        width: The image width ``W``.
        path: The annotation file, for messages.
        name: The field, e.g. ``"annotations[12].segmentation"``.

    Returns:
        The segmentation to use: polygons clipped and without degenerate ones, or the RLE as given.

    Raises:
        DataFormatError: Anything above, naming ``path`` and the field.
    """
    if isinstance(segmentation, dict):
        _check_rle(segmentation, height, width, path, name)
        return dict(segmentation)
    if not isinstance(segmentation, list):
        raise DataFormatError(
            path, name, f"expected polygons [[x0, y0, ...], ...] or an RLE object, got {segmentation!r:.60}"
        )
    polygons = [_checked_polygon(p, height, width, path, f"{name}[{k}]") for k, p in enumerate(segmentation)]
    kept = [p for p in polygons if p is not None]
    if not kept:
        raise DataFormatError(
            path, name, "no polygon with at least 3 distinct vertices and a non-zero area (empty mask)"
        )
    if Mask.from_polygons(kept, height, width).area == 0:
        raise DataFormatError(path, name, "the polygons cover no pixel centre (empty mask)")
    return kept


def _checked_polygon(
    polygon: Any, height: int, width: int, path: str | Path, name: str
) -> list[float] | None:
    """One flat polygon clipped to the image, ``None`` if degenerate; see :func:`checked_segmentation`."""
    if not isinstance(polygon, list) or not all(isinstance(v, (int, float)) for v in polygon):
        raise DataFormatError(
            path, name, f"expected a flat list of numbers [x0, y0, ...], got {polygon!r:.60}"
        )
    if len(polygon) % 2:
        raise DataFormatError(
            path, name, f"a polygon needs an even number of coordinates, got {len(polygon)}"
        )
    try:
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    except OverflowError:  # an integer too large for a float
        xy = np.full((len(polygon) // 2, 2), np.inf)
    if not _finite32(xy).all():
        raise DataFormatError(path, name, "polygon coordinates must be finite")
    tol_x, tol_y = overshoot_tolerance(width), overshoot_tolerance(height)
    outside = (
        (xy[:, 0] < -tol_x) | (xy[:, 0] > width + tol_x) | (xy[:, 1] < -tol_y) | (xy[:, 1] > height + tol_y)
    )
    if outside.any():
        x, y = xy[np.argmax(outside)]
        raise DataFormatError(
            path, name, f"polygon vertex ({x:.6g}, {y:.6g}) lies outside the {width}x{height} (WxH) image"
        )
    xy = np.stack([np.clip(xy[:, 0], 0, width), np.clip(xy[:, 1], 0, height)], 1)
    if len(np.unique(xy, axis=0)) < 3:
        return None
    x, y = xy[:, 0], xy[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) == 0:  # shoelace: collinear vertices
        return None
    return xy.reshape(-1).tolist()


def _check_rle(rle: dict[str, Any], height: int, width: int, path: str | Path, name: str) -> None:
    """Raise unless ``rle`` is a valid, non-empty COCO RLE of an ``H x W`` image; see
    :func:`checked_segmentation`."""
    for key in ("size", "counts"):
        if key not in rle:
            raise DataFormatError(path, f"{name}.{key}", "missing field (an RLE needs 'size' and 'counts')")
    size = rle["size"]
    if not isinstance(size, list) or [type(v) for v in size] != [int, int] or size != [height, width]:
        raise DataFormatError(
            path,
            f"{name}.size",
            f"expected the image's [height, width] = [{height}, {width}], got {size!r:.60}",
        )
    counts = rle["counts"]
    if isinstance(counts, str):
        runs = _decode_rle_string(counts, path, f"{name}.counts")
    elif isinstance(counts, list) and all(type(c) is int and c >= 0 for c in counts):
        runs = counts
    else:
        raise DataFormatError(
            path,
            f"{name}.counts",
            f"expected a COCO-compressed string or a list of non-negative integers, got {counts!r:.60}",
        )
    if sum(runs) != height * width:
        raise DataFormatError(
            path, f"{name}.counts", f"the runs cover {sum(runs)} pixels, not H * W = {height * width}"
        )
    if sum(runs[1::2]) == 0:
        raise DataFormatError(path, f"{name}.counts", "no foreground pixel (empty mask)")


def _decode_rle_string(text: str, path: str | Path, name: str) -> list[int]:
    """The runs of a COCO-compressed RLE string (``pycocotools``' ``rleFrString``, checked).

    Each run is a little-endian group of 5-bit digits, one character each (``chr(48 + digit)``, bit
    ``0x20`` = more digits follow, bit ``0x10`` of the last digit = negative); from the third run on, it is
    a difference to the run two places back.

    Raises:
        DataFormatError: A character outside ``'0'..'o'``, a run cut off at the end of the string, a run of
            more than 7 digits, or a negative run.
    """
    runs: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise DataFormatError(path, name, "compressed RLE string ends inside a run")
            digit = ord(text[pos]) - 48
            if not 0 <= digit < 64:
                raise DataFormatError(
                    path, name, f"invalid character {text[pos]!r} in a compressed RLE string"
                )
            if shift > 30:  # 7 digits (35 bits) hold any run of H * W <= 65535**2; pycocotools shifts an int
                raise DataFormatError(path, name, "a run of a compressed RLE string has too many digits")
            value |= (digit & 0x1F) << shift
            more = bool(digit & 0x20)
            pos += 1
            shift += 5
            if not more and digit & 0x10:
                value -= 1 << shift  # sign-extend the last digit
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise DataFormatError(path, name, f"negative run length {value} in a compressed RLE string")
        runs.append(value)
    return runs
