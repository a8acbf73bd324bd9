"""Pixel coordinates to bins and back (VistaLLM Eq. 1), the arithmetic behind :class:`CoordinateCodec`.

Frame: a coordinate is an absolute pixel position in the *original* image it belongs to (pixel-corner
convention: pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``), so ``x`` lies in ``[0, width]`` and ``y``
in ``[0, height]`` of that image. x is quantized relative to the image's width and y relative to its
height; the same bin therefore means different pixels in images of different sizes, and a model never
sees the resized ``S x S`` frame its encoder works in.

Convention, for ``num_bins`` bins per axis::

    bin = clamp(floor(v / size * num_bins), 0, num_bins - 1)
    v'  = (bin + 0.5) / num_bins * size          # dequantize to the bin centre

so ``|v - v'| <= size / (2 * num_bins)`` (half a bin) for every ``v`` in ``[0, size]``; ``v = size``
falls into the last bin. VistaLLM's Eq. 1 writes ``round(v / w * nbins)``, which gives ``nbins + 1``
values (0..nbins); the clamped floor keeps exactly ``num_bins`` values, so ``num_bins`` tokens suffice.

Inputs outside ``[0, size]`` are clamped into it first (a point left of the image becomes bin 0, right of
it the last bin), NaN becomes 0, +inf becomes ``size`` and -inf becomes 0. Bins outside
``0..num_bins-1`` given to :func:`dequantize` are clamped the same way.

Arrays hold interleaved ``x, y`` pairs along their last axis, shape ``(..., 2k)``: boxes ``(..., 4)``
xyxy, points ``(..., 2)``, polygons ``(..., 2N)`` as ``x0, y0, ..., x{N-1}, y{N-1}``. Numpy arrays and
torch tensors are accepted and the result has the same kind (torch results stay on the input's device).
``width`` and ``height`` are positive scalars, or arrays/tensors that broadcast against
``coords[..., 0::2]`` (e.g. shape ``(B, 1)`` for boxes of shape ``(B, 4)`` from ``B`` images).

The functions take ``num_bins`` explicitly and do not validate it: :class:`CoordinateCodec` checks it once
when it is built, and is the API callers use.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
Size = float | int | np.ndarray | torch.Tensor
"""An image width or height in pixels: a scalar, or an array/tensor of one size per image."""


def check_size(size: Size, name: str) -> None:
    """Raise ``ValueError`` unless every value of ``size`` is finite and positive."""
    if isinstance(size, torch.Tensor):
        ok = bool(torch.all(size > 0)) and bool(torch.all(torch.isfinite(size)))
    else:
        values = np.asarray(size, dtype=np.float64)
        ok = bool(np.all(values > 0)) and bool(np.all(np.isfinite(values)))
    if not ok:
        raise ValueError(f"{name} must be finite and > 0, got {size!r}")


def _check_interleaved(coords: np.ndarray | torch.Tensor) -> None:
    if coords.ndim == 0 or coords.shape[-1] % 2 != 0:
        raise ValueError(
            f"expected interleaved x, y pairs of shape (..., 2k), got shape {tuple(coords.shape)}"
        )


def _interleave(x: ArrayT, y: ArrayT) -> ArrayT:
    """Inverse of ``coords[..., 0::2], coords[..., 1::2]``: shape ``(..., k)`` twice -> ``(..., 2k)``."""
    if isinstance(x, torch.Tensor):
        return torch.stack((x, y), dim=-1).flatten(-2)  # flatten is safe on empty tensors
    stacked = np.stack((x, y), axis=-1)
    return stacked.reshape(*stacked.shape[:-2], 2 * stacked.shape[-2])


def quantize_axis(v: ArrayT, size: Size, num_bins: int) -> ArrayT:
    """Values of one axis (x with widths, or y with heights) to bins; no argument checks."""
    if isinstance(v, torch.Tensor):
        s = torch.as_tensor(size, dtype=torch.float64, device=v.device)
        v = torch.nan_to_num(v.to(torch.float64), nan=0.0, posinf=math.inf, neginf=-math.inf)
        v = torch.minimum(torch.clamp(v, min=0.0), s)
        return torch.clamp(torch.floor(v / s * num_bins), 0, num_bins - 1).to(torch.long)
    s = np.asarray(size, dtype=np.float64)
    v = np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    v = np.minimum(np.maximum(v, 0.0), s)
    return np.clip(np.floor(v / s * num_bins), 0, num_bins - 1).astype(np.int64)


def _dequantize_axis(b: ArrayT, size: Size, num_bins: int) -> ArrayT:
    if isinstance(b, torch.Tensor):
        s = torch.as_tensor(size, dtype=torch.float64, device=b.device)
        b = torch.clamp(b.to(torch.float64), 0, num_bins - 1)
        return ((b + 0.5) / num_bins * s).to(torch.float32)
    s = np.asarray(size, dtype=np.float64)
    b = np.clip(np.asarray(b, dtype=np.float64), 0, num_bins - 1)
    return ((b + 0.5) / num_bins * s).astype(np.float32)


def quantize(coords: ArrayT, width: Size, height: Size, num_bins: int) -> ArrayT:
    """Interleaved pixel coordinates ``(..., 2k)`` to int64/long bins of the same shape.

    Raises:
        ValueError: on an odd last dimension or a non-positive or non-finite size.
    """
    check_size(width, "width")
    check_size(height, "height")
    if not isinstance(coords, torch.Tensor):
        coords = np.asarray(coords)
    _check_interleaved(coords)
    return _interleave(
        quantize_axis(coords[..., 0::2], width, num_bins),
        quantize_axis(coords[..., 1::2], height, num_bins),
    )


def dequantize(bins: ArrayT, width: Size, height: Size, num_bins: int) -> ArrayT:
    """Interleaved bins ``(..., 2k)`` to float32 pixel coordinates at the bin centres.

    Raises:
        ValueError: on an odd last dimension or a non-positive or non-finite size.
    """
    check_size(width, "width")
    check_size(height, "height")
    if not isinstance(bins, torch.Tensor):
        bins = np.asarray(bins)
    _check_interleaved(bins)
    return _interleave(
        _dequantize_axis(bins[..., 0::2], width, num_bins),
        _dequantize_axis(bins[..., 1::2], height, num_bins),
    )


def dequantize_scalar(bin_index: int, size: float, num_bins: int) -> float:
    """One bin to the pixel coordinate of its centre (clamped into ``0..num_bins-1`` first)."""
    check_size(size, "size")
    clamped = min(max(float(bin_index), 0.0), float(num_bins - 1))
    return (clamped + 0.5) / num_bins * float(size)
