import random

import numpy as np
import pytest

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.catalogue import IMAGE_TOKEN, TASKS, Family, Task
from lightning_gpv.tasks.prompts import (
    GPV1_PROMPTS,
    PROMPTS,
    SLOT_MARKERS,
    VISTALLM_PROMPTS,
    unfilled_slots,
)

SLOT_VALUES = {
    "expr": "the red circle on the left",
    "question": "What color is the square?",
    "category": "hexagon",
    "region": "[10, 20, 300, 400]",
    "point": "[55, 66]",
}


def test_gpv1_table7_counts():
    assert len(GPV1_PROMPTS.templates_for(Task.CAPTIONING)) == 14
    assert len(GPV1_PROMPTS.templates_for(Task.CLASSIFICATION)) == 4
    loc = GPV1_PROMPTS.templates_for(Task.LOCALIZATION)
    assert len(loc) == 18 and len(set(loc)) == 18
    assert loc[0] == "Locate [OBJECT]."
    assert "Find all instances of [OBJECT] in this image." in loc
    assert GPV1_PROMPTS.render(Task.VQA, question="Is it red?") == "Is it red?"
    assert GPV1_PROMPTS.render(Task.REC, expr="left dog") == "left dog"


def test_gpv1_localization_fills_object():
    text = GPV1_PROMPTS.render(Task.LOCALIZATION, index=4, category="fire hydrant")
    assert text == "Locate instances of fire hydrant in the image."


def test_vistallm_covers_every_task_with_eight_paraphrases():
    assert set(VISTALLM_PROMPTS.templates) == set(Task)
    for task in Task:
        templates = VISTALLM_PROMPTS.templates_for(task)
        assert len(set(templates)) >= 8, task
        assert all(IMAGE_TOKEN in t for t in templates), task


@pytest.mark.parametrize("family", list(Family))
def test_render_every_template_fills_every_slot(family):
    bank = PROMPTS[family]
    for task, templates in bank.templates.items():
        spec = TASKS[task]
        n_images = spec.min_images if spec.max_images is None else spec.max_images
        n_images = max(n_images, 3) if spec.max_images is None else n_images
        for i in range(len(templates)):
            text = bank.render(task, index=i, num_images=n_images, mask_points=32, **SLOT_VALUES)
            assert "<npoints>" not in text and "<lastpoint>" not in text, (task, text)
            assert unfilled_slots(text) == [], (task, text)
            if family is Family.VISTALLM:
                assert text.count(IMAGE_TOKEN) == n_images, (task, text)
            template = templates[i]
            for name, markers in SLOT_MARKERS.items():
                if any(m in template for m in markers):
                    assert SLOT_VALUES[name] in text, (task, name, text)


def test_slots_per_task():
    assert VISTALLM_PROMPTS.slots_of(Task.REC) == {"expr"}
    assert VISTALLM_PROMPTS.slots_of(Task.VQA) == {"question"}
    assert VISTALLM_PROMPTS.slots_of(Task.REG) == {"region"}
    assert VISTALLM_PROMPTS.slots_of(Task.CAPTIONING) == set()
    assert GPV1_PROMPTS.slots_of(Task.LOCALIZATION) == {"category"}


def test_seeded_choice_is_reproducible_and_varied():
    def draw(seed):
        rng = random.Random(seed)
        return [VISTALLM_PROMPTS.render(Task.REC, rng=rng, expr="x") for _ in range(30)]

    assert draw(0) == draw(0)
    assert len(set(draw(0))) > 3
    gen_a, gen_b = np.random.default_rng(5), np.random.default_rng(5)
    a = [GPV1_PROMPTS.render(Task.CAPTIONING, rng=gen_a) for _ in range(20)]
    b = [GPV1_PROMPTS.render(Task.CAPTIONING, rng=gen_b) for _ in range(20)]
    assert a == b and len(set(a)) > 3


def test_fixed_template_for_evaluation():
    assert VISTALLM_PROMPTS.render(Task.CAPTIONING) == VISTALLM_PROMPTS.templates_for(Task.CAPTIONING)[0]
    assert VISTALLM_PROMPTS.render(Task.CAPTIONING, index=2) == VISTALLM_PROMPTS.templates[Task.CAPTIONING][2]


def test_multi_image_placeholders():
    text = VISTALLM_PROMPTS.render(Task.COSEG, index=0, num_images=4, mask_points=32)
    assert text.count(IMAGE_TOKEN) == 4
    nlvr = VISTALLM_PROMPTS.render(Task.NLVR2, index=0, num_images=2, question="both have dogs")
    assert nlvr.count(IMAGE_TOKEN) == 2
    with pytest.raises(ValueError, match="2 <image> slots but the sample has 3"):
        VISTALLM_PROMPTS.render(Task.NLVR2, index=0, num_images=3, question="q")


def test_render_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs slot 'expr'"):
        VISTALLM_PROMPTS.render(Task.REC)
    with pytest.raises(ValueError, match="unknown prompt slot"):
        VISTALLM_PROMPTS.render(Task.REC, expression="x")
    with pytest.raises(InputError, match="gpv1 does not do task 'res'; its tasks: captioning"):
        GPV1_PROMPTS.render(Task.RES, expr="x")
    with pytest.raises(ValueError, match="out of range"):
        GPV1_PROMPTS.render(Task.CLASSIFICATION, index=4)
    with pytest.raises(ValueError, match="not both"):
        GPV1_PROMPTS.render(Task.CLASSIFICATION, index=0, rng=random.Random(0))


def test_slot_values_are_inserted_verbatim():
    """A question or expression that contains a marker is not expanded again (nor counted as an image)."""
    text = VISTALLM_PROMPTS.render(Task.VQA, index=0, question="is the [OBJECT] next to <expr>?")
    assert text.endswith("is the [OBJECT] next to <expr>?") and text.count(IMAGE_TOKEN) == 1
    nlvr = VISTALLM_PROMPTS.render(Task.NLVR2, index=0, num_images=2, question="the <image> tag")
    assert nlvr.count(IMAGE_TOKEN) == 3 and "the <image> tag" in nlvr


def test_mask_instructions_name_the_point_count():
    """A model writing N points per mask is asked for N points, the format's last point is N - 1."""
    one = VISTALLM_PROMPTS.render(Task.RES, index=2, expr="the dog", mask_points=12)
    assert one == (
        "Segment the dog in the image <image>. Give 12 points along the object's outline in "
        "[x0, y0, x1, y1, ..., x11, y11] format."
    )
    assert "32 points" in VISTALLM_PROMPTS.render(Task.GRES, index=0, expr="dogs", mask_points=32)
    coseg = VISTALLM_PROMPTS.render(Task.COSEG, index=0, num_images=2, mask_points=8)
    assert "x7, y7]" in coseg
    # No mask template names another count of its own.
    for task in (Task.RES, Task.GRES, Task.COSEG, Task.ATTCOSEG):
        for i in range(len(VISTALLM_PROMPTS.templates[task])):
            text = VISTALLM_PROMPTS.render(task, index=i, num_images=3, expr="x", mask_points=8)
            assert "32" not in text and "31" not in text, text
    # Templates without masks ignore the count.
    assert VISTALLM_PROMPTS.render(Task.REC, index=0, expr="x", mask_points=8) == VISTALLM_PROMPTS.render(
        Task.REC, index=0, expr="x"
    )
    with pytest.raises(ValueError, match="needs mask_points"):
        VISTALLM_PROMPTS.render(Task.RES, index=0, expr="x")
    with pytest.raises(ValueError, match=">= 3"):
        VISTALLM_PROMPTS.render(Task.RES, index=0, expr="x", mask_points=2)
