"""A bounded in-memory cache of what a processor computes from an image file (its decoded, resized pixels).

A tiny model on a CPU spends a large share of its training step decoding and resizing the same files epoch
after epoch (the demo's VistaLLM: a fifth, for 320 x 240 JPEGs resized to 64 px); a processor that keeps
the result per file does that work once. Entries are keyed by the file's path, byte size and modification
time, so a file rewritten in place is read again; arrays given in place of files are never cached. The
cache holds per process: pickled (into a loader worker or a spawned process) it starts empty.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.processing import UprightImagePath
from lightning_gpv.tasks.samples import ImageRef

T = TypeVar("T")

__all__ = ["ImageFileCache"]


class ImageFileCache:
    """Least-recently-used values computed from image files.

    Args:
        capacity: Files whose values are kept (the least recently used is dropped first); 0 keeps none.

    Raises:
        ValueError: A negative or non-integer ``capacity``.
    """

    def __init__(self, capacity: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise InputError(f"image_cache (files kept in memory) must be an integer >= 0, got {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ref: ImageRef, compute: Callable[[ImageRef], T]) -> T:
        """``compute(ref)``, or what it returned for the same unchanged file before.

        A reference that is not an existing file (an array, a missing path) goes to ``compute`` every time,
        which raises the loader's error for a missing file.
        """
        key = self._key(ref)
        if key is None:
            return compute(ref)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = compute(ref)
        self._entries[key] = value
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return value

    def _key(self, ref: ImageRef) -> tuple[Any, ...] | None:
        if self.capacity == 0 or not isinstance(ref, (str, os.PathLike)):
            return None
        try:
            stat = os.stat(ref)
        except OSError:
            return None
        # An UprightImagePath and a plain path of the same file decode to different pixels.
        return (os.fspath(ref), isinstance(ref, UprightImagePath), stat.st_size, stat.st_mtime_ns)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"])  # type: ignore[misc]
