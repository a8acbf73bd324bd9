"""Quantize image coordinates into discrete bins for sequence models (VistaLLM Eq. 1).

A sequence model writes every coordinate as one of ``num_bins`` integers (``NUM_BINS = 1000``, values
``0..999``). x values are relative to the image width and y values to the image height.

Convention (the one every module of lightning_gpv uses)::

    bin = clamp(floor(v / size * num_bins), 0, num_bins - 1)
    v'  = (bin + 0.5) / num_bins * size          # dequantize to the bin centre

so ``|v - v'| <= size / (2 * num_bins)`` (half a bin) for every ``v`` in ``[0, size]``; ``v = size``
falls into the last bin. VistaLLM's Eq. 1 writes ``round(v / w * nbins)``, which gives ``nbins + 1``
values (0..1000); the clamped floor keeps exactly ``num_bins`` values, so ``num_bins`` tokens suffice.

Inputs outside ``[0, size]`` are clamped into it first (a point left of the image becomes bin 0,
right of it the last bin), NaN becomes 0, +inf becomes ``size`` and -inf becomes 0. Bins outside
``0..num_bins-1`` passed to :func:`dequantize` are clamped the same way.

Arrays hold interleaved ``x, y`` pairs along their last axis, shape ``(..., 2k)``: boxes ``(..., 4)``
xyxy, points ``(..., 2)``, polygons ``(..., 2N)`` as ``x0, y0, ..., x{N-1}, y{N-1}``. Both numpy
arrays and torch tensors are accepted and the result has the same kind (torch results stay on the
input's device). ``width`` and ``height`` are positive scalars, or arrays/tensors that broadcast
against ``coords[..., 0::2]`` (e.g. shape ``(B, 1)`` for boxes of shape ``(B, 4)``).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

NUM_BINS = 1000
"""Number of quantization bins per axis; bins are the integers ``0..NUM_BINS-1``."""

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
Size = float | int | np.ndarray | torch.Tensor


def _check_num_bins(num_bins: int) -> None:
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")


def _check_size(size: Size, name: str) -> None:
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


def _quantize_axis(v: ArrayT, size: Size, num_bins: int) -> ArrayT:
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


def quantize(coords: ArrayT, width: Size, height: Size, num_bins: int = NUM_BINS) -> ArrayT:
    """Pixel coordinates to bins.

    Args:
        coords: interleaved absolute pixel coordinates, shape ``(..., 2k)`` (x at even, y at odd indices).
        width: image width in pixels (x axis); scalar or broadcastable against ``coords[..., 0::2]``.
        height: image height in pixels (y axis); same rules as ``width``.
        num_bins: number of bins per axis.

    Returns:
        Bins of the same shape, int64 (numpy) or long (torch), each in ``0..num_bins-1``.
        Out-of-image and non-finite values are clamped as the module docstring says.

    Raises:
        ValueError: on an odd last dimension, a non-positive size or a bad ``num_bins``.
    """
    _check_num_bins(num_bins)
    _check_size(width, "width")
    _check_size(height, "height")
    if not isinstance(coords, torch.Tensor):
        coords = np.asarray(coords)
    _check_interleaved(coords)
    return _interleave(
        _quantize_axis(coords[..., 0::2], width, num_bins),
        _quantize_axis(coords[..., 1::2], height, num_bins),
    )


def dequantize(bins: ArrayT, width: Size, height: Size, num_bins: int = NUM_BINS) -> ArrayT:
    """Bins to pixel coordinates at the bin centres.

    Args:
        bins: interleaved integer bins, shape ``(..., 2k)``; values outside ``0..num_bins-1`` are clamped.
        width: image width in pixels; scalar or broadcastable against ``bins[..., 0::2]``.
        height: image height in pixels; same rules as ``width``.
        num_bins: number of bins per axis.

    Returns:
        float32 absolute pixel coordinates of the same shape, ``(bin + 0.5) / num_bins * size``.

    Raises:
        ValueError: on an odd last dimension, a non-positive size or a bad ``num_bins``.
    """
    _check_num_bins(num_bins)
    _check_size(width, "width")
    _check_size(height, "height")
    if not isinstance(bins, torch.Tensor):
        bins = np.asarray(bins)
    _check_interleaved(bins)
    return _interleave(
        _dequantize_axis(bins[..., 0::2], width, num_bins),
        _dequantize_axis(bins[..., 1::2], height, num_bins),
    )


def quantize_value(value: float, size: float, num_bins: int = NUM_BINS) -> int:
    """One coordinate (x with the width, or y with the height) to its bin in ``0..num_bins-1``."""
    _check_num_bins(num_bins)
    _check_size(size, "size")
    return int(_quantize_axis(np.asarray(value, dtype=np.float64), size, num_bins))


def dequantize_value(bin_index: int, size: float, num_bins: int = NUM_BINS) -> float:
    """One bin to the pixel coordinate of its centre, ``(bin + 0.5) / num_bins * size``."""
    _check_num_bins(num_bins)
    _check_size(size, "size")
    clamped = min(max(float(bin_index), 0.0), float(num_bins - 1))
    return (clamped + 0.5) / num_bins * float(size)


def max_quantization_error(size: float, num_bins: int = NUM_BINS) -> float:
    """Largest ``|v - dequantize(quantize(v))|`` for ``v`` in ``[0, size]``: ``size / (2 * num_bins)``.

    That is half a bin; floating-point rounding can add a few ulps on top.
    """
    return size / (2 * num_bins)
