"""Model-agnostic examples (:class:`TaskSample`) and answers (:class:`Prediction`).

Conventions shared by every data set, model and metric of the package:

* Boxes are ``float32`` arrays of shape ``(k, 4)``, absolute ``xyxy`` in pixels of the *original* image
  (before any resize), top-left origin, ``x`` to the right, ``y`` down.
* Points are ``float32`` arrays of shape ``(k, 2)``, ``(x, y)`` in the same pixels.
* Masks are :class:`~lightning_gpv.geometry.masks.Mask` objects (polygons or COCO RLE with their image
  height and width).
* In multi-image tasks, ``*_image`` arrays say which input image (0-based) each box or mask belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_gpv.geometry.masks import Mask
from lightning_gpv.tasks.catalogue import Task, task_spec

ImageRef = str | Path | np.ndarray
"""An image: a file path (decoded lazily by the data pipeline) or an ``(H, W, 3)`` ``uint8`` RGB array."""


def _as_boxes(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value if value is not None else np.zeros((0, 4)), dtype=np.float32)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (k, 4) xyxy, got {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _as_points(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value if value is not None else np.zeros((0, 2)), dtype=np.float32)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (k, 2) xy, got {arr.shape}")
    return arr


def _rounded(arr: np.ndarray, decimals: int) -> list:
    # float64 first: float32 values such as 1.23 would otherwise print as 1.2300000190734863 in JSON.
    return np.round(arr.astype(np.float64), decimals).tolist()


def _as_index(value: Any, n: int, name: str) -> np.ndarray:
    if value is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries for {n} objects")
    return arr


@dataclass
class Target:
    """What a sample should be answered with.

    Attributes:
        text: The training target text (a caption, the VQA answer chosen for training, a class name,
            ``"True"``/``"False"`` for NLVR2, an expression for REG).
        answers: Every acceptable answer, for evaluation: the 10 VQA answers, all reference captions,
            synonyms of a class.
        boxes: ``(k, 4)`` float32 absolute xyxy pixels; ``k == 0`` is a valid no-target answer (GREC).
        box_image: ``(k,)`` int64, the input image each box belongs to.
        masks: Instance masks (polygons or RLE); empty is a valid no-target answer (GRES).
        mask_image: ``(len(masks),)`` int64, the input image each mask belongs to.
        points: ``(k, 2)`` float32 absolute pixels.
        selected_images: Input images that hold the answer (AttCoSeg: the two that share the object).
    """

    text: str | None = None
    answers: list[str] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_image: np.ndarray | None = None
    masks: list[Mask] = field(default_factory=list)
    mask_image: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    selected_images: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes, "Target.boxes")
        self.box_image = _as_index(self.box_image, len(self.boxes), "Target.box_image")
        self.mask_image = _as_index(self.mask_image, len(self.masks), "Target.mask_image")
        self.points = _as_points(self.points, "Target.points")


@dataclass
class TaskSample:
    """One example of one task, independent of any model.

    Attributes:
        task: The task.
        images: One or more images (paths or ``(H, W, 3)`` uint8 arrays).
        target: The answer (empty at test time when annotations are hidden).
        question: VQA, NLVR2 (the statement), PointQA and BoxQA.
        expression: Referring expression (REC, RES, GREC, GRES).
        category: Category name (GPV-1 localization; the class of a classification crop is the target).
        region: ``(4,)`` xyxy box in the input (REG, BoxQA; GPV-1 classification crops).
        point: ``(2,)`` xy point in the input (PointQA).
        image_sizes: ``(height, width)`` of each image when known without decoding it.
        sample_id: Unique id within its data set and split (metrics de-duplicate on it).
        image_ids: The data set's id of each image.
        metadata: Anything else (COCO-SCE ``seen``/``unseen`` concepts, answer type, source file, ...).
    """

    task: Task
    images: list[ImageRef]
    target: Target = field(default_factory=Target)
    question: str | None = None
    expression: str | None = None
    category: str | None = None
    region: np.ndarray | None = None
    point: np.ndarray | None = None
    image_sizes: list[tuple[int, int]] | None = None
    sample_id: str = ""
    image_ids: list[int | str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.task = task_spec(self.task).task
        if isinstance(self.images, tuple):
            self.images = list(self.images)
        elif not isinstance(self.images, list):
            self.images = [self.images]  # one path or one array
        spec = task_spec(self.task)
        if not spec.accepts_num_images(len(self.images)):
            raise ValueError(
                f"task {self.task.value!r} takes {spec.min_images}..{spec.max_images or 'any'} images, "
                f"sample {self.sample_id!r} has {len(self.images)}"
            )
        if self.region is not None:
            self.region = _as_boxes(self.region, "TaskSample.region")[0]
        if self.point is not None:
            self.point = _as_points(self.point, "TaskSample.point")[0]
        if self.image_sizes is not None and len(self.image_sizes) != len(self.images):
            raise ValueError(
                f"sample {self.sample_id!r}: {len(self.image_sizes)} image sizes "
                f"for {len(self.images)} images"
            )

    @property
    def num_images(self) -> int:
        return len(self.images)

    def prompt_slots(self) -> dict[str, str]:
        """The text slots this sample fills in a prompt template (see :mod:`lightning_gpv.tasks.prompts`).

        ``region`` and ``point`` are left out: they must be serialized by the model's coordinate format.
        """
        slots = {"question": self.question, "expr": self.expression, "category": self.category}
        return {k: v for k, v in slots.items() if v is not None}


@dataclass
class Prediction:
    """A model's answer to one :class:`TaskSample`, in the same conventions.

    Attributes:
        task: The task answered.
        sample_id: The sample's id.
        text: Generated text (the raw LLM output for VistaLLM, the decoded answer for GPV-1).
        boxes: ``(k, 4)`` float32 absolute xyxy pixels, ranked best first when ``scores`` is given.
        scores: ``(k,)`` float32 relevance of each box, or ``None``.
        box_image: ``(k,)`` int64 input image of each box.
        masks: Predicted masks (polygons from the parser, or dense masks).
        mask_image: ``(len(masks),)`` int64 input image of each mask.
        points: ``(k, 2)`` float32 absolute pixels.
        selected_images: Input images the model selected (AttCoSeg).
        dropped: What the output parser could not read, one message each (empty when all was read).
    """

    task: Task
    sample_id: str = ""
    text: str = ""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray | None = None
    box_image: np.ndarray | None = None
    masks: list[Mask] = field(default_factory=list)
    mask_image: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    selected_images: list[int] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.task = task_spec(self.task).task
        self.boxes = _as_boxes(self.boxes, "Prediction.boxes")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if len(self.scores) != len(self.boxes):
                raise ValueError(f"{len(self.scores)} scores for {len(self.boxes)} boxes")
        self.box_image = _as_index(self.box_image, len(self.boxes), "Prediction.box_image")
        self.mask_image = _as_index(self.mask_image, len(self.masks), "Prediction.mask_image")
        self.points = _as_points(self.points, "Prediction.points")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (prediction files are JSON lines of these); masks in COCO segmentation form."""
        out: dict[str, Any] = {"task": self.task.value, "sample_id": self.sample_id, "text": self.text}
        if len(self.boxes):
            out["boxes"] = _rounded(self.boxes, 2)
            out["box_image"] = self.box_image.tolist()
        if self.scores is not None:
            out["scores"] = _rounded(self.scores, 5)
        if self.masks:
            out["masks"] = [m.to_coco() for m in self.masks]
            out["mask_image"] = self.mask_image.tolist()
        if len(self.points):
            out["points"] = _rounded(self.points, 2)
        if self.selected_images:
            out["selected_images"] = list(self.selected_images)
        if self.dropped:
            out["dropped"] = list(self.dropped)
        return out
