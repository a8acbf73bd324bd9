"""The shared task language: tasks, prompts, samples, predictions and coordinate serialization.

Import from the submodules (``lightning_gpv.tasks.catalogue``, ``.prompts``, ``.samples``,
``.coordinates``, ``.serialization``); the most used names are re-exported here.
"""

from lightning_gpv.tasks.catalogue import (
    IMAGE_TOKEN,
    TASKS,
    Family,
    Modality,
    Task,
    TaskSpec,
    task_spec,
    tasks_of,
)
from lightning_gpv.tasks.prompts import GPV1_PROMPTS, PROMPTS, VISTALLM_PROMPTS, PromptBank
from lightning_gpv.tasks.samples import ImageRef, Prediction, Target, TaskSample

__all__ = [
    "GPV1_PROMPTS",
    "IMAGE_TOKEN",
    "PROMPTS",
    "TASKS",
    "VISTALLM_PROMPTS",
    "Family",
    "ImageRef",
    "Modality",
    "Prediction",
    "PromptBank",
    "Target",
    "Task",
    "TaskSample",
    "TaskSpec",
    "task_spec",
    "tasks_of",
]
