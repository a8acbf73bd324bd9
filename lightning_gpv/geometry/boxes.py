"""Box formats and conversions, for numpy arrays and torch tensors alike.

Formats (the names of :func:`torchvision.ops.box_convert`):

* ``"xyxy"``: ``(x0, y0, x1, y1)``, top-left and bottom-right corners. The package's canonical format,
  in absolute pixels of the original image.
* ``"xywh"``: ``(x0, y0, w, h)``, COCO's annotation format.
* ``"cxcywh"``: ``(cx, cy, w, h)``, DETR's prediction format (normalized to [0, 1] there).

"Normalized" boxes divide x by the image width and y by the height. Every function takes boxes of shape
``(..., 4)`` and returns the same type (numpy in, numpy out; tensor in, tensor out) and shape.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from torchvision.ops import box_convert as _tv_box_convert
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import generalized_box_iou as _tv_generalized_box_iou

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
Boxes = TypeVar("Boxes", np.ndarray, torch.Tensor)

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _to_tensor(boxes: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    if isinstance(boxes, torch.Tensor):
        return boxes, False
    arr = np.asarray(boxes)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)), True


def _check(boxes: torch.Tensor, name: str = "boxes") -> None:
    if boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")


def box_convert(boxes: Boxes, in_fmt: BoxFormat, out_fmt: BoxFormat) -> Boxes:
    """Convert ``(..., 4)`` boxes between ``xyxy``, ``xywh`` and ``cxcywh`` (wraps torchvision)."""
    for fmt, arg in ((in_fmt, "in_fmt"), (out_fmt, "out_fmt")):
        if fmt not in _FORMATS:
            raise ValueError(f"{arg} must be one of {_FORMATS}, got {fmt!r}")
    t, was_numpy = _to_tensor(boxes)
    _check(t)
    shape = t.shape
    out = _tv_box_convert(t.reshape(-1, 4), in_fmt, out_fmt).reshape(shape)
    return out.numpy() if was_numpy else out


def _scale(width: float, height: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([width, height, width, height], dtype=like.dtype, device=like.device)


def normalize_boxes(boxes: Boxes, width: float, height: float) -> Boxes:
    """Divide x by ``width`` and y by ``height`` (any format: w and h scale like x and y)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    t, was_numpy = _to_tensor(boxes)
    _check(t)
    out = t / _scale(width, height, t)
    return out.numpy() if was_numpy else out


def denormalize_boxes(boxes: Boxes, width: float, height: float) -> Boxes:
    """Inverse of :func:`normalize_boxes`."""
    t, was_numpy = _to_tensor(boxes)
    _check(t)
    out = t * _scale(width, height, t)
    return out.numpy() if was_numpy else out


def clip_boxes(boxes: Boxes, width: float, height: float) -> Boxes:
    """Clip ``xyxy`` boxes to the image ``[0, width] x [0, height]``."""
    t, was_numpy = _to_tensor(boxes)
    _check(t)
    upper = _scale(width, height, t)
    out = torch.minimum(t.clamp(min=0), upper)
    return out.numpy() if was_numpy else out


def box_area(boxes: Boxes) -> Boxes:
    """Area of ``(..., 4)`` ``xyxy`` boxes, 0 for degenerate boxes; shape ``(...)``."""
    t, was_numpy = _to_tensor(boxes)
    _check(t)
    out = (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)
    return out.numpy() if was_numpy else out


def box_iou(a: Boxes, b: Boxes) -> Boxes:
    """Pairwise IoU of ``(n, 4)`` and ``(m, 4)`` ``xyxy`` boxes, shape ``(n, m)`` (0 where the union is 0)."""
    ta, was_numpy = _to_tensor(a)
    tb, _ = _to_tensor(b)
    _check(ta, "a")
    _check(tb, "b")
    out = _tv_box_iou(ta.reshape(-1, 4), tb.reshape(-1, 4).to(ta.dtype)).nan_to_num(0.0)
    return out.numpy() if was_numpy else out


def paired_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired ``(n, 4)`` ``xyxy`` boxes, shape ``(n,)`` (``box_iou``'s diagonal without its ``n x n``
    matrix); 0 where the union is empty or a box is NaN (no prediction)."""
    lo = torch.maximum(a[:, :2], b[:, :2])
    hi = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    union = box_area(a) + box_area(b) - inter
    return torch.nan_to_num(inter / union.clamp(min=1e-9), nan=0.0)


def generalized_box_iou(a: Boxes, b: Boxes) -> Boxes:
    """Pairwise generalized IoU of ``(n, 4)`` and ``(m, 4)`` ``xyxy`` boxes, shape ``(n, m)``."""
    ta, was_numpy = _to_tensor(a)
    tb, _ = _to_tensor(b)
    _check(ta, "a")
    _check(tb, "b")
    out = _tv_generalized_box_iou(ta.reshape(-1, 4), tb.reshape(-1, 4).to(ta.dtype))
    return out.numpy() if was_numpy else out


def expand_box(box: Boxes, width: float, height: float, ratio: float = 0.2, min_size: float = 5.0) -> Boxes:
    """Grow ``xyxy`` boxes by ``ratio`` of their width/height on each side, then clip to the image.

    GPV-1 crops classification regions this way (20% per side, sides of at least ``min_size`` pixels).
    """
    t, was_numpy = _to_tensor(box)
    _check(t)
    w = (t[..., 2] - t[..., 0]).clamp(min=min_size)
    h = (t[..., 3] - t[..., 1]).clamp(min=min_size)
    grow = torch.stack([-ratio * w, -ratio * h, ratio * w, ratio * h], dim=-1)
    out = clip_boxes(t + grow, width, height)
    return out.numpy() if was_numpy else out
