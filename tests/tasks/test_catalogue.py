import pytest

from lightning_gpv.tasks.catalogue import TASKS, Family, Modality, Task, task_spec, tasks_of


def test_every_task_has_a_spec():
    assert set(TASKS) == set(Task)
    for task, spec in TASKS.items():
        assert spec.task is task
        assert Modality.IMAGE in spec.inputs
        assert spec.outputs, task
        assert spec.families, task


@pytest.mark.parametrize(
    ("task", "inputs", "outputs"),
    [
        (Task.CAPTIONING, {Modality.IMAGE}, {Modality.TEXT}),
        (Task.VQA, {Modality.IMAGE, Modality.TEXT}, {Modality.TEXT}),
        (Task.LOCALIZATION, {Modality.IMAGE, Modality.TEXT}, {Modality.BOXES, Modality.SCORES}),
        (Task.REC, {Modality.IMAGE, Modality.TEXT}, {Modality.BOXES}),
        (Task.RES, {Modality.IMAGE, Modality.TEXT}, {Modality.MASKS}),
        (Task.REG, {Modality.IMAGE, Modality.BOXES}, {Modality.TEXT}),
        (Task.ATTCOSEG, {Modality.IMAGE}, {Modality.MASKS, Modality.IMAGE_SELECTION}),
        (Task.POINT_QA, {Modality.IMAGE, Modality.TEXT, Modality.POINTS}, {Modality.TEXT}),
    ],
)
def test_modalities(task, inputs, outputs):
    spec = TASKS[task]
    assert spec.inputs == inputs
    assert spec.outputs == outputs


def test_multi_image_tasks():
    assert TASKS[Task.NLVR2].accepts_num_images(2)
    assert not TASKS[Task.NLVR2].accepts_num_images(3)
    assert TASKS[Task.COSEG].accepts_num_images(7)
    assert not TASKS[Task.COSEG].accepts_num_images(1)
    assert not TASKS[Task.VQA].multi_image
    assert TASKS[Task.ATTCOSEG].multi_image


def test_families():
    gpv1 = set(tasks_of("gpv1"))
    assert gpv1 == {Task.CAPTIONING, Task.VQA, Task.LOCALIZATION, Task.CLASSIFICATION, Task.REC}
    vista = set(tasks_of(Family.VISTALLM))
    assert {Task.RES, Task.GRES, Task.NLVR2, Task.COSEG, Task.ATTCOSEG} <= vista


def test_lookup_by_name_and_unknown():
    assert task_spec("vqa").task is Task.VQA
    with pytest.raises(ValueError, match="unknown task 'vqa2'.*captioning"):
        task_spec("vqa2")
