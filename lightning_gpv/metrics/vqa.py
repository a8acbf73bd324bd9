"""VQA accuracy: the official VQA evaluation (GT-Vision-Lab/VQA ``vqaEval.py`` at HEAD a013f00) and GPV-1's
simplified variant.

Official algorithm, per question (10 human answers ``a_1..a_10``, prediction ``p``):

1. ``\\n`` and ``\\t`` become spaces and the strings are stripped (answers and prediction).
2. Only when the answers are not all identical, :func:`normalize_vqa_answer` (punctuation, then
   number words / articles / contractions) is applied to every answer and to the prediction. When
   all 10 answers are the same string nothing else is normalized, not even case: ``"Yes"`` or
   ``"yes."`` against 10 x ``"yes"`` scores 0.
3. ``acc = mean_i min(1, #{j != i : a_j == p} / 3)`` (leave-one-out over the answers).

The official script reports ``round(100 * mean, 2)``; this metric returns the unrounded fraction.

GPV-1 (``exp/gpv/evaluators.py::CocoVqa``): ``min(count / 3, 1)`` where ``count`` is looked up in
``{answer.lower(): n}`` built from the raw answer counter in first-occurrence order, so when two
spellings differ only in case the *later* one's count wins (``9 x "red", 1 x "Red"`` gives ``red -> 1``);
the prediction is only lower-cased.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_gpv.metrics._sync import DedupMetric, SampleIds, check_lengths, check_references, check_strings

__all__ = ["VQAAccuracy", "normalize_vqa_answer", "vqa_answer_accuracy"]

ANSWER_TYPES = ("yes/no", "number", "other")

# Punctuation handled by ``processPunctuation`` (official HEAD). ``'``, ``:``, ``$``, ``%``, ``#``, ``&``
# and ``*`` are left alone.
_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The official period pattern ``(?!<=\d)(\.)(?!\d)`` has a typo'd look-behind that never fires: it deletes
# every "." not followed by a digit. ``re.UNICODE`` (32) is passed as ``count``: at most 32 deletions.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_MAX_DELETIONS = 32
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})


def _contraction_table() -> dict[str, str]:
    """The official contraction table (data; entries with a capital letter can never match because the
    text is lower-cased first, and a few entries map an apostrophe form to a bare one, as upstream)."""
    pairs = """aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
    couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
    hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
    howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
    itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't|mightnt've mightn't've
    mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've|neednt needn't|notve not've
    oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't
    shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't
    shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've
    somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd
    someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's
    somethingd something'd|somethingd've something'd've|something'dve something'd've
    somethingll something'll|thats that's|thered there'd|thered've there'd've|there'dve there'd've
    therere there're|theres there's|theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll
    theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've
    werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's|whered where'd
    wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's
    whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
    wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll
    yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've
    you'dve you'd've|youll you'll|youre you're|youve you've"""
    table = {}
    for entry in pairs.replace("\n", "|").split("|"):
        key, value = entry.split()
        table[key] = value
    return table


_CONTRACTIONS = _contraction_table()


def _process_punctuation(text: str) -> str:
    out = text
    # The decision for every mark looks at the *original* text.
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        if has_digit_comma or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_DELETIONS)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


@lru_cache(maxsize=1 << 16)
def normalize_vqa_answer(answer: str) -> str:
    """Official VQA normalization of one (already stripped) answer: punctuation, then digits/articles."""
    return _process_digit_article(_process_punctuation(answer))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one prediction against its human answers (a fraction in [0, 1])."""
    if len(answers) == 0:
        raise ValueError("VQA accuracy needs at least one ground-truth answer.")
    joined = "".join(answers) + prediction
    if "\n" in joined or "\t" in joined:
        gts = [_clean(a) for a in answers]
        pred = _clean(prediction)
    else:  # the same strings, without a Python call per answer
        gts = list(map(str.strip, answers))
        pred = prediction.strip()
    if len(set(gts)) > 1:
        gts = list(map(normalize_vqa_answer, gts))
        pred = normalize_vqa_answer(pred)
    matches = gts.count(pred)
    if matches == 0:
        return 0.0
    # Leave one out: the official code drops the answer record itself (records differ by answer_id). Its
    # terms, summed in its order so that the float is the same.
    hit, miss = min(1.0, float(matches - 1) / 3), min(1.0, float(matches) / 3)
    total = 0.0
    for a in gts:
        total += hit if a == pred else miss
    return total / len(gts)


def gpv1_vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """GPV-1's simplified VQA score (see module docstring)."""
    counts: dict[str, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    lowered = {k.lower(): v for k, v in counts.items()}
    return min(lowered.get(prediction.lower(), 0) / 3, 1.0)


class VQAAccuracy(DedupMetric):
    """VQA accuracy (fraction in [0, 1]).

    Args:
        variant: ``"official"`` (GT-Vision-Lab/VQA at HEAD) or ``"gpv1"`` (GPV-1's lower-case-only
            ``min(count / 3, 1)``).
        answer_types: names of the answer types accepted by ``update(answer_types=...)``.
        per_answer_type: when True ``compute()`` returns ``{"overall": ..., <type>: ...}`` with one entry
            per answer type that has at least one sample (as the official ``perAnswerType``).

    ``update(predictions, answers, ids=None, answer_types=None)``: ``predictions`` is a list of N strings,
    ``answers`` a list of N lists of human answers (10 each in VQAv2), ``ids`` the question ids (used to
    drop DistributedSampler repeats), ``answer_types`` N names from ``answer_types``. A prediction that is not
    a ``str``, or answers that are not a non-empty list of strings per question (a bare ``str`` is refused:
    iterating it gives characters), raise ``TypeError`` (``ValueError`` for an empty list); batches of
    different lengths raise ``ValueError``.
    """

    def __init__(
        self,
        variant: Literal["official", "gpv1"] = "official",
        answer_types: Sequence[str] = ANSWER_TYPES,
        per_answer_type: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if variant not in ("official", "gpv1"):
            raise ValueError(f"Unknown VQA variant {variant!r}.")
        self.variant = variant
        self.answer_type_names = tuple(answer_types)
        self._type_index = {name: i for i, name in enumerate(self.answer_type_names)}
        self.per_answer_type = per_answer_type
        self._add_cat_state("scores", torch.float64)
        self._add_cat_state("types", torch.int64)

    def update(
        self,
        predictions: Sequence[str],
        answers: Sequence[Sequence[str]],
        ids: SampleIds = None,
        answer_types: Sequence[str] | None = None,
    ) -> None:
        """Score a batch (see class docstring)."""
        where = "VQAAccuracy.update"
        predictions = check_strings(where, "predictions", predictions)
        answers = check_references(where, "answers", answers)
        check_lengths(where, ("predictions", len(predictions)), ("answers", len(answers)))
        score_fn = vqa_answer_accuracy if self.variant == "official" else gpv1_vqa_accuracy
        scores = [score_fn(p, a) for p, a in zip(predictions, answers)]
        if answer_types is None:
            types = [-1] * len(scores)
        else:
            answer_types = check_strings(where, "answer_types", answer_types)
            check_lengths(where, ("predictions", len(scores)), ("answer_types", len(answer_types)))
            unknown = set(answer_types) - set(self._type_index)
            if unknown:
                raise ValueError(
                    f"{where}: unknown answer types {sorted(unknown)}; known: {self.answer_type_names}."
                )
            types = [self._type_index[t] for t in answer_types]
        self._append("scores", torch.tensor(scores, dtype=torch.float64))
        self._append("types", torch.tensor(types, dtype=torch.int64))
        self._append_ids(ids, len(scores))

    def compute(self) -> Tensor | dict[str, Tensor]:
        """Mean accuracy over de-duplicated questions (0 when empty); a dict when ``per_answer_type``."""
        states, keep = self._gather_states(["scores", "types"])
        scores, types = states["scores"][keep], states["types"][keep]
        overall = scores.mean() if scores.numel() else torch.zeros((), dtype=torch.float64)
        if not self.per_answer_type:
            return overall
        out = {"overall": overall}
        for i, name in enumerate(self.answer_type_names):
            selected = scores[types == i]
            if selected.numel():
                out[name] = selected.mean()
        return out
