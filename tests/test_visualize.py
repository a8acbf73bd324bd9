"""Drawing helpers: geometry lands on the right pixels, inputs of every documented form are accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gpv.geometry.masks import Mask, polygons_to_mask
from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.samples import Prediction, Target, TaskSample
from lightning_gpv.visualize import (
    PALETTE,
    TARGET_COLOR,
    draw_prediction,
    draw_prediction_for,
    draw_sample,
    make_grid,
    mask_to_image,
    save_image,
    to_rgb,
)

GRAY = (100, 100, 100)


def _image(height: int = 40, width: int = 60) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GRAY
    return image


def _pixel(picture: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in picture.getpixel((x, y)))  # type: ignore[union-attr]


def test_plain_image_is_copied_at_scale() -> None:
    image = _image()
    picture = draw_prediction(image)
    assert picture.mode == "RGB" and picture.size == (60, 40)
    assert np.array_equal(np.asarray(picture), image)
    assert draw_prediction(image, scale=2.5).size == (150, 100)
    image[0, 0] = 0
    assert _pixel(picture, 0, 0) == GRAY  # the input is not shared


@pytest.mark.parametrize("scale", [1, 3])
def test_box_outline_on_its_border_pixels(scale: int) -> None:
    picture = draw_prediction(_image(), boxes=[[10, 5, 30, 25]], scale=scale, line_width=1)
    s = scale
    assert _pixel(picture, 10 * s, 5 * s) == PALETTE[0]  # top-left pixel of the box
    assert _pixel(picture, 30 * s - 1, 25 * s - 1) == PALETTE[0]  # bottom-right pixel
    assert _pixel(picture, 20 * s, 15 * s) == GRAY  # inside
    assert _pixel(picture, 30 * s, 15 * s) == GRAY  # right of the box


def test_boxes_ranked_by_score_with_threshold_and_max() -> None:
    boxes = [[0, 0, 10, 30], [20, 0, 30, 30], [40, 0, 50, 30]]
    scores = [0.2, 0.9, 0.5]
    picture = draw_prediction(_image(), boxes=boxes, scores=scores, max_boxes=2, line_width=1)
    # Bottom-right pixels (the labels sit at the top of boxes that touch the image's top).
    assert _pixel(picture, 29, 29) == PALETTE[0]  # best box, first colour
    assert _pixel(picture, 49, 29) == PALETTE[1]
    assert _pixel(picture, 9, 29) == GRAY  # third by score: not drawn
    picture = draw_prediction(_image(), boxes=boxes, scores=scores, score_threshold=0.6, line_width=1)
    assert _pixel(picture, 49, 29) == GRAY
    with pytest.raises(ValueError, match="scores"):
        draw_prediction(_image(), boxes=boxes, scores=[0.1])
    with pytest.raises(ValueError, match="labels"):
        draw_prediction(_image(), boxes=boxes, labels=["a"])


def test_labels_and_scores_are_written() -> None:
    plain = np.asarray(draw_prediction(_image(), boxes=[[10, 20, 50, 38]], line_width=1))
    labelled = np.asarray(
        draw_prediction(_image(), boxes=[[10, 20, 50, 38]], scores=[0.5], labels=["cat"], line_width=1)
    )
    assert (plain != labelled).any(axis=2)[:20].sum() > 20  # the label sits above the box


def _blended(color: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    return tuple(int(round(g * (1 - alpha) + c * alpha)) for g, c in zip(GRAY, color))  # type: ignore[return-value]


def test_raster_mask_fill_and_outline() -> None:
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 20:40] = True
    picture = draw_prediction(_image(), masks=[mask], mask_alpha=0.5)
    assert _pixel(picture, 30, 20) == _blended(PALETTE[0], 0.5)
    assert _pixel(picture, 20, 10) == PALETTE[0]  # boundary pixel
    assert _pixel(picture, 10, 5) == GRAY
    from_tensor = draw_prediction(_image(), masks=[torch.from_numpy(mask)], mask_alpha=0.5)
    assert np.array_equal(np.asarray(from_tensor), np.asarray(picture))
    with pytest.raises(ValueError):
        draw_prediction(_image(), masks=[np.zeros((10, 10), dtype=bool)])


@pytest.mark.parametrize(
    "form", ["array", "flat_list", "polygon_list", "mask_polygons", "mask_rle"], ids=lambda f: f
)
def test_mask_forms_fill_the_coco_rasterisation(form: str) -> None:
    polygon = np.array([[12.0, 6.0], [44.0, 9.0], [38.0, 33.0], [15.0, 30.0]])
    expected = polygons_to_mask([polygon], 40, 60)
    mask = {
        "array": polygon,
        "flat_list": [polygon.reshape(-1).tolist()],
        "polygon_list": [polygon],
        "mask_polygons": Mask.from_polygons([polygon], 40, 60),
        "mask_rle": Mask.from_array(expected),
    }[form]
    picture = np.asarray(draw_prediction(_image(), masks=[mask], mask_alpha=1.0, line_width=1))
    changed = (picture != np.array(GRAY)).any(axis=2)
    assert changed[expected].all()
    # Outside the rasterised polygon only the outline (within a pixel of the boundary) may change.
    padded = np.pad(expected, 1)
    grown = np.zeros_like(expected)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy : dy + 40, dx : dx + 60]
    assert not changed[~grown].any()


def test_mask_object_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="Mask of"):
        draw_prediction(_image(), masks=[Mask.from_array(np.ones((5, 5), dtype=bool))])


def test_points_single_and_per_point_colours() -> None:
    picture = draw_prediction(_image(), points=[[10.5, 10.5]], point_color=(255, 0, 0), point_radius=2)
    assert _pixel(picture, 10, 10) == (255, 0, 0)
    colors = [(255, 0, 0), (0, 0, 255)]
    picture = draw_prediction(
        _image(), points=[[10.5, 10.5], [40.5, 20.5]], point_color=colors, point_radius=2
    )
    assert _pixel(picture, 40, 20) == (0, 0, 255)
    with pytest.raises(ValueError, match="colours"):
        draw_prediction(_image(), points=[[1, 1]], point_color=colors)
    assert draw_prediction(_image(), points=np.zeros((0, 2))).size == (60, 40)


def test_text_and_title_bars_and_border() -> None:
    picture = draw_prediction(_image(), text="a " * 60, title="title")
    assert picture.width == 60 and picture.height > 40 + 20
    bordered = draw_prediction(_image(), border=(0, 255, 0))
    assert bordered.size == (68, 48) and _pixel(bordered, 1, 1) == (0, 255, 0)


def test_to_rgb_forms(tmp_path: Path) -> None:
    gray = np.full((4, 5), 7, dtype=np.uint8)
    assert to_rgb(gray).shape == (4, 5, 3)
    assert to_rgb(np.ones((4, 5), dtype=bool)).max() == 255
    assert to_rgb(np.full((4, 5, 3), 0.5)).max() == 128
    assert to_rgb(np.zeros((4, 5, 4), dtype=np.uint8)).shape == (4, 5, 3)
    chw = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    assert np.array_equal(to_rgb(chw), chw.transpose(1, 2, 0))
    assert to_rgb(torch.full((1, 4, 5), 0.25)).tolist()[0][0] == [64, 64, 64]
    path = save_image(_image(), tmp_path / "deep" / "x.png")
    assert path.exists()
    assert to_rgb(path).shape == (40, 60, 3)  # files: the processors' decoder
    assert to_rgb(str(path)).tolist() == load_image(path).tolist()
    assert to_rgb(Image.open(path)).shape == (40, 60, 3)
    with pytest.raises(ValueError):
        to_rgb(np.zeros((2, 2, 2), dtype=np.uint8))


def test_mask_to_image() -> None:
    mask = np.array([[True, False]])
    assert mask_to_image(mask, (1, 2, 3), (4, 5, 6)).tolist() == [[[1, 2, 3], [4, 5, 6]]]


def test_make_grid_layout() -> None:
    images = [_image(10, 10), Image.new("RGB", (10, 6)), _image(8, 10)]
    grid = make_grid(images, cols=2, pad=4)
    assert grid.size == (2 * 10 + 3 * 4, 2 * 10 + 3 * 4)
    assert make_grid(images).size == grid.size  # ceil(sqrt(3)) = 2 columns
    assert make_grid(images, cols=5).size == (3 * 10 + 4 * 4, 10 + 2 * 4)
    with pytest.raises(ValueError):
        make_grid([])


def _sample() -> TaskSample:
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 20:40] = True
    target = Target(text="the square", boxes=[[20, 10, 40, 30]], masks=[Mask.from_array(mask)])
    return TaskSample("res", [_image()], target=target, expression="the square", sample_id="s1")


def test_draw_sample_single_image() -> None:
    picture = draw_sample(_sample())
    assert picture.width == 60 and picture.height > 40
    sample = _sample()
    sample.region = np.array([0, 0, 10, 10], dtype=np.float32)
    assert draw_sample(sample, scale=2).width == 120


def test_draw_sample_multi_image_grid_and_selection(tmp_path: Path) -> None:
    path = save_image(_image(), tmp_path / "b.png")
    sample = TaskSample(
        "attcoseg",
        [_image(), path, _image()],
        target=Target(
            masks=[Mask.from_array(np.ones((40, 60), dtype=bool))], mask_image=[1], selected_images=[1]
        ),
        sample_id="g",
    )
    grid = draw_sample(sample)
    assert grid.width > 3 * 60
    assert draw_sample(sample, image_index=1).width == 68  # framed: selected
    with pytest.raises(IndexError):
        draw_sample(sample, image_index=3)


def test_draw_prediction_for_with_and_without_target() -> None:
    sample = _sample()
    prediction = Prediction(
        "res",
        "s1",
        text="<mask>",
        boxes=[[0, 0, 10, 10], [22, 12, 38, 28]],
        scores=[0.1, 0.8],
        masks=[Mask.from_polygons([[20, 10, 40, 10, 40, 30, 20, 30]], 40, 60)],
        dropped=["a bad token"],
    )
    with_target = np.asarray(draw_prediction_for(sample, prediction, max_boxes=1))
    without = np.asarray(draw_prediction_for(sample, prediction, show_target=False, max_boxes=1))
    assert (with_target[..., 1] == TARGET_COLOR[1]).sum() > (without[..., 1] == TARGET_COLOR[1]).sum()
    assert with_target.shape[1] == 60


def test_target_mask_outline_drawn_after_lines() -> None:
    """A target drawn after the prediction's lines (boxes) is not lost."""
    sample = _sample()
    prediction = Prediction("res", "s1", boxes=[[0, 0, 10, 10]])
    sample.target.boxes = np.zeros((0, 4), dtype=np.float32)
    sample.target.box_image = np.zeros(0, dtype=np.int64)
    picture = np.asarray(draw_prediction_for(sample, prediction))
    assert (picture == np.array(TARGET_COLOR)).all(axis=2).sum() >= 4 * 19  # the square's outline
