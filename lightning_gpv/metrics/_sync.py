"""Shared machinery for DDP-safe, de-duplicating metrics.

Every metric of :mod:`lightning_gpv.metrics` keeps one row per evaluated sample in ``"cat"`` list
states (tensors only, so ``torchmetrics`` can move and all-gather them) and reduces in ``compute()``.
A ``DistributedSampler`` pads the last batch by repeating samples; when ``update`` receives ``ids``
(ints, strings, or an int64 tensor) the repeated rows are dropped in ``compute()``: the first
occurrence of each id, in rank order after the gather, is kept. Rows updated without ids are never
dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

SampleId = int | str
SampleIds = Sequence[SampleId] | Tensor | None

_HASH_CACHE: dict[str, int] = {}
_HASH_CACHE_MAX = 1 << 20


def stable_hash(text: str) -> int:
    """Return a process- and run-independent signed 64-bit hash of ``text``.

    Python's built-in ``hash`` is salted per process, so it cannot be used to match strings across
    DDP ranks; this uses BLAKE2b with an 8-byte digest of the UTF-8 bytes.
    """
    value = _HASH_CACHE.get(text)
    if value is None:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little", signed=True)
        if len(_HASH_CACHE) >= _HASH_CACHE_MAX:
            _HASH_CACHE.clear()
        _HASH_CACHE[text] = value
    return value


def encode_ids(ids: SampleIds, n: int) -> tuple[Tensor, Tensor]:
    """Encode optional sample ids as ``(ids int64 (n,), has_id uint8 (n,))``.

    Strings go through :func:`stable_hash`; ints must fit in int64.
    """
    if ids is None:
        return torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.uint8)
    if isinstance(ids, (str, bytes)):
        raise TypeError(
            f"ids must be a sequence of {n} ints or strings (one per sample), got {describe(ids)}"
        )
    if isinstance(ids, Tensor):
        out = ids.detach().to("cpu", torch.int64).reshape(-1)
    else:
        out = torch.tensor(
            [stable_hash(i) if isinstance(i, str) else int(i) for i in ids], dtype=torch.int64
        ).reshape(-1)
    if out.numel() != n:
        raise ValueError(f"Expected {n} ids, got {out.numel()}.")
    return out, torch.ones(n, dtype=torch.uint8)


def describe(value: Any) -> str:
    """Short description of a bad input for error messages."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (str, bytes)):
        return f"the {type(value).__name__} {value[:40]!r}"
    return f"{type(value).__name__} {value!r}"[:80]


def check_batch(where: str, name: str, value: Any) -> int:
    """Check that ``value`` is a batch (a sequence or a tensor, not a string); return its length."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Tensor)):
        raise TypeError(
            f"{where}: {name} must be a sequence with one entry per sample, got {describe(value)}"
        )
    return len(value)


def check_lengths(where: str, *named: tuple[str, int]) -> None:
    """Raise ``ValueError`` unless every ``(name, length)`` pair has the first pair's length."""
    first_name, n = named[0]
    for name, length in named[1:]:
        if length != n:
            raise ValueError(f"{where}: {name} must have {n} entries (like {first_name}), got {length}")


def check_strings(where: str, name: str, value: Any) -> list[str]:
    """A batch of strings: a sequence (not a bare ``str``) whose entries are all ``str``."""
    check_batch(where, name, value)
    out = list(value)
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise TypeError(f"{where}: {name}[{i}] must be a str, got {describe(item)}")
    return out


def check_references(where: str, name: str, value: Any) -> list[list[str]]:
    """A batch of reference lists: per sample a non-empty ``Sequence[str]`` (a bare ``str`` is refused, since
    iterating it gives characters)."""
    check_batch(where, name, value)
    out = []
    for i, refs in enumerate(value):
        if isinstance(refs, (str, bytes)) or not isinstance(refs, Sequence):
            raise TypeError(
                f"{where}: {name}[{i}] must be a sequence of reference strings (e.g. [{str(refs)[:20]!r}]), "
                f"got {describe(refs)}"
            )
        if len(refs) == 0:
            raise ValueError(f"{where}: {name}[{i}] must hold at least one reference string, got none")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise TypeError(f"{where}: {name}[{i}][{j}] must be a str, got {describe(ref)}")
        out.append(list(refs))
    return out


def first_occurrence(ids: Tensor, has_id: Tensor) -> Tensor:
    """Boolean mask keeping rows without id and the first row of every id."""
    n = ids.numel()
    keep = torch.ones(n, dtype=torch.bool, device=ids.device)
    flagged = has_id.bool()
    if n == 0 or not bool(flagged.any()):
        return keep
    pos = torch.nonzero(flagged).reshape(-1)
    _, inverse = torch.unique(ids[pos], return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=ids.device)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin")
    keep[pos] = first[inverse] == pos
    return keep


def cat_state(state: Tensor | list[Tensor], dtype: torch.dtype) -> Tensor:
    """Concatenate a ``"cat"`` state (a list before sync, a tensor after) into one ``dtype`` tensor.

    A rank that saw no data contributes ``torch.tensor([])`` of the metric's float dtype to the
    gather, hence the cast.
    """
    if isinstance(state, list):
        if len(state) == 0:
            return torch.zeros(0, dtype=dtype)
        state = dim_zero_cat(state)
    return state.to(dtype)


def segment_ids(lengths: Tensor) -> Tensor:
    """``[0]*lengths[0] + [1]*lengths[1] + ...`` as an int64 tensor."""
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


def select_segments(lengths: Tensor, keep: Tensor) -> Tensor:
    """Boolean mask over the flat elements of the segments whose ``keep`` flag is set."""
    return torch.repeat_interleave(keep, lengths)


class DedupMetric(Metric):
    """Base class: per-sample ``"cat"`` states plus id de-duplication.

    Subclasses declare their per-sample states with :meth:`_add_cat_state` (with the dtype the state
    must have after the gather) and call :meth:`_append_ids` once per ``update``. ``compute()``
    implementations start with :meth:`_gather_states`, which returns the concatenated states and
    the first-occurrence mask.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state_dtypes: dict[str, torch.dtype] = {}
        self._add_cat_state("sample_ids", torch.int64)
        self._add_cat_state("sample_has_id", torch.uint8)

    def _add_cat_state(self, name: str, dtype: torch.dtype) -> None:
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._state_dtypes[name] = dtype

    def _append(self, name: str, value: Tensor) -> None:
        getattr(self, name).append(value.to(self.device, self._state_dtypes[name]))

    def _append_ids(self, ids: SampleIds, n: int) -> None:
        encoded, has_id = encode_ids(ids, n)
        self._append("sample_ids", encoded)
        self._append("sample_has_id", has_id)

    def _apply(self, fn: Any, exclude_state: Sequence[str] = ()) -> Any:
        # ``set_dtype`` would cast every state, int64 hashes and ids included; the states here have fixed
        # dtypes (float64 where it matters), so dtype conversions leave them alone. Device moves still apply.
        if getattr(self, "_dtype_convert", False):
            exclude_state = tuple(exclude_state) + tuple(self._state_dtypes)
        return super()._apply(fn, exclude_state=exclude_state)

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any | None = None) -> None:
        # A rank whose list state is still empty would send a float tensor to the all-gather while
        # the other ranks send int64: give every empty list a typed empty tensor first.
        for name, dtype in self._state_dtypes.items():
            value = getattr(self, name)
            if isinstance(value, list) and len(value) == 0:
                value.append(torch.zeros(0, dtype=dtype, device=self.device))
        kwargs: dict[str, Any] = {"process_group": process_group}
        if dist_sync_fn is not None:
            kwargs["dist_sync_fn"] = dist_sync_fn
        super()._sync_dist(**kwargs)

    def _gather_states(self, names: Iterable[str]) -> tuple[dict[str, Tensor], Tensor]:
        """Return ``({name: concatenated state}, keep)`` where ``keep`` marks the de-duplicated rows."""
        states = {name: cat_state(getattr(self, name), self._state_dtypes[name]) for name in names}
        ids = cat_state(self.sample_ids, torch.int64)
        has_id = cat_state(self.sample_has_id, torch.uint8)
        return states, first_occurrence(ids, has_id)
