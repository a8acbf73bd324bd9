"""Text-answer classification metrics: GPV-1's COCO classification accuracy and NLVR2 accuracy/consistency."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_gpv.metrics._sync import (
    DedupMetric,
    SampleIds,
    check_batch,
    check_lengths,
    check_strings,
    describe,
    stable_hash,
)
from lightning_gpv.metrics.grounding import _fraction

__all__ = ["ClassificationAccuracy", "NLVRScore", "vocabulary_mask"]


class ClassificationAccuracy(DedupMetric):
    """Accuracy of free-text class predictions with synonym sets (GPV-1 ``CocoClassification``).

    A prediction is correct when its lower-cased, stripped text is one of ``synonyms[target]`` (GPV-1 uses
    ``data/coco/synonyms.py``: 80 COCO categories, each with its synonym list) or the target name itself.
    Without ``synonyms`` it is an exact (case-insensitive) match.

    ``update(predictions, targets, ids=None)``: N predicted strings, N target class names. A batch that is not
    a sequence of ``str`` (``None``, a bare string, a non-string entry) raises ``TypeError``; batches of
    different lengths raise ``ValueError``.
    """

    def __init__(self, synonyms: Mapping[str, Iterable[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._synonyms = {
            str(k).lower(): frozenset(s.lower().strip() for s in v) | {str(k).lower()}
            for k, v in (synonyms or {}).items()
        }
        self._add_cat_state("correct", torch.uint8)

    def update(self, predictions: Sequence[str], targets: Sequence[str], ids: SampleIds = None) -> None:
        """Score a batch."""
        where = "ClassificationAccuracy.update"
        predictions = check_strings(where, "predictions", predictions)
        targets = check_strings(where, "targets", targets)
        check_lengths(where, ("predictions", len(predictions)), ("targets", len(targets)))
        correct = []
        for pred, target in zip(predictions, targets):
            key = target.lower().strip()
            correct.append(int(pred.lower().strip() in self._synonyms.get(key, frozenset({key}))))
        self._append("correct", torch.tensor(correct, dtype=torch.uint8))
        self._append_ids(ids, len(correct))

    def compute(self) -> Tensor:
        """Accuracy over de-duplicated samples (0 when empty)."""
        states, keep = self._gather_states(["correct"])
        correct = states["correct"][keep]
        return _fraction(correct.sum(), correct.numel())


def vocabulary_mask(
    vocab: Sequence[str],
    allowed: Iterable[str],
    always_allowed: Iterable[str] = ("__stop__", "__pad__"),
    tokenize: Callable[[str], list[str]] = str.split,
    penalty: float = -10000.0,
) -> Tensor:
    """GPV-1's K-way restriction of the answer vocabulary (``create_coco_vocab_mask``).

    Returns a float ``(len(vocab),)`` additive mask: 0 for every token of the lower-cased, tokenized
    ``allowed`` answers (the 80 COCO class names, optionally with their synonyms) and for
    ``always_allowed``, ``penalty`` elsewhere. It restricts tokens, not whole names: multi-word names are not
    enforced as units. GPV-1 tokenizes with NLTK ``word_tokenize``; pass it as ``tokenize`` to match exactly.
    """
    keep = set(always_allowed)
    for answer in allowed:
        keep.update(tokenize(answer.lower()))
    mask = torch.full((len(vocab),), penalty, dtype=torch.float32)
    mask[[i for i, token in enumerate(vocab) if token in keep]] = 0.0
    return mask


def nlvr_sentence_key(identifier: str) -> str:
    """NLVR2 consistency groups examples by sentence: ``split-set_id-pair_id-sentence_id`` without pair_id."""
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"NLVR2 identifiers look like 'dev-850-0-0', got {identifier!r}.")
    return "-".join(parts[:2] + parts[3:])


class NLVRScore(DedupMetric):
    """NLVR2 (lil-lab/nlvr ``eval/metrics.py``): ``{"accuracy", "consistency"}``.

    ``accuracy``: case-insensitive match of the predicted and gold labels (``"True"``/``"False"`` or bools);
    ``consistency``: fraction of unique sentences (identifier without its pair id) whose examples are all
    correct. The identifiers double as sample ids for de-duplication.

    ``update(predictions, labels, identifiers)``: predictions and labels are ``str`` or ``bool`` entries,
    identifiers ``str``; other types raise ``TypeError``, batches of different lengths ``ValueError``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_cat_state("correct", torch.uint8)
        self._add_cat_state("sentence", torch.int64)

    def update(
        self, predictions: Sequence[str | bool], labels: Sequence[str | bool], identifiers: Sequence[str]
    ) -> None:
        """Score a batch of examples."""
        where = "NLVRScore.update"
        lengths = [
            (n, check_batch(where, n, v)) for n, v in (("predictions", predictions), ("labels", labels))
        ]
        for name, values in (("predictions", predictions), ("labels", labels)):
            for i, value in enumerate(values):
                if not isinstance(value, (str, bool)):
                    raise TypeError(f"{where}: {name}[{i}] must be a str or bool, got {describe(value)}")
        identifiers = check_strings(where, "identifiers", identifiers)
        check_lengths(where, *lengths, ("identifiers", len(identifiers)))
        correct = [int(str(p).strip().lower() == str(g).strip().lower()) for p, g in zip(predictions, labels)]
        sentences = [stable_hash(nlvr_sentence_key(i)) for i in identifiers]
        self._append("correct", torch.tensor(correct, dtype=torch.uint8))
        self._append("sentence", torch.tensor(sentences, dtype=torch.int64))
        self._append_ids(list(identifiers), len(correct))

    def compute(self) -> dict[str, Tensor]:
        """Accuracy and consistency over de-duplicated examples (0 when empty)."""
        states, keep = self._gather_states(["correct", "sentence"])
        correct, sentence = states["correct"][keep], states["sentence"][keep]
        if correct.numel() == 0:
            zero = torch.zeros((), dtype=torch.float64)
            return {"accuracy": zero, "consistency": zero.clone()}
        _, group = torch.unique(sentence, return_inverse=True)
        all_correct = torch.ones(int(group.max()) + 1, dtype=torch.uint8).scatter_reduce(
            0, group, correct, reduce="amin"
        )
        return {
            "accuracy": _fraction(correct.sum(), correct.numel()),
            "consistency": _fraction(all_correct.sum(), all_correct.numel()),
        }
