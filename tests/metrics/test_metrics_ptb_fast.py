"""The caption fast path of the PTB tokenizer against its lexer rules and against the Java oracle.

The fast path makes the tokens of "simple" captions with a few string operations; it must give exactly
what the rules give, on every caption it accepts. The generators below aim at its boundary: the words the
rules single out (abbreviations, assimilations, APOWORD stems, smiley letters), clitics in every case,
digits next to spaces, brackets, quotes, runs of punctuation, and characters it must refuse (unicode,
tabs, newlines, symbols).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from _metrics_oracle import FIXTURE, java_available, java_isolated
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lightning_gpv.metrics import ptb_tokenizer as ptb
from lightning_gpv.metrics.ptb_tokenizer import ptb_tokenize, ptb_tokenize_batch

ORACLE = json.loads(FIXTURE.read_text(encoding="utf-8"))


def _words(text: str) -> list[str]:
    return text.split()


def _rule_words() -> list[str]:
    """The words the lexer rules single out, taken from the rule sources themselves where they are listed."""
    sources = [ptb._TITLES, ptb._COMP, ptb._MONTHS_DAYS, ptb._STATES_CI, " ".join(ptb._STATES_CS)]
    words = {w for text in sources for w in re.findall("[A-Za-z]+", text)}
    words |= {w.rstrip(".") for w in ptb._SENT_STARTERS}
    extra = (
        "etc al seq bldg blvd rd ed ph ca fig figs prop no nos art pp op pt pte pty co ltd lim cannot gonna "
        "gotta lemme gimme wanna cont dunkin somethin ol nor easter mon er mores ev ry li nat cap est em til "
        "till cause tis twas http www com net org edu pro anti rrb lrb rsb lsb rcb lcb canada non u s x xx y "
        "o d l j n t i a"
    )
    words |= set(_words(extra))
    return sorted(words)


_WORDS = _rule_words() + _words("man woman dog cat is isn do ca wo ai the of on in two shirt year old w0001")
_NUMBERS = _words("0 5 12 55 555 5555 2020 3rd 1st 4x4 90s")
_CLITICS = ["'s", "'m", "'d", "'re", "'ve", "'ll", "n't", "'t", "'S", "'Re", "N'T", "'", "'x", "'em", "'90s"]
_OPENERS = ["(", "[", "{", '"', "((", '("']
_CLOSERS = _words('. , ; : ! ? !! ?! ... ., ) ] } " ). :) ;(')
_ODD = [*"&/@#$%*+=_<>`\t\n-'\u00e9\u2014\u2019\u201c\u00a0\u00bd\u00b2\u5317\U0001f600\u00ad\u0301", "--"]


def _piece(rng: random.Random) -> str:
    """A whitespace-free piece of a caption: mostly ``[opener] word[-word][clitic][closer]``."""
    r = rng.random()
    if r < 0.08:
        return rng.choice(_CLOSERS + _OPENERS)
    word = rng.choice(_NUMBERS if r < 0.2 else _WORDS)
    while rng.random() < 0.15:
        word += "-" + rng.choice(_WORDS + _NUMBERS)
    case = rng.random()
    word = word.upper() if case < 0.08 else word.capitalize() if case < 0.2 else word
    if rng.random() < 0.2:
        word += rng.choice(_CLITICS)
    text = (rng.choice(_OPENERS) if rng.random() < 0.1 else "") + word
    text += rng.choice(_CLOSERS) if rng.random() < 0.35 else ""
    if rng.random() < 0.03:
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(_ODD) + text[at:]
    return text


def _caption(rng: random.Random) -> str:
    parts = [_piece(rng) for _ in range(rng.randint(0, 10))]
    seps = [rng.choice([" ", " ", " ", "  ", ""]) for _ in parts]
    return (
        rng.choice(["", "", " "])
        + "".join(s + p for s, p in zip(["", *seps[1:]], parts))
        + rng.choice(["", "", " ", " .", "."])
    )


@contextmanager
def _rules_only() -> Iterator[None]:
    """Switch off the lexer's own per-word shortcuts, so that only its rules decide."""
    never = re.compile("(?!)")
    saved = ptb._SIMPLE, ptb._SIMPLE_NUMBER
    ptb._SIMPLE, ptb._SIMPLE_NUMBER = never, never
    try:
        yield
    finally:
        ptb._SIMPLE, ptb._SIMPLE_NUMBER = saved


def _check(captions: list[str]) -> int:
    """Assert that the fast path gives what the rules give on each caption it accepts; count those."""
    accepted = [c for c in captions if ptb._FAST_CAPTION.fullmatch(c) is not None]
    fast = ptb._fast_tokenize("\n".join(accepted)) if accepted else []
    with _rules_only():
        rules = [ptb._general_tokenize(c) for c in accepted]
    assert [(c, f) for c, f, r in zip(accepted, fast, rules) if f != r] == []
    assert [ptb._fast_tokenize(c)[0] for c in accepted] == fast
    return len(accepted)


# Stems the rules single out (APOWORD stems, clitic-like single letters, smiley letters, abbreviations,
# assimilations), endings (clitics, hyphen joins) and closers, for exhaustive small combinations.
_STEMS = _words(
    "cont Cont dunkin somethin ol nor c e s ev li nat cap y Y d o l j n N t x xx i I a u U mr Mr no co pt "
    "pty etc fig miss Miss Ark ark cannot gonna is isn ca wo ai do man Dog US w0001 5 55 555 3rd pro anti "
    "non www http com twas tis em til cause lrb"
)
_ENDINGS = ["", "'s", "'m", "'d", "'re", "'ve", "'ll", "n't", "'t", "'S", "'Re", "N'T", "-x", "-5", "-s"]
_ENDS = ["", ".", ",", ".,", ":", ";", ":)", ";]", ")", ").", "!", "!!", "?!", "...", '"', "'"]


def test_fast_path_equals_rules_on_all_small_combinations() -> None:
    singles = [s + e + c for s in _STEMS for e in _ENDINGS for c in _ENDS]
    assert _check(singles) > 2000
    assert _check(["(" + s + e + ")" for s in _STEMS for e in _ENDINGS]) > 200
    # Pairs, for the contexts that reach across a space (abbreviation + next word, digits, smileys).
    pieces = [s + c for s in _STEMS for c in ["", ".", ")", ":", "'s"]] + ["(55)", "(555)"]
    firsts = [p for p in pieces if p[:1] in "(0123456789" or p.endswith((".", ")", ":")) or len(p) < 3]
    seconds = [*_STEMS, ".", "(", "5", "1234567", "555 5555", "The", "A"]
    assert _check([a + " " + b for a in firsts for b in seconds]) > 2000


def test_fast_path_equals_rules_on_generated_captions() -> None:
    rng = random.Random(0)
    captions = [_caption(rng) for _ in range(3000)]
    assert _check(captions) > 800  # the generator does exercise the fast path


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_fast_path_equals_rules_hypothesis(rng: random.Random) -> None:
    captions = [_caption(rng) for _ in range(4)]
    event(f"fast-path captions: {_check(captions)}")


_ALPHABET = st.sampled_from(
    [*_WORDS, *_NUMBERS, *_CLITICS, *_OPENERS, *_CLOSERS, *_ODD, " ", " ", " ", " ", "  ", "-", "'", "."]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET | st.text(max_size=2), max_size=25).map("".join))
def test_fast_path_equals_rules_on_free_text(caption: str) -> None:
    event("fast path" if ptb._FAST_CAPTION.fullmatch(caption) else "rules")
    _check([caption])
    assert ptb_tokenize_batch([caption, caption]) == [ptb_tokenize(caption)] * 2


@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        (
            "A man's dog isn't (brown) [on] a {couch}!!",
            "a man 's dog is n't -lrb- brown -rrb- -lsb- on -rsb- a -lcb- couch -rcb- !!",
        ),
        ('"Two" t-shirts, 12-year-old kids; they\'re?!', "two t-shirts 12-year-old kids they 're ?!"),
        ("d've y'd", "d 've y 'd"),  # ties between WORD-with-clitic and APOWORD go to the WORD rule
    ],
)
def test_fast_path_examples(caption: str, tokens: str) -> None:
    assert ptb._FAST_CAPTION.fullmatch(caption) is not None
    assert ptb_tokenize(caption) == tokens


@pytest.mark.parametrize(
    "caption",
    [
        "plan B.",  # single letter before its period
        "Mr. Smith",  # abbreviation
        "I cannot",  # assimilation
        "cont'd.",  # APOWORD longer than the clitic split
        "a man.,",  # the period is kept before a comma
        "smile :)",  # smiley
        "face (xx)",  # smiley
        "call 555 5555",  # phone number across a space
        "5 1/2",  # fraction
        "I'M",  # upper-case clitic
        "line\nbreak",
        "tab\there",
        "café",
    ],
)
def test_fast_path_refuses(caption: str) -> None:
    assert ptb._FAST_CAPTION.fullmatch(caption) is None


def test_fast_path_fails_in_linear_time() -> None:
    # A refused caption must not backtrack exponentially over its chunks.
    caption = "a b (c) d-e f's, " * 400 + "&"  # every chunk fits, the last character does not
    start = time.perf_counter()
    assert ptb._FAST_CAPTION.fullmatch(caption) is None
    assert time.perf_counter() - start < 1.0


def test_batch_equals_one_by_one() -> None:
    captions = ORACLE["isolated"]["captions"] + ["", "a dog.", "a dog.", "x\ny", "A DOG."]
    assert ptb_tokenize_batch(captions) == [ptb_tokenize(c) for c in captions]
    assert ptb_tokenize_batch([]) == []


def test_batch_equals_cached_java_oracle() -> None:
    captions, expected = ORACLE["isolated"]["captions"], ORACLE["isolated"]["tokens"]
    assert ptb_tokenize_batch(captions) == expected
    assert sum(ptb._FAST_CAPTION.fullmatch(c) is not None for c in captions) > 150


@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_fast_path_live_java_oracle() -> None:
    rng = random.Random(7)
    captions = [c for c in (_caption(rng) for _ in range(3000)) if ptb._FAST_CAPTION.fullmatch(c)]
    assert ptb_tokenize_batch(captions) == java_isolated(captions)
