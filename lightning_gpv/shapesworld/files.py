"""Byte-deterministic file writers (JSON, JSON lines, pickle, JPEG, PNG) and hashing."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PICKLE_PROTOCOL = 2
"""The refer API's ``refs(*).p`` files are Python 2 pickles; protocol 2 reads in both."""

JPEG_QUALITY = 92


def _prepare(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as canonical JSON."""
    _prepare(path).write_text(dumps(obj), encoding="ascii")


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write one canonical JSON object per line (NLVR2's ``.json`` files are JSON lines)."""
    _prepare(path).write_text("".join(dumps(row) + "\n" for row in rows), encoding="ascii")


def write_pickle(path: Path, obj: Any) -> None:
    """Pickle plain data with a fixed protocol.

    The object goes through a JSON round trip first, so the bytes cannot depend on which equal
    strings happen to be the same Python object (pickle memoises by identity).
    """
    plain = json.loads(dumps(obj))
    _prepare(path).write_bytes(pickle.dumps(plain, protocol=PICKLE_PROTOCOL))


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """Write an RGB ``uint8 [H, W, 3]`` image as a baseline JPEG with fixed settings."""
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        _prepare(path), format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False
    )


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a ``uint8`` image (``[H, W]`` gray or ``[H, W, 3]`` RGB) as PNG with fixed settings."""
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        _prepare(path), format="PNG", compress_level=1, optimize=False
    )


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_list(root: Path, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """``[{path, bytes, sha256}]`` of every file under ``root`` (POSIX relative paths, sorted)."""
    skip = set(exclude)
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in skip:
            out.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256(path)})
    return out
