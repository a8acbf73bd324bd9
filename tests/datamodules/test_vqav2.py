"""VQAv2: official files, GPV-1's training target, test splits, COCO-SCE and bad input."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from datamodules.errors import DataFormatError
from datamodules.sce import SceOptions
from datamodules.vqav2 import VQAv2DataModule, VQAv2SceDataModule, training_answer
from lightning_gpv.tasks.catalogue import Task


def test_training_answer_draws_frequent_answers_by_count() -> None:
    answers = ["horse"] * 4 + ["pony"] * 3 + ["dog", "cat", "cow"]
    rng = random.Random(0)
    draws = Counter(training_answer(answers, "horse", rng) for _ in range(7000))
    assert set(draws) == {"horse", "pony"}  # only answers given by more than 2 annotators
    assert draws["horse"] / 7000 == pytest.approx(4 / 7, abs=0.03)
    assert training_answer(["a", "a", "b", "b"], "mc", rng) == "mc"  # nobody above 2: the MC answer
    assert training_answer([], None, rng) is None


def test_samples(vqa_root: Path) -> None:
    dm = VQAv2DataModule(str(vqa_root), test_split="test-dev2015")
    train = dm.dataset("train2014")
    assert len(train) == 4
    first = train[0]
    assert first.task == Task.VQA and first.question == "What animal is this?"
    assert first.target.text in {"horse", "pony"} and len(first.target.answers) == 10
    assert first.metadata["multiple_choice_answer"] == "horse" and first.metadata["answer_type"] == "other"
    assert first.sample_id == "vqa-11" and Path(first.images[0]).name == "COCO_train2014_000000000001.jpg"
    val = dm.dataset("val2014")
    assert [val[i].target.text for i in range(len(val))] == ["brown", "yes"]  # eval: the MC answer
    assert {train[1].target.text for _ in range(5)} == {"yes"}  # fallback to MC answer
    (test,) = [dm.dataset("test-dev2015")[0]]
    assert test.target.text is None and "test2015" in test.images[0]


def test_sce(vqa_root: Path) -> None:
    dm = VQAv2SceDataModule(str(vqa_root), sce=SceOptions(val_fraction=0.01))
    train = dm.dataset("train")
    qs = {train[i].question for i in range(len(train))}
    # "What animal is this?" has horse (4 votes) and pony (3): both could become the target -> dropped.
    # "What is on the bench?" mentions bench -> dropped.
    assert qs == {"Is it sunny?", "How many people?"}
    test = dm.dataset("test")
    tags = {test[i].question: test[i].metadata["sce"] for i in range(len(test))}
    assert tags == {"What color is the horse?": "unseen", "Is he tall?": "seen"}


def test_bad_input(vqa_root: Path) -> None:
    ann = vqa_root / "v2_mscoco_train2014_annotations.json"
    data = json.loads(ann.read_text())
    del data["annotations"][1]["multiple_choice_answer"]
    data["annotations"][2]["answers"][0] = {"answer_id": 1}
    ann.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"annotations\[1\]\.multiple_choice_answer': missing field"):
        VQAv2DataModule(str(vqa_root)).dataset("train2014")
    dm = VQAv2DataModule(str(vqa_root), on_bad_sample="skip")
    assert len(dm.dataset("train2014")) == 2
    assert dm.num_skipped == 2  # two bad annotations; their questions are dropped without a second count
    (vqa_root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text('{"questions": [{"image_id": 1,')
    with pytest.raises(DataFormatError, match="questions.json: malformed or truncated JSON"):
        dm.dataset("val2014")
    with pytest.raises(DataFormatError, match="unknown split 'test'"):
        dm.dataset("test")


def test_shapesworld_vqa(shapes_root: Path) -> None:
    dm = VQAv2DataModule(str(shapes_root / "vqav2"))
    ds = dm.dataset("train2014")
    assert len(ds) > 20
    for i in range(0, len(ds), 7):
        s = ds[i]
        assert s.question and s.target.text and len(s.target.answers) == 10 and Path(s.images[0]).is_file()


def test_training_answer_is_never_empty() -> None:
    rng = random.Random(0)
    assert {training_answer([""] * 4 + ["red"] * 3, "red", rng) for _ in range(50)} == {"red"}
    assert training_answer([" "] * 10, "mc", rng) == "mc"


QUESTIONS = "v2_OpenEnded_mscoco_train2014_questions.json"
ANNOTATIONS = "v2_mscoco_train2014_annotations.json"


def _set(index: int, **changes: object):  # type: ignore[no-untyped-def]
    return lambda items: items[index].update(changes)


def _repeat(index: int):  # type: ignore[no-untyped-def]
    return lambda items: items.append(dict(items[index]))


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            ANNOTATIONS,
            _set(1, multiple_choice_answer=" "),
            r"'annotations\[1\]\.multiple_choice_answer': empty",
        ),
        (ANNOTATIONS, _set(1, answers=[]), r"'annotations\[1\]\.answers': no answers"),
        (ANNOTATIONS, _set(1, image_id=3), "question_id 21 is of image 3 here, of image 2"),
        (ANNOTATIONS, _repeat(1), r"'annotations\[4\]\.question_id': duplicate question id 21"),
        (QUESTIONS, _set(1, question=""), r"'questions\[1\]\.question': empty question"),
        (QUESTIONS, _repeat(1), r"'questions\[4\]\.question_id': duplicate question id 21"),
    ],
)
def test_targets_and_questions_are_never_empty(vqa_root: Path, name: str, change, message: str) -> None:  # type: ignore[no-untyped-def]
    path = vqa_root / name
    data = json.loads(path.read_text())
    change(data["annotations" if name == ANNOTATIONS else "questions"])
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=message):
        VQAv2DataModule(str(vqa_root)).dataset("train2014")
    dm = VQAv2DataModule(str(vqa_root), on_bad_sample="skip")
    ds = dm.dataset("train2014")
    kept = 4 if "duplicate" in message else 3  # a repeated id: the first one stands
    assert len(ds) == kept and dm.num_skipped == 1
    assert all(ds[i].target.text.strip() and ds[i].question.strip() for i in range(len(ds)))
