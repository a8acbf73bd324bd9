"""The concept matcher of COCO-SCE: the rule lemmatizer and which categories a text mentions."""

from __future__ import annotations

import pytest

from datamodules.concepts import ConceptMatcher, lemma


@pytest.mark.parametrize(
    ("word", "singular"),
    [("horses", "horse"), ("benches", "bench"), ("people", "person"), ("glasses", "glass"), ("buses", "bus"),
     ("ponies", "pony"), ("knives", "knife"), ("sheep", "sheep"), ("grass", "grass"), ("bus", "bus"),
     ("ties", "tie"), ("boxes", "box")],
)  # fmt: skip
def test_lemma(word: str, singular: str) -> None:
    assert lemma(word) == singular


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Two horses grazing.", {"horse"}),
        ("What is on the hot dog?", {"hot dog"}),  # not "dog"
        ("A dog eats a hotdog", {"dog", "hot dog"}),
        ("a teddy bear on a bed", {"teddy bear", "bed"}),  # not "bear"
        ("a brown bear", {"bear"}),
        ("two wine glasses", {"wine glass"}),
        ("a man wearing an orange shirt", {"person"}),  # orange the colour
        ("oranges and apples", {"orange", "apple"}),
        ("is this a remote area?", set()),
        ("he holds the remote control", {"remote"}),
        ("women on their cell phones", {"person", "cell phone"}),
        ("people waiting to train", {"person"}),
        ("a train at the station", {"train"}),
        ("Is the TV on?", {"tv"}),
        ("", set()),
    ],
)
def test_matcher(text: str, found: set[str]) -> None:
    assert ConceptMatcher().find(text) == found
