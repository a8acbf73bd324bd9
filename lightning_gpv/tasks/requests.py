"""A request without annotations: a task, its images and one prompt, made into a :class:`TaskSample`.

Both ``lightning-gpv predict`` on a folder (``datamodules.folder``) and the Python
:class:`~lightning_gpv.predictor.Predictor` build their samples here, so the same request gives the same
sample either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.catalogue import Task, TaskSpec, task_spec
from lightning_gpv.tasks.samples import ImageRef, TaskSample

PROMPT_SLOTS: dict[Task, str] = {
    Task.VQA: "question",
    Task.NLVR2: "question",
    Task.REC: "expression",
    Task.RES: "expression",
    Task.GREC: "expression",
    Task.GRES: "expression",
    Task.LOCALIZATION: "category",
}
"""Task to the :class:`TaskSample` field that the prompt fills (the other tasks take no prompt: the model
uses its fixed instruction for them)."""

UNSUPPORTED: dict[Task, str] = {
    Task.REG: "an input region (box)",
    Task.BOX_QA: "an input region (box)",
    Task.POINT_QA: "an input point",
}
"""Tasks a request of images and text cannot feed, with what they would need."""


def check_request(task: str | Task, prompt: str | None, where: str = "") -> TaskSpec:
    """The task's spec, after checking that the task can be requested and that ``prompt`` fits it.

    Args:
        task: A task name or :class:`Task`.
        prompt: The question, expression or category (see :data:`PROMPT_SLOTS`), or ``None``.
        where: Prefix of the error messages, naming the caller (``"ImageFolderDataModule: "``).

    Raises:
        ValueError: An unknown or unsupported task, a missing or superfluous prompt; the message names
            the argument (``task`` or ``prompt``).
    """
    try:
        spec = task_spec(task)
    except ValueError as err:
        raise InputError(f"{where}argument `task`: {err}") from None
    if spec.task in UNSUPPORTED:
        raise InputError(
            f"{where}argument `task`: {spec.task.value!r} needs {UNSUPPORTED[spec.task]} per sample, "
            "which images and a text prompt cannot give"
        )
    slot = PROMPT_SLOTS.get(spec.task)
    if slot is not None and not (prompt or "").strip():
        raise InputError(f"{where}argument `prompt` is required for task {spec.task.value!r} (the {slot})")
    if slot is None and prompt is not None:
        raise InputError(
            f"{where}argument `prompt`: task {spec.task.value!r} takes no prompt (the model uses its fixed "
            "instruction for it); leave `prompt` out"
        )
    return spec


def request_sample(
    task: Task,
    images: Sequence[ImageRef],
    prompt: str | None,
    *,
    sample_id: str = "",
    image_ids: Sequence[int | str] = (),
    metadata: dict[str, Any] | None = None,
) -> TaskSample:
    """The target-less sample of a request (``prompt`` in the task's slot, see :data:`PROMPT_SLOTS`)."""
    slots = {PROMPT_SLOTS[task]: prompt} if task in PROMPT_SLOTS else {}
    return TaskSample(
        task, list(images), sample_id=sample_id, image_ids=list(image_ids), metadata=metadata or {}, **slots
    )
