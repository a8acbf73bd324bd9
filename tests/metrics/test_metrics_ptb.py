"""The pure-Python PTB tokenizer against pycocoevalcap's Java tokenizer (Stanford CoreNLP 3.4.1)."""

from __future__ import annotations

import json

import pytest
from _metrics_oracle import FIXTURE, HANDPICKED, java_available, pycocoevalcap_tokenize, random_captions

from lightning_gpv.metrics.ptb_tokenizer import PUNCTUATIONS, ptb_raw_tokens, ptb_tokenize, ptb_tokenize_lines

ORACLE = json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_cached_java_oracle_isolated_captions() -> None:
    captions, expected = ORACLE["isolated"]["captions"], ORACLE["isolated"]["tokens"]
    assert len(captions) > 1500
    mismatches = [(c, e, ptb_tokenize(c)) for c, e in zip(captions, expected) if ptb_tokenize(c) != e]
    assert mismatches == []


def test_cached_java_oracle_one_call() -> None:
    """A whole pycocoevalcap call, cross-caption context and end of file included."""
    captions, expected = ORACLE["batch"]["captions"], ORACLE["batch"]["tokens"]
    assert ptb_tokenize_lines(captions) == expected


@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        # Examples from the reference notes (observed on the jar).
        (
            "A man's dog (brown) isn't \"happy\" -- he can't run.",
            "a man 's dog -lrb- brown -rrb- is n't happy he ca n't run",
        ),
        ("Two dogs [on] a {couch}; ...", "two dogs -lsb- on -rsb- a -lcb- couch -rcb-"),
        ("I cannot do it, gonna wanna.", "i can not do it gon na wan na"),
        ("gotta lemme gimme", "got ta lem me gim me"),
        ("Y'all ain't", "y' all ai n't"),
        ("Let's 90's James'", "let 's 90 's james"),
        ("mr. dr. st. p.m. e.g. u.s.a. etc.", "mr. dr. st. p.m. e.g. u.s.a. etc."),
        ("No. 5", "no. 5"),
        ("man. a dog.", "man a dog"),
        ("$5.50 100% #1 #tag", "$ 5.50 100 % # 1 #tag"),
        ("x*y a+b a=b", "x * y a + b a = b"),
        (
            "3:30 1,000,000 3.14 1/2 cat/dog t-shirt 12-year-old o'clock",
            "3:30 1,000,000 3.14 1/2 cat/dog t-shirt 12-year-old o'clock",
        ),
        (":)", ":-rrb-"),
        ("café naïve colour", "café naïve colour"),
        ("“x” ‘x’ em—dash", "x x em dash"),
        ("ok.. !!! ?? ?!", "ok !!! ?? ?!"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_reference_examples(caption: str, tokens: str) -> None:
    assert ptb_tokenize(caption) == tokens


def test_brackets_survive_the_upper_case_filter() -> None:
    assert "-LRB-" in PUNCTUATIONS
    assert ptb_tokenize("(a)") == "-lrb- a -rrb-"


def test_cross_caption_context_and_end_of_file() -> None:
    # A trailing single-letter abbreviation depends on the next caption; the last caption ends at EOF.
    assert ptb_tokenize_lines(["plan B.", "A man.", "plan B.", "a man", "she'll"]) == [
        "plan b",
        "a man",
        "plan b.",
        "a man",
        "she ll",
    ]
    assert ptb_tokenize("plan B.") == "plan b."
    assert ptb_tokenize("she'll") == "she 'll"


def test_raw_tokens_keep_punctuation_and_case() -> None:
    assert ptb_raw_tokens("Hello, World.\nx") == [["Hello", ",", "World", "."], ["x"]]


def test_phone_and_fraction_tokens_contain_nbsp_like_the_jar() -> None:
    assert ptb_tokenize("5 1/2") == "5\u00a01/2"
    assert ptb_tokenize("(555) 555-5555") == "-lrb-555-rrb-\u00a0555-5555"


@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_live_java_oracle() -> None:
    captions = HANDPICKED + random_captions(123, 300)
    assert ptb_tokenize_lines(captions) == pycocoevalcap_tokenize(captions)
