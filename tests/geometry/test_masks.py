"""Tests for lightning_gpv.geometry.masks: rasterisation, polygons, RLE, IoU, boxes and the Mask container."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from lightning_gpv.geometry import (
    Mask,
    box_of_mask,
    mask_iou,
    mask_to_polygons,
    mask_to_rle,
    polygon_to_mask,
    polygons_to_mask,
    polygons_to_rle,
    rle_to_mask,
)
from lightning_gpv.geometry.outlines import shoelace


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def _star(h: int = 80, w: int = 90) -> np.ndarray:
    t = np.arange(10) * np.pi / 5
    radius = np.where(np.arange(10) % 2 == 0, 35.0, 14.0)
    poly = np.stack([45 + radius * np.sin(t), 40 - radius * np.cos(t)], axis=1)
    return polygon_to_mask(poly, h, w)


# --- rasterisation -----------------------------------------------------------------------------------------


def test_polygon_to_mask_pixel_corner_convention():
    # The square [2, 7] x [3, 9] covers exactly the pixels whose centres are inside: columns 2..6, rows 3..8.
    mask = polygon_to_mask([2, 3, 7, 3, 7, 9, 2, 9], 12, 10)
    expected = np.zeros((12, 10), bool)
    expected[3:9, 2:7] = True
    assert mask.dtype == bool and mask.shape == (12, 10)
    np.testing.assert_array_equal(mask, expected)


def test_polygon_to_mask_accepts_array_and_flat_list():
    poly = np.array([[1.2, 1.5], [14.7, 3.1], [9.0, 12.8]])
    np.testing.assert_array_equal(
        polygon_to_mask(poly, 16, 16), polygon_to_mask(poly.ravel().tolist(), 16, 16)
    )


def test_polygon_to_mask_matches_pixel_centres_inside():
    # A pixel is foreground exactly when its centre (c + 0.5, r + 0.5) is inside the triangle x + y < 10.
    mask = polygon_to_mask([[0, 0], [10, 0], [0, 10]], 12, 12)
    yy, xx = np.mgrid[:12, :12]
    np.testing.assert_array_equal(mask, (xx + 0.5) + (yy + 0.5) < 10)


def test_polygon_with_fewer_than_three_vertices_is_empty():
    assert not polygon_to_mask([1, 1, 5, 5], 8, 8).any()
    assert not polygons_to_mask([], 8, 8).any()
    with pytest.raises(ValueError, match="even number"):
        polygon_to_mask([1, 2, 3], 8, 8)


def test_polygons_to_mask_is_the_union():
    a, b = [0, 0, 4, 0, 4, 4, 0, 4], [2, 2, 6, 2, 6, 6, 2, 6]
    union = polygons_to_mask([a, b], 8, 8)
    np.testing.assert_array_equal(union, polygon_to_mask(a, 8, 8) | polygon_to_mask(b, 8, 8))
    assert union.sum() == 16 + 16 - 4


# --- polygons <-> masks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "poly",
    [
        [[5, 5], [40, 5], [40, 30], [5, 30]],
        [[3.3, 40.2], [25.7, 2.1], [47.9, 44.4]],
        [[10, 10], [45, 12], [30, 25], [44, 40], [8, 38]],  # concave
    ],
)
def test_polygon_mask_polygon_round_trip(poly):
    mask = polygon_to_mask(poly, 50, 52)
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1 and polygons[0].dtype == np.float32 and polygons[0].shape[1] == 2
    assert shoelace(polygons[0].astype(np.float64)) > 0  # clockwise on screen
    assert mask_iou(polygons_to_mask(polygons, 50, 52), mask) >= 0.99


def test_mask_to_polygons_parts_largest_first_and_holes_filled():
    mask = _disk(60, 80, 20, 30, 15) | _disk(60, 80, 65, 30, 6)
    ring = _disk(60, 80, 20, 30, 15) & ~_disk(60, 80, 20, 30, 7)
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert polygon_to_mask(polygons[0], 60, 80).sum() > polygon_to_mask(polygons[1], 60, 80).sum()
    filled = polygons_to_mask(mask_to_polygons(ring), 60, 80)
    assert mask_iou(filled, _disk(60, 80, 20, 30, 15)) >= 0.98  # the hole is not represented


def test_mask_to_polygons_tolerance_simplifies():
    mask = _star()
    dense, simple = mask_to_polygons(mask)[0], mask_to_polygons(mask, tolerance=0.5)[0]
    assert len(simple) < len(dense) / 3
    assert mask_iou(polygon_to_mask(simple, *mask.shape), mask) >= 0.97


def test_mask_to_polygons_of_empty_mask():
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_outlines_rerasterise_to_real_silhouettes():
    silhouettes = pytest.importorskip("lightning_gpv.geometry.silhouettes").real_silhouettes()
    masks = [silhouettes["horse"][0], silhouettes["camera"][0], *silhouettes["text"][:5]]
    ious = [mask_iou(polygons_to_mask(mask_to_polygons(m), *m.shape), m) for m in masks]
    assert min(ious) >= 0.99  # half-pixel offset of the traced outline: pixel centres alone give ~0.88


# --- RLE ---------------------------------------------------------------------------------------------------


def test_uncompressed_rle_by_hand():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)  # column-major: 0 0 | 1 1 | 1 0
    rle = mask_to_rle(mask, compressed=False)
    assert rle == {"size": [2, 3], "counts": [2, 3, 1]}
    starts_on = np.array([[1, 0], [1, 1]], bool)  # column-major: 1 1 | 0 1 -> a leading run of 0 zeros
    rle = mask_to_rle(starts_on, compressed=False)
    assert rle == {"size": [2, 2], "counts": [0, 2, 1, 1]}
    np.testing.assert_array_equal(rle_to_mask(rle), starts_on)


def test_compressed_rle_matches_pycocotools_and_is_json_ready():
    mask = _star()
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [80, 90]
    assert rle["counts"].encode() == coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    np.testing.assert_array_equal(rle_to_mask({**rle, "counts": rle["counts"].encode()}), mask)


def test_uncompressed_and_compressed_rle_agree():
    mask = _disk(30, 40, 18, 12, 9)
    plain, packed = mask_to_rle(mask, compressed=False), mask_to_rle(mask)
    assert coco_mask.frPyObjects(plain, 30, 40)["counts"].decode() == packed["counts"]
    np.testing.assert_array_equal(rle_to_mask(plain), rle_to_mask(packed))


def test_rle_errors():
    with pytest.raises(ValueError, match="counts sum"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        rle_to_mask({"counts": "abc"})


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))), st.booleans())
def test_rle_round_trip_property(mask, compressed):
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask, compressed=compressed)), mask)


def test_polygons_to_rle_empty():
    rle = polygons_to_rle([[0, 0, 1, 1]], 4, 5)
    assert rle["size"] == [4, 5] and not rle_to_mask(rle).any()


# --- IoU and boxes -----------------------------------------------------------------------------------------


def test_mask_iou_values_and_edge_cases():
    a = np.zeros((4, 4), bool)
    a[:, :2] = True
    b = np.zeros((4, 4), bool)
    b[:, 1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0
    empty = np.zeros((4, 4), bool)
    assert mask_iou(empty, empty) == 1.0  # defined: empty target, empty prediction agree
    assert mask_iou(a, empty) == 0.0 and mask_iou(empty, a) == 0.0
    assert mask_iou(a.astype(np.uint8) * 255, b.astype(np.float32)) == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(a, np.zeros((4, 5), bool))


def test_box_of_mask():
    mask = np.zeros((10, 12), bool)
    mask[3, 7] = True
    np.testing.assert_array_equal(box_of_mask(mask), [7, 3, 8, 4])
    mask[6, 2] = True
    np.testing.assert_array_equal(box_of_mask(mask), [2, 3, 8, 7])
    np.testing.assert_array_equal(box_of_mask(np.zeros((3, 3), bool)), [0, 0, 0, 0])
    x, y, w, h = coco_mask.toBbox(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8))))
    np.testing.assert_array_equal(box_of_mask(mask), [x, y, x + w, y + h])


# --- Mask container ----------------------------------------------------------------------------------------


def test_mask_from_array_rle_is_lossless():
    array = _star()
    m = Mask.from_array(array)
    assert m.rle is not None and m.polygons is None and (m.height, m.width) == (80, 90)
    np.testing.assert_array_equal(m.to_array(), array)
    assert m.area == int(array.sum())
    np.testing.assert_array_equal(m.bbox, box_of_mask(array))


def test_mask_from_array_as_polygons():
    array = _disk(40, 50, 25, 20, 12)
    m = Mask.from_array(array, as_polygons=True, tolerance=0.5)
    assert m.rle is None and len(m.polygons) == 1 and m.polygons[0].dtype == np.float32
    assert mask_iou(m.to_array(), array) >= 0.97
    assert abs(m.area - array.sum()) <= 0.03 * array.sum()


def test_mask_from_polygons_area_and_bbox_are_rasterised():
    m = Mask.from_polygons([[2, 3, 7, 3, 7, 9, 2, 9]], height=12, width=10)
    assert m.area == 30
    np.testing.assert_array_equal(m.bbox, [2, 3, 7, 9])
    assert m.to_coco() == [[2.0, 3.0, 7.0, 3.0, 7.0, 9.0, 2.0, 9.0]]


def test_mask_from_coco_all_segmentation_forms():
    array = _disk(20, 30, 10, 10, 6)
    polys = [p.ravel().tolist() for p in mask_to_polygons(array)]
    forms = [polys, mask_to_rle(array, compressed=False), mask_to_rle(array)]
    arrays = [Mask.from_coco(seg, 20, 30).to_array() for seg in forms]
    np.testing.assert_array_equal(arrays[1], array)
    np.testing.assert_array_equal(arrays[2], array)
    assert mask_iou(arrays[0], array) >= 0.98
    assert Mask.from_coco(forms[1], 20, 30).to_coco() == forms[2]


def test_mask_validation():
    with pytest.raises(ValueError, match="exactly one"):
        Mask(4, 4)
    with pytest.raises(ValueError, match="exactly one"):
        Mask(4, 4, polygons=(), rle=mask_to_rle(np.zeros((4, 4), bool)))
    with pytest.raises(ValueError, match="does not match"):
        Mask(5, 4, rle=mask_to_rle(np.zeros((4, 4), bool)))
    empty = Mask.from_rle(mask_to_rle(np.zeros((4, 6), bool)))
    assert empty.area == 0 and not empty.to_array().any()
    np.testing.assert_array_equal(empty.bbox, [0, 0, 0, 0])
