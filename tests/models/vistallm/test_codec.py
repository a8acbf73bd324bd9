"""CoordinateCodec as an object: argument checks, vocabulary, and codecs of different sizes side by side."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from lightning_gpv.geometry import Mask, mask_iou
from lightning_gpv.models.vistallm.codec import (
    BOX_SEP,
    MASK_SEP,
    PAPER_NUM_BINS,
    PAPER_NUM_MASK_POINTS,
    CoordinateCodec,
)
from lightning_gpv.tasks import Target, Task

W, H = 517.0, 333.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_bins": 1, "num_mask_points": 32}, "num_bins"),
        ({"num_bins": 0, "num_mask_points": 32}, "num_bins"),
        ({"num_bins": -5, "num_mask_points": 32}, "num_bins"),
        ({"num_bins": 64.0, "num_mask_points": 32}, "num_bins"),
        ({"num_bins": "64", "num_mask_points": 32}, "num_bins"),
        ({"num_bins": True, "num_mask_points": 32}, "num_bins"),
        ({"num_bins": None, "num_mask_points": 32}, "num_bins"),
        ({"num_bins": 64, "num_mask_points": 2}, "num_mask_points"),
        ({"num_bins": 64, "num_mask_points": 0}, "num_mask_points"),
        ({"num_bins": 64, "num_mask_points": 3.5}, "num_mask_points"),
    ],
)
def test_invalid_arguments_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"CoordinateCodec\.{field} must be an integer"):
        CoordinateCodec(**kwargs)  # type: ignore[arg-type]


def test_smallest_valid_codec_and_integer_normalisation() -> None:
    codec = CoordinateCodec(num_bins=2, num_mask_points=3)
    assert codec.added_tokens() == ["<c0>", "<c1>", BOX_SEP, MASK_SEP]
    numpy_ints = CoordinateCodec(num_bins=np.int64(64), num_mask_points=np.int32(32))  # type: ignore[arg-type]
    assert type(numpy_ints.num_bins) is int and type(numpy_ints.num_mask_points) is int
    assert numpy_ints == CoordinateCodec(num_bins=64, num_mask_points=32)


def test_no_default_sizes() -> None:
    with pytest.raises(TypeError):
        CoordinateCodec()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        CoordinateCodec(num_bins=64)  # type: ignore[call-arg]
    assert (PAPER_NUM_BINS, PAPER_NUM_MASK_POINTS) == (1000, 32)


def test_frozen_hashable_picklable_and_replace_checks() -> None:
    codec = CoordinateCodec(num_bins=64, num_mask_points=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        codec.num_bins = 1000  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(codec)) == codec
    assert len({codec, CoordinateCodec(64, 32), CoordinateCodec(1000, 32)}) == 2
    with pytest.raises(ValueError, match="num_mask_points"):
        dataclasses.replace(codec, num_mask_points=1)


def test_tokens_out_of_range_have_no_spelling() -> None:
    codec = CoordinateCodec(num_bins=64, num_mask_points=32)
    assert codec.coordinate_token(63) == "<c63>"
    assert len(codec.added_tokens()) == 66 and codec.added_tokens()[-2:] == [BOX_SEP, MASK_SEP]
    for bad in (-1, 64):
        with pytest.raises(ValueError, match="outside 0..63"):
            codec.coordinate_token(bad)
    with pytest.raises(ValueError, match="outside 0..63"):
        codec.format_group([1, 2, 64], "tokens")


@pytest.mark.parametrize("style", ["human", "tokens"])
def test_codecs_of_different_sizes_round_trip_their_own_format(style: str) -> None:
    rng = np.random.default_rng(0)
    coarse = CoordinateCodec(num_bins=64, num_mask_points=16)
    fine = CoordinateCodec(num_bins=1000, num_mask_points=32)
    boxes = (np.sort(rng.uniform(0, 1, (3, 2, 2)), axis=1) * [W, H]).reshape(3, 4)
    points = rng.uniform(0, 1, (2, 2)) * [W, H]
    texts = {}
    for codec in (coarse, fine):
        half_bin = np.array([codec.max_quantization_error(W), codec.max_quantization_error(H)])
        text = codec.format_boxes(boxes, W, H, style)  # type: ignore[arg-type]
        texts[codec.num_bins] = text
        parsed = codec.parse_boxes(text, W, H)
        assert parsed.dropped == [] and parsed.boxes.shape == (3, 4)
        assert np.all(np.abs(parsed.boxes - boxes).reshape(-1, 2) <= half_bin + 1e-3)
        parsed = codec.parse_points(codec.format_points(points, W, H, style), W, H)  # type: ignore[arg-type]
        assert parsed.dropped == [] and np.all(np.abs(parsed.points - points) <= half_bin + 1e-3)
        polygon = rng.uniform(0, 1, (codec.num_mask_points, 2)) * [W, H]
        parsed = codec.parse_masks(codec.format_masks([polygon], W, H, style), W, H)  # type: ignore[arg-type]
        assert parsed.dropped == [] and parsed.masks[0].shape == (codec.num_mask_points, 2)
    assert texts[64] != texts[1000]
    # The coarse codec's error bound is the larger one: its bins are 1000 / 64 times wider.
    assert coarse.max_quantization_error(W) == pytest.approx(fine.max_quantization_error(W) * 1000 / 64)


def test_a_codec_reports_what_another_codec_wrote() -> None:
    coarse = CoordinateCodec(num_bins=64, num_mask_points=16)
    fine = CoordinateCodec(num_bins=1000, num_mask_points=32)
    text = fine.format_boxes(np.array([[400.0, 10.0, 500.0, 300.0]]), W, H, "tokens")
    parsed = coarse.parse_boxes(text, W, H)  # bins above 63 do not exist for the coarse codec
    assert parsed.boxes.shape == (0, 4) and "out of range 0..63" in parsed.dropped[0]
    mask = fine.format_masks([np.full((32, 2), 5.0)], W, H)
    assert coarse.parse_masks(mask, W, H).dropped == ["group 1: 32 points, expected 16 (kept)"]


def test_answers_follow_the_codec_sizes() -> None:
    mask = np.zeros((80, 100), dtype=bool)
    mask[10:50, 20:70] = True
    target = Target(boxes=[[20, 10, 70, 50]], masks=[Mask.from_array(mask)])
    sizes = [(80, 100)]
    for codec in (CoordinateCodec(num_bins=64, num_mask_points=12), CoordinateCodec(1000, 32)):
        text = codec.serialize_answer(Task.RES, target, sizes)
        assert text.count("<c") == 2 * codec.num_mask_points
        pred = codec.parse_prediction(Task.RES, text, sizes, sample_id="s")
        assert pred.dropped == [] and len(pred.masks[0].polygons[0]) == codec.num_mask_points
        assert mask_iou(pred.masks[0].to_array(), mask) > 0.85
        pred = codec.parse_prediction(Task.REC, codec.serialize_answer(Task.REC, target, sizes), sizes)
        half_bin = codec.max_quantization_error(100)
        np.testing.assert_allclose(pred.boxes, target.boxes, atol=half_bin + 1e-4)
        human = codec.serialize_answer(Task.REC, target, sizes, style="human")
        assert human == codec.format_boxes(target.boxes, 100, 80)
