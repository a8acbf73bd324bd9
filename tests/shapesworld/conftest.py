"""A small ShapesWorld set shared by the ShapesWorld tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_gpv.shapesworld import make_shapes

NUM_IMAGES = 24
SEED = 3


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a ShapesWorld set with 24 images, seed 3."""
    return make_shapes(tmp_path_factory.mktemp("shapes") / "world", NUM_IMAGES, SEED, progress=False)
