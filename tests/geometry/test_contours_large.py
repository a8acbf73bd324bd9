"""Large masks (up to 1000x1000): bounding box, thinned outlines and adaptive sampling with bounded cost."""

import cv2
import numpy as np
import pytest

from lightning_gpv.geometry import (
    contour_iou,
    largest_outline,
    mask_outlines,
    sample_contour,
    sample_contours,
)
from lightning_gpv.geometry import contours as contours_module
from lightning_gpv.geometry.contours import _tagged_curve
from lightning_gpv.geometry.outlines import _bounding_box, shoelace


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def _upscaled(mask: np.ndarray, side: int = 900, size: int = 1000) -> np.ndarray:
    """The mask's object scaled (nearest neighbour) to a longest side of ``side`` px at (50, 50) in a
    ``size x size`` image."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    scale = side / max(w, h)
    obj = cv2.resize(
        mask[y : y + h, x : x + w].view(np.uint8),
        (round(w * scale), round(h * scale)),
        interpolation=cv2.INTER_NEAREST,
    )
    canvas = np.zeros((size, size), bool)
    canvas[50 : 50 + obj.shape[0], 50 : 50 + obj.shape[1]] = obj > 0
    return canvas


def _downscaled(mask: np.ndarray, factor: int) -> np.ndarray:
    h, w = mask.shape
    return cv2.resize(mask.astype(np.float32), (w // factor, h // factor), interpolation=cv2.INTER_AREA) > 0.5


@pytest.fixture(scope="module")
def large_silhouettes() -> list[np.ndarray]:
    silhouettes = pytest.importorskip("lightning_gpv.geometry.silhouettes").real_silhouettes()
    picks = [
        silhouettes["horse"][0],
        silhouettes["camera"][0],
        *silhouettes["astronaut"],
        silhouettes["clock"][0],
    ]
    return [_upscaled(m) for m in picks]


# --- bounding box and thinned outlines ---------------------------------------------------------------------


def test_bounding_box_matches_opencv():
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), np.uint8), np.ones((1, 1), np.uint8), np.ones((40, 3), np.uint8)]
    for _ in range(200):
        h, w = rng.integers(1, 70, 2)
        mask = np.zeros((h, w), np.uint8)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.uniform(0.01, 1.0)
        masks.append(mask * np.uint8(rng.choice([1, 255])))
    big = np.zeros((1000, 1000), np.uint8)
    big[999, 0] = big[3, 999] = 1
    masks += [big, _disk(1000, 1000, 300, 700, 200).view(np.uint8)]
    for mask in masks:
        box = _bounding_box(mask)
        expected = cv2.boundingRect(mask)
        assert (box or (0, 0, 0, 0)) == expected


@pytest.mark.parametrize("max_points", [1, 7, 64, 512, 10_000])
def test_thinned_outline_is_every_sth_point_of_the_full_outline(max_points, large_silhouettes):
    for mask in (*large_silhouettes[:2], _disk(80, 90, 40, 45, 30)):
        full = largest_outline(mask)
        thinned = largest_outline(mask, max_points)
        step = -(-len(full) // max_points)
        np.testing.assert_array_equal(thinned, full[::step])
        assert len(thinned) <= max_points


def test_outlines_of_column_strided_and_uint8_views_agree(large_silhouettes):
    mask = large_silhouettes[0]
    reference = mask_outlines(mask)
    for view in (np.ascontiguousarray(mask.T).T, mask.astype(np.uint8) * 255):
        assert all(np.array_equal(a, b) for a, b in zip(mask_outlines(view), reference, strict=True))


def test_tagged_curve_keeps_indices_and_moves_points_by_a_few_ulps():
    rng = np.random.default_rng(1)
    for k in (3, 100, 512, 5000):
        dense = rng.uniform(-5, 1000, (k, 2))
        curve, bits = _tagged_curve(dense)
        raw = curve.view(np.int32).reshape(k, 2)
        low = (1 << bits) - 1
        np.testing.assert_array_equal((raw[:, 0] & low) | ((raw[:, 1] & low) << bits), np.arange(k))
        assert np.abs(curve.reshape(k, 2) - dense).max() < 2.0**bits * np.spacing(np.float32(1000))


# --- adaptive sampling of large masks ----------------------------------------------------------------------


@pytest.mark.parametrize("num_points", [16, 32, 64])
def test_large_disk(num_points):
    radius = 450
    big = _disk(1000, 1000, 500, 500, radius)
    points = sample_contour(big, num_points)
    assert points.shape == (num_points, 2) and points.dtype == np.float32
    assert shoelace(points.astype(np.float64)) > 0
    # Refined vertices lie between the circle and the circumscribed N-gon's corners, R / cos(pi / N).
    r = np.hypot(points[:, 0] - 500, points[:, 1] - 500)
    assert (r > radius - 1).all() and (r < radius / np.cos(np.pi / num_points) + 1).all()
    uniform = sample_contour(big, num_points, "uniform")
    assert np.abs(np.hypot(uniform[:, 0] - 500, uniform[:, 1] - 500) - radius).max() < 1.0
    small = _disk(250, 250, 125, 125, radius / 4)
    assert contour_iou(big, num_points) == pytest.approx(contour_iou(small, num_points), abs=0.002)


@pytest.mark.parametrize("num_points", [16, 32, 64])
def test_large_silhouettes_match_their_downscaled_copies(num_points, large_silhouettes):
    big, small = [], []
    for mask in large_silhouettes:
        points = sample_contour(mask, num_points)
        assert points.shape == (num_points, 2) and np.isfinite(points).all()
        assert shoelace(points.astype(np.float64)) > 0
        big.append(contour_iou(mask, num_points))
        small.append(contour_iou(_downscaled(mask, 4), num_points))
    # Single outlines differ by up to a few points either way (the previous, unthinned sampler too), the mean
    # does not.
    assert np.mean(big) == pytest.approx(np.mean(small), abs=0.01)
    assert min(np.subtract(big, small)) > -0.05


def test_adaptive_vertices_before_refinement_are_outline_points(monkeypatch, large_silhouettes):
    # Without line refinement the points are Douglas-Peucker vertices: points of the full-resolution outline.
    monkeypatch.setattr(contours_module, "_refine", lambda dense, idx: dense[idx])
    for mask in large_silhouettes[:3]:
        outline = largest_outline(mask).astype(np.float32)
        points = sample_contour(mask, 32)
        dist = [abs(cv2.pointPolygonTest(outline, (float(x), float(y)), True)) for x, y in points]
        assert max(dist) < 1e-3


def test_adaptive_cost_is_bounded_by_the_number_of_points(monkeypatch, large_silhouettes):
    seen = []
    dp_indices = contours_module._dp_indices
    monkeypatch.setattr(
        contours_module, "_dp_indices", lambda dense, n: seen.append(len(dense)) or dp_indices(dense, n)
    )
    disk = _disk(1000, 1000, 500, 500, 450)
    for num_points in (16, 32, 64):
        for mask in (disk, large_silhouettes[1]):
            seen.clear()
            assert sample_contour(mask, num_points).shape == (num_points, 2)
            assert seen and seen[0] <= 16 * num_points < len(largest_outline(mask))


def test_sample_contours_thins_each_part_like_sample_contour(large_silhouettes):
    mask = large_silhouettes[0]
    parts = sample_contours(mask, 32)
    np.testing.assert_array_equal(parts[0], sample_contour(mask, 32))
    two = mask | _disk(1000, 1000, 900, 900, 60)
    assert sum(len(p) for p in sample_contours(two, 48)) == 48


def test_long_sparse_polygon_keeps_its_corners():
    square = np.array([[0, 0], [5000, 0], [5000, 5000], [0, 5000]], float)
    points = contours_module.sample_polygon(square, 8)
    assert points.shape == (8, 2)
    for corner in square:
        assert np.hypot(*(points - corner).T).min() < 1e-3
