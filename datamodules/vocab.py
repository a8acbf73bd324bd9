"""The training samples GPV-1's answer vocabulary is built from (``lightning-gpv build-vocab``).

:func:`lightning_gpv.build_vocab.build` turns their answers into the vocabulary folder; which files and tasks
they come from is data knowledge, so it lives here.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.base import TaskDataModule
from datamodules.coco import CocoDataModule, CocoOptions
from datamodules.vqav2 import VQAv2DataModule, VQAv2Options
from lightning_gpv.tasks.samples import TaskSample


def vocabulary_samples(
    coco_root: str | None, vqa_root: str | None, vqa_image_dir: str | None = None
) -> list[TaskSample]:
    """Every training sample of ``train2014``: COCO captioning and classification, and VQAv2.

    VQA training samples draw their target among the frequent answers with Python's global ``random``
    (see :func:`datamodules.vqav2.training_answer`): seed it for a reproducible list.

    Args:
        coco_root: A COCO-format folder, or ``None``.
        vqa_root: A VQAv2-format folder, or ``None``.
        vqa_image_dir: The VQAv2 image folder pattern (default: ``vqa_root/../coco/images/{split}``).
    """
    modules: list[TaskDataModule] = []
    if coco_root:
        options = CocoOptions(tasks=("captioning", "classification"))
        modules.append(CocoDataModule(coco_root, options))
    if vqa_root:
        image_dir = vqa_image_dir or str(Path(vqa_root).parent / "coco" / "images" / "{split}")
        modules.append(VQAv2DataModule(vqa_root, VQAv2Options(image_dir)))
    samples: list[TaskSample] = []
    for dm in modules:
        data = dm.dataset("train2014", train=True)
        samples += [data.sample(i) for i in range(len(data))]
    return samples
