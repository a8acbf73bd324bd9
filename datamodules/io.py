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


def field(obj: Any, key: str, typ: type | tuple[type, ...], path: str | Path, where: str) -> Any:
    """``obj[key]`` checked to be of ``typ`` (``bool`` never passes for ``int``/``float``).

    Args:
        obj: The JSON object holding the field.
        key: The field name.
        typ: Accepted Python type(s); ``float`` also accepts ``int``.
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
    return value


def xywh_box(value: Any, path: str | Path, name: str) -> np.ndarray:
    """A COCO ``[x, y, w, h]`` box as a ``(4,)`` float32 ``xyxy`` array, checked finite with w, h >= 0."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 4:
        raise DataFormatError(path, name, f"expected 4 numbers [x, y, w, h], got {value!r:.60}")
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataFormatError(path, name, f"expected 4 numbers [x, y, w, h], got {value!r:.60}") from None
    if not np.isfinite([x, y, w, h]).all() or w < 0 or h < 0:
        raise DataFormatError(path, name, f"invalid box {value!r:.60} (needs finite values and w, h >= 0)")
    return np.array([x, y, x + w, y + h], dtype=np.float32)


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
        arr = np.asarray(values, dtype=np.float64).reshape(n, 4)
    except (ValueError, TypeError):  # ragged or non-numeric rows: check them one by one
        arr = np.full((n, 4), np.nan)
        for k, v in enumerate(values):
            try:
                x, y, x1, y1 = xywh_box(v, path, name(k))
                arr[k] = (x, y, x1 - x, y1 - y)
            except DataFormatError:
                pass
    ok = np.isfinite(arr).all(axis=1) & (arr[:, 2] >= 0) & (arr[:, 3] >= 0)
    errors: dict[int, DataFormatError] = {}
    for k in np.flatnonzero(~ok).tolist():
        try:
            xywh_box(values[k], path, name(k))
        except DataFormatError as err:
            errors[k] = err
        else:  # pragma: no cover - xywh_box and this check agree
            errors[k] = DataFormatError(path, name(k), f"invalid box {values[k]!r:.60}")
    out = arr.astype(np.float32)
    out[:, 2:] += out[:, :2]
    return out, errors


def coco_mask(segmentation: Any, height: int, width: int, path: str | Path, name: str) -> Mask:
    """A COCO ``segmentation`` (flat polygons or RLE) of an ``height x width`` image as a :class:`Mask`.

    Segmentations are converted lazily (in ``__getitem__``), so a malformed one surfaces there: as a
    :class:`DataFormatError` naming the annotation file and the field, which ``on_bad_sample="skip"`` skips.
    """
    try:
        return Mask.from_coco(segmentation, height, width)
    except (ValueError, TypeError, KeyError) as err:
        raise DataFormatError(path, name, f"invalid segmentation: {err}") from err
