"""VQA accuracy against the official GT-Vision-Lab/VQA evaluation (HEAD a013f00) and GPV-1's variant."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_gpv.metrics import VQAAccuracy, normalize_vqa_answer
from lightning_gpv.metrics.vqa import vqa_answer_accuracy


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Yes.", "yes"),
        ("two", "2"),
        ("The dog", "dog"),
        ("a red-ish car", "red ish car"),
        ("3,000", "3000"),
        ("no, thanks!", "no thanks"),
        ("isnt", "isn't"),
        ("1.5", "1.5"),
        ("left side of the road.", "left side of road"),
        ("e.g. x", "eg x"),
        ("hello/world", "hello world"),
        ("U.S.A.", "usa"),
        ("fire_hydrant", "fire hydrant"),
        ("it's", "it's"),
        ("10:30", "10:30"),
        ("$5", "$5"),
        ("50%", "50%"),
        ("none", "0"),
    ],
)
def test_official_normalization_golden(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized


def test_period_deletion_is_capped_at_32() -> None:
    # ``re.UNICODE`` (32) is passed as the count of ``sub``: only the first 32 periods go.
    assert normalize_vqa_answer("." * 40 + "x") == "." * 8 + "x"


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Yes", ["yes"] * 10, 0.0),  # identical answers: no normalization at all
        ("yes.", ["yes"] * 10, 0.0),
        ("yes", ["yes"] * 10, 1.0),
        ("2", ["two"] * 3 + ["three"] * 7, 0.9),
        ("2", ["2"] + ["3"] * 9, 0.3),
        ("2", ["2"] * 2 + ["3"] * 8, 0.6),
        ("2", ["2"] * 3 + ["3"] * 7, 0.9),
        ("2", ["2"] * 4 + ["3"] * 6, 1.0),
        ("the dog", ["a dog"] * 5 + ["dog"] * 5, 1.0),
        ("RED", ["red"] * 9 + ["Red"], 1.0),
        (" yes\n", ["yes", "yes", "no"] + ["yes"] * 7, 1.0),
    ],
)
def test_official_scores_golden(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_answer_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)
    metric = VQAAccuracy()
    metric.update([prediction], [answers])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-12)


def _official_loop(prediction: str, answers: list[str]) -> float:
    """The official evaluation loop restated from its definition (answer records, leave-one-out)."""
    punct = [
        ";",
        "/",
        "[",
        "]",
        '"',
        "{",
        "}",
        "(",
        ")",
        "=",
        "+",
        "\\",
        "_",
        "-",
        ">",
        "<",
        "@",
        "`",
        ",",
        "?",
        "!",
    ]
    numbers = {
        w: str(i)
        for i, w in enumerate(
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
        )
    }
    numbers["none"] = "0"

    def punctuation(text: str) -> str:
        out = text
        for p in punct:
            if (p + " " in text or " " + p in text) or re.search(r"(\d)(,)(\d)", text) is not None:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return re.sub(r"(?!<=\d)(\.)(?!\d)", "", out, count=32)

    def digits(text: str) -> str:
        words = []
        for word in text.lower().split():
            word = numbers.get(word, word)
            if word not in ("a", "an", "the"):
                words.append(word)
        contractions = {"dont": "don't", "isnt": "isn't", "whats": "what's", "im": "im", "youre": "you're"}
        return " ".join(contractions.get(w, w) for w in words)

    records = [
        {"answer": a.replace("\n", " ").replace("\t", " ").strip(), "answer_id": i}
        for i, a in enumerate(answers)
    ]
    pred = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len({r["answer"] for r in records}) > 1:
        for r in records:
            r["answer"] = digits(punctuation(r["answer"]))
        pred = digits(punctuation(pred))
    accs = []
    for record in records:
        others = [r for r in records if r != record]
        accs.append(min(1, float(len([r for r in others if r["answer"] == pred])) / 3))
    return float(sum(accs)) / len(accs)


_POOL = [
    "yes",
    "Yes",
    "yes.",
    "no",
    "2",
    "two",
    "Two",
    "the dog",
    "a dog",
    "dog",
    "red",
    "Red!",
    "dont",
    "don't",
    "3,000",
    "3000",
    "1.5",
    "hello/world",
    "hello world",
    "U.S.A.",
    "usa",
    "fire_hydrant",
    "none",
    "0",
    " yes ",
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(_POOL), min_size=10, max_size=10), st.sampled_from(_POOL))
def test_matches_the_official_loop(answers: list[str], prediction: str) -> None:
    assert vqa_answer_accuracy(prediction, answers) == pytest.approx(
        _official_loop(prediction, answers), abs=1e-12
    )


def test_gpv1_variant() -> None:
    metric = VQAAccuracy(variant="gpv1")
    metric.update(
        ["Yes", "2", "red", "red", "dog"],
        [
            ["yes"] * 10,
            ["two"] * 10,  # no number normalization
            ["red"] * 9 + ["Red"],  # lower-cased counter keys: the later spelling's count wins
            ["Red"] + ["red"] * 9,
            ["dog"] + ["cat"] * 9,  # no leave-one-out: 1 match -> 1/3
        ],
    )
    states, _ = metric._gather_states(["scores"])
    assert states["scores"].tolist() == pytest.approx([1.0, 0.0, 1 / 3, 1.0, 1 / 3])


def test_answer_type_breakdown_and_deduplication() -> None:
    metric = VQAAccuracy(per_answer_type=True)
    metric.update(
        ["yes", "2", "cat"],
        [["yes"] * 10, ["3"] * 10, ["cat"] * 10],
        ids=[1, 2, 3],
        answer_types=["yes/no", "number", "other"],
    )
    metric.update(["yes"], [["yes"] * 10], ids=[1], answer_types=["yes/no"])  # sampler padding
    metric.update(["no"], [["yes"] * 10], ids=[4], answer_types=["yes/no"])
    out = metric.compute()
    assert out["overall"].item() == pytest.approx(0.5)
    assert out["yes/no"].item() == pytest.approx(0.5)
    assert out["number"].item() == 0.0
    assert out["other"].item() == 1.0
    with pytest.raises(ValueError):
        metric.update(["x"], [["x"]], answer_types=["color"])


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_and_unicode() -> None:
    assert VQAAccuracy().compute().item() == 0.0
    metric = VQAAccuracy()
    metric.update(["café", ""], [["café"] * 3 + ["cafe"] * 7, [""] * 10])
    assert metric.compute().item() == pytest.approx((0.9 + 1.0) / 2)
    assert metric.compute().dtype == torch.float64
