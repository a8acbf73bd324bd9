"""CoordinateCodec quantization: convention, shapes, clamping, round-trip error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_gpv.models.vistallm.codec import PAPER_NUM_BINS, PAPER_NUM_MASK_POINTS, CoordinateCodec

CODEC = CoordinateCodec(num_bins=PAPER_NUM_BINS, num_mask_points=PAPER_NUM_MASK_POINTS)
# The paper's codec; the tests call its methods by these short names.
NUM_BINS = CODEC.num_bins
quantize, dequantize = CODEC.quantize, CODEC.dequantize
quantize_value, dequantize_value = CODEC.quantize_value, CODEC.dequantize_value
max_quantization_error = CODEC.max_quantization_error

EPS = 1e-3  # float32 slack on top of half a bin, in pixels


def test_num_bins_is_1000() -> None:
    assert NUM_BINS == PAPER_NUM_BINS == 1000


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        (0.0, 640.0, 0),
        (0.6399, 640.0, 0),
        (0.64, 640.0, 1),
        (320.0, 640.0, 500),
        (639.99, 640.0, 999),
        (640.0, 640.0, 999),  # the right/bottom edge falls into the last bin
        (-5.0, 640.0, 0),  # clamped
        (1e9, 640.0, 999),  # clamped
        (math.nan, 640.0, 0),
        (math.inf, 640.0, 999),
        (-math.inf, 640.0, 0),
    ],
)
def test_quantize_value_convention(value: float, size: float, expected: int) -> None:
    assert quantize_value(value, size) == expected


def test_dequantize_value_is_bin_centre() -> None:
    assert dequantize_value(0, 1000.0) == pytest.approx(0.5)
    assert dequantize_value(999, 1000.0) == pytest.approx(999.5)
    assert dequantize_value(500, 640.0) == pytest.approx(320.32)
    assert dequantize_value(-3, 1000.0) == pytest.approx(0.5)  # clamped
    assert dequantize_value(5000, 1000.0) == pytest.approx(999.5)
    assert max_quantization_error(640.0) == pytest.approx(0.32)


def test_num_bins_parameter() -> None:
    ten = CoordinateCodec(num_bins=10, num_mask_points=3)
    assert ten.quantize_value(99.0, 100.0) == 9
    assert ten.quantize_value(100.0, 100.0) == 9
    assert ten.dequantize_value(9, 100.0) == pytest.approx(95.0)
    two = CoordinateCodec(num_bins=2, num_mask_points=3)
    bins = two.quantize(np.array([0.0, 50.0, 100.0, 100.0]), 100.0, 100.0)
    np.testing.assert_array_equal(bins, [0, 1, 1, 1])


def test_x_uses_width_and_y_uses_height() -> None:
    bins = quantize(np.array([100.0, 100.0, 200.0, 50.0]), width=200.0, height=400.0)
    np.testing.assert_array_equal(bins, [500, 250, 999, 125])


@pytest.mark.parametrize("shape", [(4,), (7, 4), (2, 3, 2), (5, 64), (0, 4)])
def test_numpy_round_trip_within_half_bin(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    width, height = 640.0, 427.0
    coords = rng.uniform(0, 1, size=shape) * np.resize([width, height], shape[-1])
    bins = quantize(coords, width, height)
    assert bins.dtype == np.int64 and bins.shape == shape
    assert bins.size == 0 or (bins.min() >= 0 and bins.max() <= NUM_BINS - 1)
    back = dequantize(bins, width, height)
    assert back.dtype == np.float32 and back.shape == shape
    err = np.abs(back - coords)
    assert np.all(err[..., 0::2] <= width / 2000 + EPS)
    assert np.all(err[..., 1::2] <= height / 2000 + EPS)


def test_torch_matches_numpy_and_keeps_kind() -> None:
    rng = np.random.default_rng(1)
    coords = rng.uniform(-50, 700, size=(6, 64))
    expected = quantize(coords, 640, 480)
    bins = quantize(torch.from_numpy(coords), 640, 480)
    assert isinstance(bins, torch.Tensor) and bins.dtype == torch.long
    np.testing.assert_array_equal(bins.numpy(), expected)
    back = dequantize(bins, 640, 480)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy(), dequantize(expected, 640, 480), rtol=0, atol=1e-4)
    assert quantize(torch.zeros(0, 4), 5, 5).shape == (0, 4)


def test_float32_and_integer_inputs() -> None:
    box = torch.tensor([10, 20, 30, 40])
    np.testing.assert_array_equal(quantize(box, 100, 100).numpy(), [100, 200, 300, 400])
    box32 = np.array([10, 20, 30, 40], dtype=np.float32)
    np.testing.assert_array_equal(quantize(box32, 100, 100), [100, 200, 300, 400])


def test_out_of_image_and_non_finite_are_clamped() -> None:
    coords = np.array([-10.0, 1e12, math.nan, -math.inf, math.inf, 480.0])
    np.testing.assert_array_equal(quantize(coords, 640, 480), [0, 999, 0, 0, 999, 999])
    t = torch.tensor(coords)
    np.testing.assert_array_equal(quantize(t, 640, 480).numpy(), [0, 999, 0, 0, 999, 999])
    np.testing.assert_allclose(dequantize(np.array([-7, 5000]), 1000, 1000), [0.5, 999.5])


def test_per_image_sizes_broadcast() -> None:
    boxes = np.array([[50.0, 50.0, 100.0, 100.0], [50.0, 50.0, 100.0, 100.0]])
    widths = np.array([[100.0], [200.0]])
    heights = np.array([[200.0], [100.0]])
    np.testing.assert_array_equal(
        quantize(boxes, widths, heights), [[500, 250, 999, 500], [250, 500, 500, 999]]
    )
    tb = quantize(torch.from_numpy(boxes), torch.from_numpy(widths), torch.from_numpy(heights))
    np.testing.assert_array_equal(tb.numpy(), [[500, 250, 999, 500], [250, 500, 500, 999]])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_invalid_sizes_raise(bad: float) -> None:
    with pytest.raises(ValueError):
        quantize(np.zeros(4), bad, 10.0)
    with pytest.raises(ValueError):
        dequantize(np.zeros(4, np.int64), 10.0, bad)
    with pytest.raises(ValueError):
        quantize_value(1.0, bad)


def test_odd_last_dim_and_bad_num_bins_raise() -> None:
    with pytest.raises(ValueError):
        quantize(np.zeros(3), 10, 10)
    with pytest.raises(ValueError):
        dequantize(torch.zeros(2, 5, dtype=torch.long), 10, 10)
    with pytest.raises(ValueError):
        CoordinateCodec(num_bins=0, num_mask_points=3)
    with pytest.raises(ValueError):
        quantize(np.float64(1.0), 10, 10)


sizes = st.floats(min_value=1.0, max_value=1e5, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(size=sizes, fraction=st.floats(min_value=0.0, max_value=1.0), num_bins=st.sampled_from([1000, 100, 7]))
def test_round_trip_error_at_most_half_a_bin(size: float, fraction: float, num_bins: int) -> None:
    value = fraction * size
    codec = CoordinateCodec(num_bins=num_bins, num_mask_points=3)
    b = codec.quantize_value(value, size)
    assert 0 <= b <= num_bins - 1
    assert abs(codec.dequantize_value(b, size) - value) <= size / (2 * num_bins) * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(
    width=sizes,
    height=sizes,
    fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=64).filter(
        lambda f: len(f) % 2 == 0
    ),
)
def test_array_round_trip_property(width: float, height: float, fractions: list[float]) -> None:
    coords = np.array(fractions) * np.resize([width, height], len(fractions))
    back = dequantize(quantize(coords, width, height), width, height).astype(np.float64)
    tol = np.resize([width, height], len(fractions)) / 2000
    assert np.all(np.abs(back - coords) <= tol * (1 + 1e-6) + 1e-7 * np.maximum(width, height))


@settings(max_examples=100, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True), size=sizes)
def test_quantize_always_in_range(value: float, size: float) -> None:
    assert 0 <= quantize_value(value, size) <= NUM_BINS - 1


@settings(max_examples=100, deadline=None)
@given(a=st.floats(min_value=-10, max_value=1e4), b=st.floats(min_value=-10, max_value=1e4), size=sizes)
def test_quantize_is_monotonic(a: float, b: float, size: float) -> None:
    lo, hi = min(a, b), max(a, b)
    assert quantize_value(lo, size) <= quantize_value(hi, size)
