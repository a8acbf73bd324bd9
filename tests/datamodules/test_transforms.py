"""Geometry-consistent transforms: boxes, masks and points move with the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules import transforms as T
from lightning_gpv.geometry.masks import Mask, box_of_mask
from lightning_gpv.tasks.samples import Target, TaskSample


def scene(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> T.ImageTargets:
    """An image with one rectangle object: its mask, its tight box and its centre point."""
    image = np.full((h, w, 3), 30, np.uint8)
    image[y0:y1, x0:x1] = 220
    mask = np.zeros((1, h, w), bool)
    mask[0, y0:y1, x0:x1] = True
    box = np.array([[x0, y0, x1, y1]], np.float32)
    return T.ImageTargets(image, box, mask, np.array([[(x0 + x1) / 2, (y0 + y1) / 2]], np.float32))


@st.composite
def scenes(draw: st.DrawFn) -> T.ImageTargets:
    h, w = draw(st.integers(8, 64)), draw(st.integers(8, 64))
    x0, y0 = draw(st.integers(0, w - 4)), draw(st.integers(0, h - 4))
    x1, y1 = draw(st.integers(x0 + 3, w)), draw(st.integers(y0 + 3, h))
    return scene(h, w, x0, y0, x1, y1)


def mask_box(x: T.ImageTargets) -> np.ndarray:
    return box_of_mask(x.masks[0])


@settings(max_examples=40, deadline=None)
@given(scenes(), st.integers(4, 96), st.integers(4, 96))
def test_resize_moves_boxes_and_masks_together(x: T.ImageTargets, h: int, w: int) -> None:
    y = T.resize(x, h, w)
    assert y.image.shape == (h, w, 3) and y.masks.shape == (1, h, w)
    sx, sy = w / x.width, h / x.height
    np.testing.assert_allclose(y.boxes[0], x.boxes[0] * np.array([sx, sy, sx, sy]), rtol=1e-5)
    if y.masks[0].any():
        assert np.abs(mask_box(y) - y.boxes[0]).max() <= 1.0 + 1e-4  # nearest neighbour: within a pixel


@settings(max_examples=40, deadline=None)
@given(scenes())
def test_flip_pad_crop_are_exact(x: T.ImageTargets) -> None:
    f = T.hflip(x)
    np.testing.assert_array_equal(mask_box(f), f.boxes[0])
    assert f.points[0, 0] == pytest.approx(x.width - x.points[0, 0])
    np.testing.assert_array_equal(T.hflip(f).image, x.image)
    p = T.pad(x, 3, 5, x.height + 7, x.width + 9, (0, 0, 0))
    np.testing.assert_array_equal(mask_box(p), p.boxes[0])
    s = T.expand2square(x)
    assert s.height == s.width == max(x.height, x.width)
    np.testing.assert_array_equal(mask_box(s), s.boxes[0])
    c = T.crop(x, x.boxes[0])
    assert c.masks[0].all() and (c.boxes[0] == [0, 0, c.width, c.height]).all()


def test_crop_clips_cut_targets() -> None:
    x = scene(20, 30, 5, 5, 25, 15)
    c = T.crop(x, (10, 0, 20, 20))
    np.testing.assert_array_equal(c.boxes[0], [0, 5, 10, 15])
    np.testing.assert_array_equal(mask_box(c), c.boxes[0])
    with pytest.raises(ValueError, match="empty"):
        T.crop(x, (40, 0, 50, 5))


def test_paper_recipes() -> None:
    x = scene(30, 50, 10, 5, 40, 25)
    g = T.gpv1_resize(x)
    assert g.image.shape == (480, 640, 3)
    np.testing.assert_allclose(g.boxes[0], [128, 80, 512, 400])
    for mode, box in [
        ("expand2square", [44.8, 67.2, 179.2, 156.8]),
        ("squash", [44.8, 37.333, 179.2, 186.667]),
    ]:
        e = T.eva_preprocess(x, 224, mode)  # type: ignore[arg-type]
        assert e.image.shape == (224, 224, 3)
        np.testing.assert_allclose(e.boxes[0], box, rtol=1e-4)
    cc = T.eva_preprocess(x, 224, "center_crop")
    assert cc.image.shape == (224, 224, 3) and cc.masks.shape == (1, 224, 224)
    np.testing.assert_allclose(T.normalized_boxes(g), [[0.2, 1 / 6, 0.8, 5 / 6]], rtol=1e-5)
    crop = T.gpv1_classification_crop(x, np.array([10, 5, 40, 25]))
    assert crop.image.shape == (480, 640, 3) and crop.masks[0].all()


def test_to_tensor() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255
    t = T.to_tensor(img, T.CLIP_MEAN, T.CLIP_STD)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[0, 0, 0].item() == pytest.approx((1 - T.CLIP_MEAN[0]) / T.CLIP_STD[0], rel=1e-5)
    assert t[1, 0, 0].item() == pytest.approx(-T.CLIP_MEAN[1] / T.CLIP_STD[1], rel=1e-5)


def test_targets_of_sample(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    path = build.image(tmp_path / "a.png", 20, 30)
    arr = np.zeros((20, 30), bool)
    arr[2:6, 3:9] = True
    target = Target(
        boxes=[[3, 2, 9, 6], [0, 0, 1, 1]],
        box_image=[0, 1],
        masks=[Mask.from_array(arr), Mask.from_array(arr[:10])],
        mask_image=[0, 1],
    )
    sample = TaskSample("attcoseg", [str(path), np.zeros((10, 30, 3), np.uint8)], target)
    x = T.targets_of(sample, 0)
    assert x.image.shape == (20, 30, 3) and x.boxes.shape == (1, 4) and x.masks.shape == (1, 20, 30)
    np.testing.assert_array_equal(box_of_mask(x.masks[0]), x.boxes[0])
    assert T.targets_of(sample, 1).masks.shape == (1, 10, 30)
    bad = TaskSample("res", [str(path)], Target(masks=[Mask.from_array(arr[:10])]))
    with pytest.raises(ValueError, match="mask is 10x30"):
        T.targets_of(bad)
    with pytest.raises(ValueError, match="masks must be"):
        T.ImageTargets(np.zeros((4, 4, 3), np.uint8), masks=np.zeros((1, 3, 4), bool))
