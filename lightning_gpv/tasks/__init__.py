"""The task language both model families share: tasks, prompts, samples, predictions, processors.

Import from the submodules (``lightning_gpv.tasks.catalogue``, ``.prompts``, ``.prompt_texts``,
``.samples``, ``.processing``); the most used names are re-exported here. How a sequence model writes
coordinates is the model's own: VistaLLM's is :class:`lightning_gpv.models.vistallm.codec.CoordinateCodec`.
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
