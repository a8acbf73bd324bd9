"""Whole answers of each task: a :class:`Target` to answer text, and answer text to a :class:`Prediction`.

Answer formats (written by :meth:`CoordinateCodec.serialize_answer`, read by
:meth:`CoordinateCodec.parse_prediction`):

* text tasks: the text;
* REC/GREC (and GPV-1 localization): xyxy boxes of image 0, ``<bsep>``-joined (GREC "no target": empty);
* RES/GRES: masks of image 0 (``num_mask_points`` contour points each), ``<msep>``-joined;
* spot captioning: the caption, then its boxes;
* CoSeg: one mask per image, in image order, ``<msep>``-joined;
* AttCoSeg: ``"Images i and j: "`` (1-based) and the masks in the selected images, in that order.

Frame: every box and mask is written and read in absolute pixels of the *original* image it belongs to;
``image_sizes`` gives ``(height, width)`` per input image, and each object's bins are relative to its own
image. Nothing here raises on model output: garbage text gives an empty prediction whose ``dropped`` says
what could not be read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lightning_gpv.geometry import Mask
from lightning_gpv.models.vistallm.codec.parsing import ParseResult
from lightning_gpv.models.vistallm.codec.vocabulary import MASK_SEP, Style
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Prediction, Target


class _Codec(Protocol):
    """What answers need of :class:`~lightning_gpv.models.vistallm.codec.coordinate_codec.CoordinateCodec`
    (declared here so that the codec can delegate to this module without an import cycle)."""

    def mask_points(self, mask: Mask) -> np.ndarray: ...

    def format_boxes(self, boxes: np.ndarray, width: float, height: float, style: Style = "human") -> str: ...

    def format_masks(
        self, polygons: Sequence[np.ndarray], width: float, height: float, style: Style = "human"
    ) -> str: ...

    def parse_boxes(self, text: str, width: float, height: float) -> ParseResult: ...

    def parse_masks(self, text: str, width: float, height: float) -> ParseResult: ...

    def parse_answer(self, text: str, width: float, height: float) -> ParseResult: ...


BOX_TASKS = frozenset({Task.REC, Task.GREC, Task.LOCALIZATION})
"""Tasks answered with boxes of image 0."""
MASK_TASKS = frozenset({Task.RES, Task.GRES})
"""Tasks answered with masks of image 0."""
MULTI_MASK_TASKS = frozenset({Task.COSEG, Task.ATTCOSEG})
"""Tasks answered with masks that each belong to one of several images."""
_NUMBER = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------------
# Writing answers


def _masks_text(codec: _Codec, masks: Sequence[Mask], sizes: Sequence[tuple[int, int]], style: Style) -> str:
    groups = []
    for mask, (height, width) in zip(masks, sizes):
        points = codec.mask_points(mask)
        if len(points):  # an empty mask has no contour: it is left out rather than written as []
            groups.append(codec.format_masks([points], width, height, style))
    return MASK_SEP.join(groups)


def serialize_answer(
    codec: _Codec,
    task: Task,
    target: Target,
    image_sizes: Sequence[tuple[int, int]],
    style: Style,
) -> str:
    """The answer text of ``target`` (see :meth:`CoordinateCodec.serialize_answer`)."""
    height, width = image_sizes[0]
    if task in BOX_TASKS:
        return codec.format_boxes(target.boxes, width, height, style)
    if task in MASK_TASKS:
        return _masks_text(codec, target.masks, [image_sizes[0]] * len(target.masks), style)
    if task is Task.SPOT_CAPTIONING:
        boxes = codec.format_boxes(target.boxes, width, height, style)
        return " ".join(t for t in (target.text or "", boxes) if t)
    if task in MULTI_MASK_TASKS:
        order = np.argsort(target.mask_image, kind="stable")
        masks = [target.masks[i] for i in order]
        sizes = [image_sizes[int(target.mask_image[i])] for i in order]
        text = _masks_text(codec, masks, sizes, style)
        if task is Task.ATTCOSEG:
            chosen = " and ".join(str(i + 1) for i in sorted(target.selected_images))
            return f"Images {chosen}: {text}"
        return text
    return target.text or (target.answers[0] if target.answers else "")


# --------------------------------------------------------------------------------------------------
# Reading answers


def decode_generated(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor | Sequence[int]) -> str:
    """Text of one generated sequence: cut at the first end token, padding and bos removed.

    Added tokens (coordinates, separators) are special tokens, so they are kept by decoding with
    ``skip_special_tokens=False`` after removing the control tokens by id. Ids outside the vocabulary
    are dropped, so any id sequence decodes.
    """
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    eos = tokenizer.eos_token_id
    if eos in values:
        values = values[: values.index(eos)]
    drop = {tokenizer.pad_token_id, tokenizer.bos_token_id}
    values = [v for v in values if v not in drop and 0 <= v < len(tokenizer)]
    return tokenizer.decode(values, skip_special_tokens=False).strip()


def _scaled(polygon: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    return (polygon * np.array([width, height], dtype=np.float32)).astype(np.float32)


def parse_prediction(
    codec: _Codec,
    task: Task,
    text: str,
    image_sizes: Sequence[tuple[int, int]],
    sample_id: str,
) -> Prediction:
    """The prediction ``text`` answers (see :meth:`CoordinateCodec.parse_prediction`)."""
    task = Task(task)
    height, width = image_sizes[0]
    if task in BOX_TASKS:
        parsed = codec.parse_boxes(text, width, height)
        return Prediction(task, sample_id, text=text, boxes=parsed.boxes, dropped=parsed.dropped)
    if task is Task.SPOT_CAPTIONING:
        parsed = codec.parse_boxes(text, width, height)
        return Prediction(task, sample_id, text=parsed.text, boxes=parsed.boxes, dropped=parsed.dropped)
    if task in MASK_TASKS:
        parsed = codec.parse_masks(text, width, height)
        masks = [Mask.from_polygons([p], height, width) for p in parsed.masks]
        return Prediction(task, sample_id, text=text, masks=masks, dropped=parsed.dropped)
    if task in MULTI_MASK_TASKS:
        return _parse_multi_masks(codec, task, text, image_sizes, sample_id)
    return Prediction(task, sample_id, text=text)


def _parse_multi_masks(
    codec: _Codec, task: Task, text: str, image_sizes: Sequence[tuple[int, int]], sample_id: str
) -> Prediction:
    """CoSeg: mask i belongs to image i. AttCoSeg: masks belong to the images named in the text."""
    # Which image a mask belongs to is known only after reading the text: parse in the unit square,
    # then scale each polygon by its own image's size.
    parsed = codec.parse_masks(text, 1.0, 1.0)
    dropped = list(parsed.dropped)
    num_images = len(image_sizes)
    selected: list[int] = []
    if task is Task.ATTCOSEG:
        for number in _NUMBER.findall(codec.parse_answer(text, 1.0, 1.0).text):
            index = int(number[:6]) - 1
            if 0 <= index < num_images and index not in selected:
                selected.append(index)
            elif index not in selected:
                dropped.append(f"image number {number[:8]} out of range 1..{num_images}")
    owners = selected if selected else list(range(num_images))
    if len(parsed.masks) > len(owners):
        dropped.append(f"{len(parsed.masks) - len(owners)} mask(s) beyond the images, dropped")
    masks, mask_image = [], []
    for polygon, image in zip(parsed.masks, owners):
        height, width = image_sizes[image]
        masks.append(Mask.from_polygons([_scaled(polygon, image_sizes[image])], height, width))
        mask_image.append(image)
    return Prediction(task, sample_id, text=text, masks=masks, mask_image=np.asarray(mask_image, np.int64),
                      selected_images=selected, dropped=dropped)  # fmt: skip
