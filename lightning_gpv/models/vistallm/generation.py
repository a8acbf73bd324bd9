"""From generated token ids to :class:`~lightning_gpv.tasks.samples.Prediction`: decode, parse, rescale.

Nothing here raises on model output: garbage text gives an empty prediction whose ``dropped`` says what
could not be read. Coordinates are parsed relative to the image they belong to (``image_sizes``), so
boxes and masks come back in absolute pixels of the original images.

Answer formats (written by :func:`serialize_answer`, read by :func:`parse_prediction`):

* text tasks: the text;
* REC/GREC (and GPV-1 localization): boxes of image 0, ``<bsep>``-joined (GREC "no target": empty);
* RES/GRES: masks of image 0 (32 contour points each), ``<msep>``-joined;
* spot captioning: the caption, then its boxes;
* CoSeg: one mask per image, in image order, ``<msep>``-joined;
* AttCoSeg: ``"Images i and j: "`` (1-based) and the masks in the selected images, in that order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lightning_gpv.geometry import Mask, sample_contour, sample_polygon
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.coordinates import NUM_BINS
from lightning_gpv.tasks.samples import Prediction, Target
from lightning_gpv.tasks.serialization import (
    MASK_SEP,
    NUM_MASK_POINTS,
    Style,
    format_boxes,
    format_masks,
    parse_answer,
    parse_boxes,
    parse_masks,
)

BOX_TASKS = frozenset({Task.REC, Task.GREC, Task.LOCALIZATION})
MASK_TASKS = frozenset({Task.RES, Task.GRES})
MULTI_MASK_TASKS = frozenset({Task.COSEG, Task.ATTCOSEG})
_NUMBER = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------------
# Writing answers


def mask_points(mask: Mask, num_points: int) -> np.ndarray:
    """``(num_points, 2)`` contour points of a mask (adaptive sampling), or ``(0, 2)`` when it is empty.

    A single-polygon mask is sampled without rasterising it; any other mask through its pixels.
    """
    if mask.polygons is not None and len(mask.polygons) == 1 and len(mask.polygons[0]) >= 3:
        return sample_polygon(mask.polygons[0], num_points)
    return sample_contour(mask.to_array(), num_points)


def _masks_text(masks: Sequence[Mask], sizes: Sequence[tuple[int, int]], style: Style, num_bins: int,
                num_points: int) -> str:  # fmt: skip
    groups = []
    for mask, (height, width) in zip(masks, sizes):
        points = mask_points(mask, num_points)
        if len(points):
            groups.append(format_masks([points], width, height, style, num_bins))
    return MASK_SEP.join(groups)


def serialize_answer(
    task: Task,
    target: Target,
    image_sizes: Sequence[tuple[int, int]],
    *,
    style: Style = "tokens",
    num_bins: int = NUM_BINS,
    num_points: int = NUM_MASK_POINTS,
) -> str:
    """The answer text a sample is trained on.

    Args:
        task: The task.
        target: The sample's target (boxes/masks in absolute pixels of their images).
        image_sizes: ``(height, width)`` of each input image.
        style: ``"tokens"`` for LLM targets, ``"human"`` for logs.
        num_bins: Coordinate bins.
        num_points: Contour points per mask.
    """
    height, width = image_sizes[0]
    if task in BOX_TASKS:
        return format_boxes(target.boxes, width, height, style, num_bins)
    if task in MASK_TASKS:
        return _masks_text(target.masks, [image_sizes[0]] * len(target.masks), style, num_bins, num_points)
    if task is Task.SPOT_CAPTIONING:
        boxes = format_boxes(target.boxes, width, height, style, num_bins)
        return " ".join(t for t in (target.text or "", boxes) if t)
    if task in MULTI_MASK_TASKS:
        order = np.argsort(target.mask_image, kind="stable")
        masks = [target.masks[i] for i in order]
        sizes = [image_sizes[int(target.mask_image[i])] for i in order]
        text = _masks_text(masks, sizes, style, num_bins, num_points)
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
    ``skip_special_tokens=False`` after removing the control tokens by id.
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
    task: Task,
    text: str,
    image_sizes: Sequence[tuple[int, int]],
    *,
    sample_id: str = "",
    num_bins: int = NUM_BINS,
    num_points: int = NUM_MASK_POINTS,
) -> Prediction:
    """Parse generated text into a :class:`Prediction` (never raises on any ``text``).

    Args:
        task: The task the text answers.
        text: Decoded generation (see :func:`decode_generated`).
        image_sizes: ``(height, width)`` of each input image, the frame of the parsed coordinates.
        sample_id: Copied into the prediction.
        num_bins: Coordinate bins.
        num_points: Expected contour points per mask (others are kept and reported).
    """
    task = Task(task)
    height, width = image_sizes[0]
    if task in BOX_TASKS:
        parsed = parse_boxes(text, width, height, num_bins)
        return Prediction(task, sample_id, text=text, boxes=parsed.boxes, dropped=parsed.dropped)
    if task is Task.SPOT_CAPTIONING:
        parsed = parse_boxes(text, width, height, num_bins)
        return Prediction(task, sample_id, text=parsed.text, boxes=parsed.boxes, dropped=parsed.dropped)
    if task in MASK_TASKS:
        parsed = parse_masks(text, width, height, num_points, num_bins)
        masks = [Mask.from_polygons([p], height, width) for p in parsed.masks]
        return Prediction(task, sample_id, text=text, masks=masks, dropped=parsed.dropped)
    if task in MULTI_MASK_TASKS:
        return _parse_multi_masks(task, text, image_sizes, sample_id, num_bins, num_points)
    return Prediction(task, sample_id, text=text)


def _parse_multi_masks(
    task: Task, text: str, image_sizes: Sequence[tuple[int, int]], sample_id: str, num_bins: int,
    num_points: int,
) -> Prediction:  # fmt: skip
    """CoSeg: mask i belongs to image i. AttCoSeg: masks belong to the images named in the text."""
    parsed = parse_masks(text, 1.0, 1.0, num_points, num_bins)  # normalised; rescaled per image below
    dropped = list(parsed.dropped)
    num_images = len(image_sizes)
    selected: list[int] = []
    if task is Task.ATTCOSEG:
        for number in _NUMBER.findall(parse_answer(text, 1.0, 1.0, num_points, num_bins).text):
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
