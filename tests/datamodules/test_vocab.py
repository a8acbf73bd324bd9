"""The training samples GPV-1's answer vocabulary is built from."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from datamodules.vocab import vocabulary_samples
from lightning_gpv.tasks.catalogue import Task


def test_vocabulary_samples_are_the_training_answers(shapes_root: Path) -> None:
    random.seed(0)
    samples = vocabulary_samples(str(shapes_root / "coco"), str(shapes_root / "vqav2"))
    tasks = Counter(s.task for s in samples)
    assert set(tasks) == {Task.CAPTIONING, Task.CLASSIFICATION, Task.VQA} and min(tasks.values()) > 0
    assert all(s.target.text for s in samples)  # training targets: one answer each
    random.seed(0)
    again = vocabulary_samples(str(shapes_root / "coco"), str(shapes_root / "vqav2"))
    assert [s.target.text for s in again] == [s.target.text for s in samples]  # the seed fixes the VQA draw
    only_coco = vocabulary_samples(str(shapes_root / "coco"), None)
    assert Task.VQA not in {s.task for s in only_coco}
