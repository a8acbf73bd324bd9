import json

import numpy as np
import pytest

from lightning_gpv.geometry.masks import Mask
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.prompts import VISTALLM_PROMPTS
from lightning_gpv.tasks.samples import Prediction, Target, TaskSample

SQUARE = np.array([[10, 10], [40, 10], [40, 40], [10, 40]], dtype=np.float32)


def test_sample_normalizes_fields():
    s = TaskSample(
        task="rec",
        images="img.jpg",
        expression="the left circle",
        target=Target(boxes=[1, 2, 3, 4]),
        image_sizes=[(48, 64)],
        sample_id="r1",
    )
    assert s.task is Task.REC
    assert s.images == ["img.jpg"] and s.num_images == 1
    assert s.target.boxes.shape == (1, 4) and s.target.boxes.dtype == np.float32
    assert s.target.box_image.tolist() == [0]
    assert s.prompt_slots() == {"expr": "the left circle"}
    text = VISTALLM_PROMPTS.render(s.task, index=0, num_images=s.num_images, **s.prompt_slots())
    assert "the left circle" in text


def test_images_as_a_tuple_are_several_images():
    s = TaskSample(task=Task.NLVR2, images=("left.png", "right.png"), question="both are red")
    assert s.images == ["left.png", "right.png"] and s.num_images == 2


def test_no_target_is_valid():
    s = TaskSample(task=Task.GREC, images=["a.jpg"], expression="the purple star", target=Target())
    assert s.target.boxes.shape == (0, 4)
    assert s.target.masks == []


def test_multi_image_targets_point_at_their_images():
    masks = [Mask.from_polygons([SQUARE], 50, 50), Mask.from_polygons([SQUARE + 2], 50, 50)]
    t = Target(masks=masks, mask_image=[0, 2], selected_images=[0, 2])
    s = TaskSample(task=Task.ATTCOSEG, images=["a", "b", "c"], target=t)
    assert s.target.mask_image.tolist() == [0, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "nlvr2", "images": ["a"]}, "takes 2..2 images, sample 'x' has 1"),
        ({"task": "coseg", "images": ["a"]}, "takes 2..any images"),
        ({"task": "vqa2", "images": ["a"]}, "unknown task"),
    ],
)
def test_invalid_samples_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSample(sample_id="x", **kwargs)


def test_bad_targets():
    with pytest.raises(ValueError, match=r"Target.boxes must have shape \(k, 4\)"):
        Target(boxes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        Target(boxes=[[0, 0, np.nan, 1]])
    with pytest.raises(ValueError, match="Target.box_image has 1 entries for 2 objects"):
        Target(boxes=np.zeros((2, 4)), box_image=[0])
    with pytest.raises(ValueError, match="image sizes"):
        TaskSample(task="vqa", images=["a"], image_sizes=[(1, 1), (2, 2)])


def test_prediction_json_round_trip():
    p = Prediction(
        task="gres",
        sample_id="g7",
        text="[<c1><c2>...]",
        boxes=[[1.234, 2, 30, 40]],
        scores=[0.9],
        masks=[Mask.from_polygons([SQUARE], 50, 60)],
        dropped=["group 2: truncated group at end (3 values), dropped"],
    )
    blob = json.loads(json.dumps(p.to_json()))
    assert blob["task"] == "gres" and blob["sample_id"] == "g7"
    assert blob["boxes"] == [[1.23, 2.0, 30.0, 40.0]]
    assert blob["scores"] == [0.9]
    back = Mask.from_coco(blob["masks"][0], 50, 60)
    assert back.area == p.masks[0].area > 0
    assert blob["dropped"] == p.dropped
    with pytest.raises(ValueError, match="2 scores for 1 boxes"):
        Prediction(task="rec", boxes=[[0, 0, 1, 1]], scores=[0.1, 0.2])
