"""GPV-1 classification accuracy (synonyms, K-way vocabulary mask) and NLVR2 accuracy/consistency."""

from __future__ import annotations

import pytest
import torch

from lightning_gpv.metrics import ClassificationAccuracy, NLVRScore, vocabulary_mask

SYNONYMS = {
    "person": ["person", "man", "woman", "people"],
    "tv": ["tv", "television"],
    "hot dog": ["hot dog"],
}


def test_synonyms_and_case() -> None:
    metric = ClassificationAccuracy(synonyms=SYNONYMS)
    metric.update(
        ["Man", "television ", "dog", "hot dog", "cat"], ["person", "tv", "hot dog", "hot dog", "cat"]
    )
    assert metric.compute().item() == pytest.approx(3 / 5 + 1 / 5)  # "cat": no synonym list, exact match
    plain = ClassificationAccuracy()
    plain.update(["man"], ["person"])
    assert plain.compute().item() == 0.0


def test_classification_deduplicates_by_id() -> None:
    metric = ClassificationAccuracy()
    metric.update(["a", "b"], ["a", "c"], ids=[10, 11])
    metric.update(["a"], ["a"], ids=[10])
    assert metric.compute().item() == 0.5


def test_vocabulary_mask_is_token_level() -> None:
    vocab = ["__cls__", "hot", "dog", "cat", "tv", "television", "__stop__", "__pad__", "__unk__"]
    mask = vocabulary_mask(vocab, ["hot dog", "TV"])
    assert mask.dtype == torch.float32
    assert (mask == 0).tolist() == [False, True, True, False, True, False, True, True, False]
    assert mask[0].item() == -10000.0
    with_syn = vocabulary_mask(vocab, [s for v in SYNONYMS.values() for s in v])
    assert with_syn[vocab.index("television")].item() == 0.0


def test_nlvr_accuracy_and_consistency() -> None:
    metric = NLVRScore()
    metric.update(
        ["True", "false", "TRUE", False, "True"],
        ["True", "False", "True", "True", True],
        ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-2-0-1", "dev-2-1-1"],
    )
    metric.update(["True"], ["True"], ["dev-1-0-0"])  # a DistributedSampler repeat
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(4 / 5)
    assert out["consistency"].item() == pytest.approx(1 / 2)  # sentence dev-1-*-0 all right, dev-2-*-1 not
    with pytest.raises(ValueError):
        metric.update(["True"], ["True"], ["bad-id"])
