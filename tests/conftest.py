"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread: the machine's two cores are shared, and one thread is several
    times faster than two there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes_and_vocab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ShapesWorld (20 images, seed 0) and GPV-1's tiny vocabularies, built once per test session."""
    from lightning_gpv.build_vocab import build
    from lightning_gpv.shapesworld import make_shapes

    work = tmp_path_factory.mktemp("shapes_and_vocab")
    data = make_shapes(work / "data", num_images=20, seed=0, progress=False)
    build(work / "vocab", coco_root=str(data / "coco"), vqa_root=str(data / "vqav2"), tiny=True)
    return Path(data), work / "vocab"
