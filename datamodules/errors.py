"""Errors for bad input data, and the bookkeeping of ``on_bad_sample="skip"``.

Every reader raises :class:`DataFormatError` (a ``ValueError``) for anything wrong with the user's files:
a missing or unreadable annotation file, malformed JSON, a missing or ill-typed field, an unknown split, a
missing or corrupt image. The message always names the file and, where there is one, the field, e.g.::

    /data/coco/annotations/instances_val2014.json: field 'annotations[17].bbox': expected 4 numbers ...

With ``on_bad_sample="skip"`` a data module drops what it cannot read instead, counts it
(:attr:`BadSampleLog.count`) and logs one warning (the first reason) through :mod:`logging`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_gpv.errors import InputError

log = logging.getLogger("datamodules")

OnBadSample = Literal["raise", "skip"]
"""What to do with an unreadable record or image: raise :class:`DataFormatError`, or skip and count it."""


class DataFormatError(InputError):
    """Bad input data; the message names the file and the field. An :class:`InputError`: the
    ``lightning-gpv`` command prints it as one line, also when a data-loader worker raised it.

    Attributes:
        path: The offending file (annotation file or image), or ``None``.
        field: The field inside it (``"annotations[3].bbox"``), or ``None``.
        reason: What is wrong, without the location.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        field: str | None = None,
        reason: str = "",
        *,
        message: str | None = None,
    ) -> None:
        if message is not None:  # torch re-raising a worker's error (see InputError)
            super().__init__(message=message)
            self.path, self.field, self.reason = None, None, str(self)
            return
        self.path = str(path) if path is not None else None
        self.field = field
        self.reason = reason
        where = self.path or "<data>"
        if field:
            where += f": field {field!r}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable across worker processes
        return (type(self), (self.path, self.field, self.reason))


class UnknownSplitError(DataFormatError):
    """A split name the data set does not have; the message lists the known ones."""

    def __init__(
        self,
        path: str | Path | None = None,
        split: str = "",
        known: list[str] | tuple[str, ...] = (),
        *,
        message: str | None = None,
    ) -> None:
        self.split = split
        self.known = list(known)
        if message is not None:  # torch re-raising a worker's error (see InputError)
            super().__init__(message=message)
            return
        super().__init__(path, "split", f"unknown split {split!r}; expected one of: {', '.join(self.known)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.split, self.known))


def check_on_bad_sample(value: str) -> OnBadSample:
    """Validate an ``on_bad_sample`` argument."""
    if value not in ("raise", "skip"):
        raise InputError(f"on_bad_sample must be 'raise' or 'skip', got {value!r}")
    return value  # type: ignore[return-value]


_MAX_SLOTS = 257


class BadSampleLog:
    """Counts skipped records and samples, across DataLoader worker processes too.

    Setup-time skips (malformed records) happen in the main process; load-time skips (a missing or corrupt
    image found in ``__getitem__``) may happen in workers. Counts live in a shared-memory tensor with one
    slot per worker, so the main process reads the total without locks. One warning is logged per process,
    at the first skip. (:class:`~datamodules.base.TaskDataset` counts its load-time skips per sample in a
    shared bitmap instead, so a sample found bad twice counts once.)

    Attributes:
        name: What is being read (for the log line), e.g. ``"coco train2014"``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._counts = torch.zeros(_MAX_SLOTS, dtype=torch.int64).share_memory_()
        self._logged = False
        self.reasons: list[str] = []
        """The first few reasons (this process only), for debugging."""

    @property
    def count(self) -> int:
        """Total number of skipped records and samples so far."""
        return int(self._counts.sum())

    def skip(self, err: BaseException | str, count: bool = True) -> None:
        """Count one skipped record or sample (unless ``count`` is false) and log the first one."""
        if count:
            info = torch.utils.data.get_worker_info()
            slot = 0 if info is None else 1 + info.id % (_MAX_SLOTS - 1)
            self._counts[slot] += 1
        if len(self.reasons) < 20:
            self.reasons.append(str(err))
        if not self._logged:
            self._logged = True
            log.warning(
                "%s: skipping bad sample (%s); further ones are counted silently (see num_skipped)",
                self.name,
                err,
            )

    def reset(self) -> None:
        """Set the count to zero (e.g. before re-reading a split)."""
        self._counts.zero_()
        self.reasons.clear()
        self._logged = False

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "_counts": self._counts, "_logged": False, "reasons": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
