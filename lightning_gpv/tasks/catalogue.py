"""The catalogue of tasks that GPV-1 and VistaLLM learn, with their input and output modalities.

Every data set in ``datamodules`` yields :class:`~lightning_gpv.tasks.samples.TaskSample` objects tagged
with one :class:`Task`; every model reads the same catalogue to know what a task takes and what it must
answer. The catalogue is a plain dict (``TASKS``) from task to :class:`TaskSpec`: no registry, no
import-time side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lightning_gpv.errors import InputError

IMAGE_TOKEN = "<image>"
"""Placeholder for one image's visual tokens in an instruction (VistaLLM places 32 QFormer tokens there)."""


class Task(str, Enum):
    """Every task of both papers. The value is the name used in configs, logs and prediction files."""

    CAPTIONING = "captioning"
    VQA = "vqa"
    LOCALIZATION = "localization"
    CLASSIFICATION = "classification"
    REC = "rec"
    RES = "res"
    GREC = "grec"
    GRES = "gres"
    REG = "reg"
    NLVR2 = "nlvr2"
    COSEG = "coseg"
    ATTCOSEG = "attcoseg"
    SPOT_CAPTIONING = "spot_captioning"
    POINT_QA = "point_qa"
    BOX_QA = "box_qa"

    def __str__(self) -> str:
        return self.value


class Modality(str, Enum):
    """What flows into or out of a task."""

    IMAGE = "image"
    """One image (``min_images == max_images == 1``) or several (multi-image tasks)."""
    TEXT = "text"
    """Free text: a question, an expression, a caption, an answer."""
    BOXES = "boxes"
    """Boxes, absolute ``xyxy`` pixels of the original image."""
    MASKS = "masks"
    """Instance masks, as polygons or RLE."""
    POINTS = "points"
    """Points ``(x, y)`` in absolute pixels."""
    SCORES = "scores"
    """A relevance score per predicted box (GPV-1 ranks all its regions)."""
    IMAGE_SELECTION = "image_selection"
    """Which of the input images hold the answer (AttCoSeg)."""

    def __str__(self) -> str:
        return self.value


class Family(str, Enum):
    """The model families of this package."""

    GPV1 = "gpv1"
    VISTALLM = "vistallm"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TaskSpec:
    """What a task takes and what it returns.

    Attributes:
        task: The task.
        description: One line, for ``--help`` and docs.
        inputs: Modalities of the input besides the instruction itself.
        outputs: Modalities of the answer.
        min_images: Fewest images a sample has.
        max_images: Most images a sample has; ``None`` means any number.
        families: Model families that implement the task.
        datasets: The public data sets the papers evaluate the task on.
    """

    task: Task
    description: str
    inputs: frozenset[Modality]
    outputs: frozenset[Modality]
    min_images: int = 1
    max_images: int | None = 1
    families: frozenset[Family] = frozenset({Family.VISTALLM})
    datasets: tuple[str, ...] = ()

    @property
    def multi_image(self) -> bool:
        """Whether a sample may hold more than one image."""
        return self.max_images is None or self.max_images > 1

    def accepts_num_images(self, n: int) -> bool:
        """Whether a sample with ``n`` images is valid for this task."""
        return n >= self.min_images and (self.max_images is None or n <= self.max_images)


def _spec(
    task: Task,
    description: str,
    inputs: set[Modality],
    outputs: set[Modality],
    *,
    min_images: int = 1,
    max_images: int | None = 1,
    families: set[Family] | None = None,
    datasets: tuple[str, ...] = (),
) -> TaskSpec:
    return TaskSpec(
        task=task,
        description=description,
        inputs=frozenset({Modality.IMAGE, *inputs}),
        outputs=frozenset(outputs),
        min_images=min_images,
        max_images=max_images,
        families=frozenset(families or {Family.VISTALLM}),
        datasets=datasets,
    )


_BOTH = {Family.GPV1, Family.VISTALLM}
_T, _B, _M, _P = Modality.TEXT, Modality.BOXES, Modality.MASKS, Modality.POINTS

TASKS: dict[Task, TaskSpec] = {
    s.task: s
    for s in (
        _spec(Task.CAPTIONING, "Describe the image in a sentence.", set(), {_T}, families=_BOTH,
              datasets=("coco",)),
        _spec(Task.VQA, "Answer a question about the image.", {_T}, {_T}, families=_BOTH,
              datasets=("vqav2",)),
        _spec(Task.LOCALIZATION, "Box all instances of a category (GPV-1; boxes ranked by relevance).",
              {_T}, {_B, Modality.SCORES}, families={Family.GPV1}, datasets=("coco",)),
        _spec(Task.CLASSIFICATION, "Name the object in an image crop.", set(), {_T},
              families={Family.GPV1}, datasets=("coco",)),
        _spec(Task.REC, "Box the one object a referring expression describes.", {_T}, {_B},
              families=_BOTH, datasets=("refcoco", "refcoco+", "refcocog")),
        _spec(Task.RES, "Segment the one object a referring expression describes.", {_T}, {_M},
              datasets=("refcoco", "refcoco+", "refcocog")),
        _spec(Task.GREC, "Box every object an expression describes; none is a valid answer.", {_T}, {_B},
              datasets=("grefcoco",)),
        _spec(Task.GRES, "Segment every object an expression describes; none is a valid answer.", {_T},
              {_M}, datasets=("grefcoco",)),
        _spec(Task.REG, "Write an expression that singles out the boxed region.", {_B}, {_T},
              datasets=("refcoco", "refcoco+", "refcocog")),
        _spec(Task.NLVR2, "Say whether a statement is true of a left and a right image.", {_T}, {_T},
              min_images=2, max_images=2, datasets=("nlvr2",)),
        _spec(Task.COSEG, "Segment the object common to all images.", set(), {_M}, min_images=2,
              max_images=None, datasets=("pascal_coseg", "msrc", "icoseg")),
        _spec(Task.ATTCOSEG, "Find the two images sharing an object with the same attributes; segment it.",
              set(), {_M, Modality.IMAGE_SELECTION}, min_images=2, max_images=None,
              datasets=("attcoseg",)),
        _spec(Task.SPOT_CAPTIONING, "Describe the image and box every object mentioned.", set(),
              {_T, _B}, datasets=("flickr30k_entities",)),
        _spec(Task.POINT_QA, "Answer a question about the object at a point.", {_T, _P}, {_T},
              datasets=("pointqa",)),
        _spec(Task.BOX_QA, "Answer a question about the object in a box.", {_T, _B}, {_T},
              datasets=("visual7w", "vcr")),
    )
}  # fmt: skip
"""Every task of both papers with its modalities. Iterate it to test or document all tasks."""


def task_spec(task: Task | str) -> TaskSpec:
    """Look up a task's spec by enum member or name, with a clear error for unknown names."""
    try:
        return TASKS[Task(task)]
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise InputError(f"unknown task {task!r}; expected one of: {known}") from None


def tasks_of(family: Family | str) -> tuple[Task, ...]:
    """The tasks a model family implements, in catalogue order."""
    fam = Family(family)
    return tuple(t for t, s in TASKS.items() if fam in s.families)
