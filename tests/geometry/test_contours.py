"""Tests for lightning_gpv.geometry.contours and upper_bound: sampling N points on mask outlines."""

import cv2
import numpy as np
import pytest

from lightning_gpv.geometry import (
    angle_scores,
    box_of_mask,
    contour_iou,
    contour_upper_bound,
    largest_outline,
    mask_iou,
    polygon_to_mask,
    polygons_to_mask,
    resample_closed,
    sample_contour,
    sample_contours,
    sample_polygon,
)
from lightning_gpv.geometry.outlines import shoelace

METHODS = ("uniform", "paper", "adaptive")


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _star(h: int = 80, w: int = 90) -> np.ndarray:
    t = np.arange(10) * np.pi / 5
    radius = np.where(np.arange(10) % 2 == 0, 35.0, 14.0)
    return polygon_to_mask(np.stack([45 + radius * np.sin(t), 40 - radius * np.cos(t)], axis=1), h, w)


def _irregular_star() -> np.ndarray:
    """A 10-vertex star with uneven tips, so evenly spaced points miss its vertices."""
    t = np.arange(10) * np.pi / 5 + 0.3
    radius = np.array([38, 12, 30, 15, 36, 10, 26, 14, 33, 12], float)
    return polygon_to_mask(np.stack([45 + radius * np.sin(t), 45 - radius * np.cos(t)], axis=1), 90, 90)


@pytest.fixture(scope="module")
def silhouettes() -> dict[str, tuple[np.ndarray, ...]]:
    return pytest.importorskip("lightning_gpv.geometry.silhouettes").real_silhouettes()


# --- shape, count, order -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("num_points", [3, 16, 32, 100])
def test_exactly_n_float32_points(method, num_points):
    for mask in (_disk(64, 64, 30, 34, 20), _star(), _rect(40, 50, 5, 6, 45, 20)):
        points = sample_contour(mask, num_points, method)
        assert points.shape == (num_points, 2) and points.dtype == np.float32
        assert np.isfinite(points).all()


@pytest.mark.parametrize("method", METHODS)
def test_points_are_clockwise_on_screen(method, silhouettes):
    for mask in (_disk(64, 64, 30, 34, 20), _star(), silhouettes["horse"][0], *silhouettes["text"][:5]):
        assert shoelace(sample_contour(mask, 32, method).astype(np.float64)) > 0


def test_uniform_starts_at_top_left_pixel_and_is_evenly_spaced():
    mask = _rect(40, 60, 20, 10, 50, 30)  # columns 20..49, rows 10..29
    points = sample_contour(mask, 20, "uniform").astype(np.float64)
    assert np.hypot(*(points[0] - (20, 10))) < 0.5
    assert points[1, 1] < 10.5 and points[1, 0] > points[0, 0]  # heads right along the top edge
    steps = np.hypot(*np.diff(np.vstack([points, points[:1]]), axis=0).T)
    assert steps.std() < 0.1 * steps.mean()  # the outline's corners are cut by < 1 px


@pytest.mark.parametrize("method", METHODS)
def test_order_is_consistent_under_translation(method, silhouettes):
    # Same shape elsewhere in a bigger image: the same points, in the same order, shifted.
    for mask in (_star(), silhouettes["horse"][0], silhouettes["coins"][3]):
        moved = np.pad(mask, ((7, 3), (13, 0)))
        np.testing.assert_allclose(
            sample_contour(moved, 32, method), sample_contour(mask, 32, method) + (13, 7), atol=1e-3
        )


def test_input_dtypes_agree():
    mask = _star()
    ref = sample_contour(mask, 24)
    for other in (mask.astype(np.uint8) * 255, mask.astype(np.float32), mask.astype(np.int64)):
        np.testing.assert_array_equal(sample_contour(other, 24), ref)


# --- points on the boundary --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["uniform", "paper"])
def test_uniform_and_paper_points_lie_on_the_outline(method, silhouettes):
    for mask in (silhouettes["horse"][0], silhouettes["camera"][0], _disk(64, 64, 30, 34, 20)):
        outline = largest_outline(mask).astype(np.float32)
        for x, y in sample_contour(mask, 32, method):
            assert abs(cv2.pointPolygonTest(outline, (float(x), float(y)), True)) < 1e-3


def test_disk_points_are_on_the_circle():
    for method in METHODS:
        points = sample_contour(_disk(100, 100, 50, 50, 30), 32, method)
        radius = np.hypot(points[:, 0] - 50, points[:, 1] - 50)
        assert np.abs(radius - 30).max() < 1.0, method


def test_adaptive_points_stay_near_the_outline(silhouettes):
    # Line refinement may move a vertex off the outline (by at most half its shorter edge + 1 px) so that the
    # polygon balances area, but points stay close to the boundary.
    for mask in [m for masks in silhouettes.values() for m in masks]:
        outline = largest_outline(mask).astype(np.float32)
        x0, y0, x1, y1 = box_of_mask(mask)
        points = sample_contour(mask, 32)
        dist = np.array([abs(cv2.pointPolygonTest(outline, (float(x), float(y)), True)) for x, y in points])
        assert np.median(dist) < 2.0
        assert dist.max() < 1.0 + 0.06 * np.hypot(x1 - x0, y1 - y0)


def test_points_are_clipped_to_the_image():
    mask = np.ones((20, 30), bool)
    for method in METHODS:
        points = sample_contour(mask, 16, method)
        assert (points >= 0).all() and (points[:, 0] <= 30).all() and (points[:, 1] <= 20).all()
        assert mask_iou(polygon_to_mask(points, 20, 30), mask) >= 0.99


# --- the paper's Algorithm 1 -------------------------------------------------------------------------------


def test_angle_scores_hand_computed_square():
    # Corners and edge midpoints of a 2x2 square. At a corner p_i, l1 = p_i - p_{i-1} runs along one edge and
    # l2 = p_{i+1} - p_{i-1} cuts the corner diagonally: 45 degrees. At a midpoint both lie on one line: 0.
    square8 = np.array([[0, 0], [1, 0], [2, 0], [2, 1], [2, 2], [1, 2], [0, 2], [0, 1]], float)
    np.testing.assert_allclose(angle_scores(square8), [45, 0, 45, 0, 45, 0, 45, 0], atol=1e-9)
    # A right-angled zig-zag: l1 = (1, 0), l2 = (1, 1) -> 45; l1 = (0, 1), l2 = (-1, 1) -> 45;
    # l1 = (-1, 0), l2 = (-1, -1) -> 45; l1 = (0, -1), l2 = (1, -1) -> 45.
    np.testing.assert_allclose(angle_scores([[0, 0], [1, 0], [1, 1], [0, 1]]), [45, 45, 45, 45])
    # theta is measured at p_{i-1}: p_i = (4, 1) after p_{i-1} = (0, 0), with p_{i+1} = (4, 0): atan(1/4).
    np.testing.assert_allclose(angle_scores([[0, 0], [4, 1], [4, 0]])[1], np.degrees(np.arctan2(1, 4)))


def test_paper_keeps_the_corners_of_a_square():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    # M = 8 dense points are the corners and edge midpoints; the 4 largest angles are the corners, in order.
    np.testing.assert_allclose(sample_polygon(square, 4, "paper", num_dense=8), square)


def test_paper_is_algorithm_1_on_a_mask(silhouettes):
    mask, n, m = silhouettes["coins"][0], 32, 500
    dense = resample_closed(largest_outline(mask), m)
    theta = angle_scores(dense)
    points = sample_contour(mask, n, "paper", num_dense=m)
    idx = [int(np.argmin(np.hypot(*(dense - p).T))) for p in points]
    np.testing.assert_allclose(points, dense[idx], atol=1e-4)  # the points are dense points
    assert idx == sorted(idx)  # in contour order
    assert theta[idx].min() >= np.delete(theta, idx).max()  # with the N largest angles


def test_paper_needs_m_at_least_n():
    with pytest.raises(ValueError, match="num_dense"):
        sample_contour(_star(), 32, "paper", num_dense=16)


# --- adaptive quality --------------------------------------------------------------------------------------


def test_adaptive_keeps_sharp_corners():
    rect = _rect(60, 100, 10, 20, 90, 35)  # long thin box: 4 corners suffice
    assert contour_iou(rect, 4, "adaptive") >= 0.98
    assert contour_iou(rect, 4, "uniform") < 0.9
    star = _irregular_star()  # 10 vertices, 10 points
    assert contour_iou(star, 10, "adaptive") >= 0.97
    assert contour_iou(star, 10, "uniform") < 0.9
    assert contour_iou(star, 10, "paper") < 0.7


def test_adaptive_beats_uniform_by_3_points_on_real_silhouettes(silhouettes):
    masks = [m for ms in silhouettes.values() for m in ms]
    assert len(masks) >= 60
    scores = {method: 100 * contour_upper_bound(masks, 32, method) for method in METHODS}
    assert scores["adaptive"] >= scores["uniform"] + 3.0, scores
    assert scores["adaptive"] >= 95.0, scores
    assert scores["paper"] < scores["uniform"] - 5.0, scores  # the literal algorithm trips on staircases


def test_adaptive_beats_uniform_on_each_hard_silhouette(silhouettes):
    for name in ("horse", "camera"):
        mask = silhouettes[name][0]
        assert contour_iou(mask, 32, "adaptive") > contour_iou(mask, 32, "uniform") + 0.05, name


# --- parts, holes, tiny and empty masks --------------------------------------------------------------------


def test_sample_contour_takes_the_largest_component():
    big, small = _disk(60, 100, 25, 30, 18), _disk(60, 100, 75, 30, 8)
    points = sample_contour(big | small, 32)
    assert (points[:, 0] < 50).all()
    np.testing.assert_array_equal(points, sample_contour(big, 32))


def test_sample_contours_splits_points_by_perimeter():
    big, small = _disk(60, 100, 25, 30, 18), _disk(60, 100, 75, 30, 8)
    parts = sample_contours(big | small, 32)
    assert [len(p) for p in parts] == [21, 11]  # 4 each + 24 shared 18:8 by perimeter (17 + 7), largest first
    assert all(p.dtype == np.float32 and shoelace(p.astype(np.float64)) > 0 for p in parts)
    assert mask_iou(polygons_to_mask(parts, 60, 100), big | small) >= 0.97
    twins = sample_contours(_disk(40, 80, 20, 20, 10) | _disk(40, 80, 60, 20, 10), 32, "uniform")
    assert [len(p) for p in twins] == [16, 16]


def test_sample_contours_drops_the_smallest_parts_when_the_budget_is_short():
    mask = _disk(60, 120, 20, 30, 15) | _disk(60, 120, 60, 30, 10) | _disk(60, 120, 100, 30, 5)
    assert [len(p) for p in sample_contours(mask, 8, min_points_per_part=4)] == [4, 4]
    assert [len(p) for p in sample_contours(mask, 6, min_points_per_part=4)] == [6]
    counts = [len(p) for p in sample_contours(mask, 32, min_points_per_part=4)]
    assert len(counts) == 3 and sum(counts) == 32 and min(counts) >= 4
    with pytest.raises(ValueError, match="min_points_per_part"):
        sample_contours(mask, 32, min_points_per_part=2)


def test_holes_are_ignored():
    outer = _disk(80, 80, 40, 40, 30)
    ring = outer & ~_disk(80, 80, 40, 40, 15)
    island = ring | _disk(80, 80, 40, 40, 5)  # a component inside the hole is covered by the outer polygon
    for mask in (ring, island):
        for method in METHODS:
            points = sample_contour(mask, 32, method)
            assert np.abs(np.hypot(points[:, 0] - 40, points[:, 1] - 40) - 30).max() < 1.0
            assert mask_iou(polygon_to_mask(points, 80, 80), outer) >= 0.97
        assert len(sample_contours(mask, 32)) == 1


@pytest.mark.parametrize("method", METHODS)
def test_single_pixel_gives_n_points_on_its_square(method):
    mask = np.zeros((10, 10), bool)
    mask[4, 6] = True
    points = sample_contour(mask, 32, method)
    assert points.shape == (32, 2)
    assert (points[:, 0] >= 6).all() and (points[:, 0] <= 7).all()
    assert (points[:, 1] >= 4).all() and (points[:, 1] <= 5).all()
    assert polygon_to_mask(points, 10, 10)[4, 6]  # re-rasterises to the pixel
    if method == "adaptive":  # keeps the 4 corners, then fills the edges
        for corner in ([6, 4], [7, 4], [7, 5], [6, 5]):
            assert np.hypot(*(points - corner).T).min() < 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_tiny_and_thin_masks(method):
    pair = np.zeros((10, 10), bool)
    pair[2, 3:5] = True
    line = np.zeros((20, 30), bool)
    line[10, 5:25] = True  # 1 pixel wide
    ell = np.zeros((6, 6), bool)
    ell[1:4, 1] = ell[3, 1:4] = True
    for mask in (pair, line, ell):
        points = sample_contour(mask, 16, method)
        assert points.shape == (16, 2) and np.isfinite(points).all()
        x0, y0, x1, y1 = box_of_mask(mask)
        assert (points[:, 0] >= x0 - 0.5).all() and (points[:, 0] <= x1 + 0.5).all()
        assert (points[:, 1] >= y0 - 0.5).all() and (points[:, 1] <= y1 + 0.5).all()
    assert mask_iou(polygon_to_mask(sample_contour(line, 16, method), 20, 30), line) >= 0.8


def test_empty_mask():
    empty = np.zeros((12, 9), bool)
    for method in METHODS:
        points = sample_contour(empty, 32, method)
        assert points.shape == (0, 2) and points.dtype == np.float32
        assert sample_contours(empty, 32, method) == []
        assert contour_iou(empty, 32, method) == 1.0  # empty polygon vs empty mask


# --- sample_polygon and argument checks --------------------------------------------------------------------


def test_sample_polygon_on_sparse_polygons():
    triangle = np.array([[0, 0], [30, 0], [0, 40]], float)
    points = sample_polygon(triangle, 12)  # fewer vertices than points: keep them, fill the edges
    assert points.shape == (12, 2)
    for vertex in triangle:
        assert np.hypot(*(points - vertex).T).min() < 1e-5
    ccw = sample_polygon(triangle[::-1], 12, "uniform")
    assert shoelace(ccw.astype(np.float64)) > 0  # made clockwise
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    coarse_star = np.stack(
        [50 + (30 + 10 * np.cos(5 * t)) * np.cos(t), 50 + (30 + 10 * np.cos(5 * t)) * np.sin(t)], 1
    )
    area = polygon_to_mask(coarse_star, 100, 100)
    for method in METHODS:
        assert mask_iou(polygon_to_mask(sample_polygon(coarse_star, 40, method), 100, 100), area) >= 0.85
    assert mask_iou(polygon_to_mask(sample_polygon(coarse_star, 40), 100, 100), area) >= 0.97


def test_argument_checks():
    mask = _star()
    with pytest.raises(ValueError, match="num_points"):
        sample_contour(mask, 2)
    with pytest.raises(ValueError, match="method"):
        sample_contour(mask, 32, "curvature")
    with pytest.raises(ValueError, match="2-D"):
        sample_contour(np.zeros((4, 4, 3), bool))
    with pytest.raises(ValueError, match="at least one mask"):
        contour_upper_bound([])


def test_contour_upper_bound_parts():
    mask = _disk(60, 100, 25, 30, 18) | _disk(60, 100, 75, 30, 12)
    single, parts = contour_iou(mask, 32), contour_iou(mask, 32, parts=True)
    assert single < 0.8 < 0.97 <= parts
    assert contour_upper_bound([mask, mask], 32, parts=True) == pytest.approx(parts)
