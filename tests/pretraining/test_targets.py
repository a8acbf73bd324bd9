"""Dense per-patch targets of the encoder pretraining pool."""

from __future__ import annotations

import numpy as np
import torch

from lightning_gpv.pretraining.targets import MIN_COVER, make_pool, scene_targets
from lightning_gpv.shapesworld.sample import SPARSE_STYLE


def test_scene_targets_label_patches_boxes_and_cells() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    big = np.zeros((40, 80), dtype=np.uint8)
    big[0:20, 0:40] = 1  # the top-left quarter: patches (0, 0), (0, 1) of a 2 x 4 ... grid 4 x 4
    tiny = np.zeros((40, 80), dtype=np.uint8)
    tiny[35:37, 75:77] = 1  # far below MIN_COVER of any patch, still owns its patch
    _, shape, color, boxes, fine = scene_targets(image, [big, tiny], [3, 5], [2, 7], side=32, grid=4, cells=2)
    assert shape.shape == (4, 4) and boxes.shape == (4, 4, 4) and fine.shape == (8, 8)
    assert (shape[:2, :2] == 3).all() and (color[:2, :2] == 2).all()
    assert shape[3, 3] == 5 and color[3, 3] == 7
    assert (shape[2:, :3] == 0).all() and (shape[:, 2:3] == 0).all()
    np.testing.assert_allclose(boxes[0, 0], [0.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(boxes[3, 3], [75 / 80, 35 / 40, 77 / 80, 37 / 40])
    assert (boxes[shape == 0] == 0).all()
    assert fine[:4, :4].all() and fine[4:, :4].sum() == 0
    assert 0 < MIN_COVER < 1


def test_pool_is_seeded_per_image_and_held_out_differs() -> None:
    a = make_pool(6, seed=3, styles=[SPARSE_STYLE], image_size=32, patch_size=8)
    b = make_pool(3, seed=3, styles=[SPARSE_STYLE], image_size=32, patch_size=8, start=3)
    assert torch.equal(a.images[3:], b.images) and torch.equal(a.boxes[3:], b.boxes)
    assert not torch.equal(a.images[:3], b.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (6, 32, 32, 3)
    assert (a.shape > 0).any(dim=(1, 2)).all()  # every scene has at least one labelled patch
