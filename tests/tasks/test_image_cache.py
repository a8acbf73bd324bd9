"""ImageFileCache: values per unchanged image file, least recently used dropped, empty after pickling."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_gpv.tasks.image_cache import ImageFileCache
from lightning_gpv.tasks.processing import UprightImagePath, load_image


def _write(path: Path, value: int) -> Path:
    Image.fromarray(np.full((8, 12, 3), value, dtype=np.uint8)).save(path)
    return path


class _Counting:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, ref: object) -> np.ndarray:
        self.calls.append(ref)
        return load_image(ref)  # type: ignore[arg-type]


def test_a_file_is_read_once_and_its_value_reused(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", 10)
    cache, load = ImageFileCache(4), _Counting()
    first = cache.get(path, load)
    assert np.array_equal(cache.get(str(path), load), first) and load.calls == [path]
    assert len(cache) == 1


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", 10)
    cache, load = ImageFileCache(4), _Counting()
    assert cache.get(path, load)[0, 0, 0] == 10
    _write(path, 200)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    assert cache.get(path, load)[0, 0, 0] == 200 and len(load.calls) == 2


def test_the_least_recently_used_file_is_dropped(tmp_path: Path) -> None:
    a, b, c = (_write(tmp_path / f"{n}.png", k) for k, n in enumerate("abc"))
    cache, load = ImageFileCache(2), _Counting()
    cache.get(a, load), cache.get(b, load), cache.get(a, load)  # b is now the least recently used
    cache.get(c, load)
    assert len(cache) == 2
    cache.get(a, load), cache.get(c, load)
    assert load.calls == [a, b, c]  # a and c were kept
    cache.get(b, load)
    assert load.calls == [a, b, c, b]


def test_arrays_missing_files_and_a_zero_capacity_are_not_cached(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", 10)
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    load = _Counting()
    off = ImageFileCache(0)
    off.get(path, load), off.get(path, load)
    cache = ImageFileCache(4)
    cache.get(array, load), cache.get(array, load)
    assert len(load.calls) == 4 and len(off) == len(cache) == 0
    with pytest.raises(FileNotFoundError, match="missing.png"):
        cache.get(tmp_path / "missing.png", load)  # the loader's own error, naming the file


def test_an_upright_path_is_not_the_same_entry_as_the_plain_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", 10)
    cache, load = ImageFileCache(4), _Counting()
    cache.get(str(path), load), cache.get(UprightImagePath(path), load)
    assert len(load.calls) == 2


def test_a_pickled_cache_keeps_its_capacity_and_starts_empty(tmp_path: Path) -> None:
    cache = ImageFileCache(3)
    cache.get(_write(tmp_path / "a.png", 10), load_image)
    clone = pickle.loads(pickle.dumps(cache))
    assert (clone.capacity, len(clone), len(cache)) == (3, 0, 1)


@pytest.mark.parametrize("capacity", [-1, 1.5, True])
def test_a_bad_capacity_is_refused(capacity: object) -> None:
    with pytest.raises(ValueError, match="image_cache"):
        ImageFileCache(capacity)  # type: ignore[arg-type]
