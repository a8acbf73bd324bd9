import numpy as np
import pytest
import torch

from lightning_gpv.geometry.boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    denormalize_boxes,
    expand_box,
    generalized_box_iou,
    normalize_boxes,
)

XYXY = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 1.0, 1.0]], dtype=np.float32)


def test_known_conversions():
    np.testing.assert_allclose(box_convert(XYXY, "xyxy", "xywh")[0], [10, 20, 40, 60])
    np.testing.assert_allclose(box_convert(XYXY, "xyxy", "cxcywh")[0], [30, 50, 40, 60])
    np.testing.assert_allclose(box_convert(np.array([30, 50, 40, 60.0]), "cxcywh", "xyxy"), XYXY[0])


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_round_trip_numpy_and_torch(fmt):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, size=(3, 7, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 100, size=(3, 7, 2))], axis=-1).astype(np.float32)
    back = box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
    assert isinstance(back, np.ndarray) and back.shape == boxes.shape
    np.testing.assert_allclose(back, boxes, atol=1e-4)
    t = torch.from_numpy(boxes)
    back_t = box_convert(box_convert(t, "xyxy", fmt), fmt, "xyxy")
    assert isinstance(back_t, torch.Tensor)
    torch.testing.assert_close(back_t, t)


def test_normalize_round_trip_and_errors():
    n = normalize_boxes(XYXY, width=100, height=200)
    np.testing.assert_allclose(n[0], [0.1, 0.1, 0.5, 0.4])
    np.testing.assert_allclose(denormalize_boxes(n, 100, 200), XYXY, rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        normalize_boxes(XYXY, 0, 10)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        box_convert(np.zeros((3, 5)), "xyxy", "xywh")
    with pytest.raises(ValueError, match="out_fmt"):
        box_convert(XYXY, "xyxy", "yxyx")


def test_clip_area_iou():
    clipped = clip_boxes(np.array([[-5, -5, 120, 50]], np.float32), width=100, height=40)
    np.testing.assert_allclose(clipped, [[0, 0, 100, 40]])
    np.testing.assert_allclose(box_area(XYXY), [2400, 1])
    iou = box_iou(XYXY, np.array([[10, 20, 50, 50.0]]))
    np.testing.assert_allclose(iou[:, 0], [0.5, 0.0])
    assert box_iou(np.zeros((0, 4)), XYXY).shape == (0, 2)
    giou = generalized_box_iou(np.array([[0, 0, 1, 1.0]]), np.array([[2, 0, 3, 1.0]]))
    np.testing.assert_allclose(giou, [[-1 / 3]], rtol=1e-6)


def test_expand_box_like_gpv1_crops():
    grown = expand_box(np.array([10.0, 10.0, 20.0, 30.0]), width=100, height=100)
    np.testing.assert_allclose(grown, [8, 6, 22, 34])
    assert expand_box(np.array([0.0, 0.0, 100.0, 100.0]), 100, 100).tolist() == [0, 0, 100, 100]


def test_paired_box_iou_is_the_diagonal_of_box_iou_and_zero_for_missing_boxes() -> None:
    from lightning_gpv.geometry.boxes import box_iou, paired_box_iou

    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 4.0], [5.0, 5.0, 6.0, 6.0]])
    torch.testing.assert_close(paired_box_iou(a, b), torch.diag(box_iou(a, b)))
    assert paired_box_iou(a, b).tolist()[1:] == [1.0, 0.0]
    missing = torch.full((1, 4), float("nan"))
    assert paired_box_iou(missing, b[:1]).tolist() == [0.0]
