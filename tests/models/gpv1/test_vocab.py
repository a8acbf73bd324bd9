from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_gpv.models.gpv1.vocab import (
    CLS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    STOP_ID,
    UNK_ID,
    AnswerVocabulary,
    cached_vocabulary,
    detokenize,
    tokenize_answer,
)

ANSWERS = ["A red circle.", "a blue square", "red", "Two", "two", "two", "the dog's toy"]


def test_tokenize_and_detokenize_round_trip() -> None:
    assert tokenize_answer("A dog's toy, (big).") == ["a", "dog's", "toy", ",", "(", "big", ")", "."]
    assert detokenize(["a", "dog's", "toy", ",", "(", "big", ")", "."]) == "a dog's toy, (big)."


def test_build_counts_and_min_count() -> None:
    vocab = AnswerVocabulary.build(ANSWERS, min_count=2)
    assert tuple(vocab.words[:4]) == SPECIAL_TOKENS
    assert vocab.words[4:] == ["a", "red", "two"]
    assert len(AnswerVocabulary.build(ANSWERS, min_count=1)) == 4 + 10


def test_encode_decode() -> None:
    vocab = AnswerVocabulary.build(ANSWERS)
    ids = vocab.encode("A red zebra", max_len=8)
    assert ids[0] == CLS_ID and ids[-1] == STOP_ID and ids[3] == UNK_ID
    assert vocab.decode(ids) == "a red __unk__"
    assert vocab.encode("a red circle two", max_len=4) == [
        CLS_ID,
        vocab.id_of("a"),
        vocab.id_of("red"),
        STOP_ID,
    ]
    assert vocab.decode([CLS_ID, vocab.id_of("two"), PAD_ID, vocab.id_of("red")]) == "two"
    with pytest.raises(ValueError):
        vocab.encode("x", max_len=1)


def test_allowed_mask_is_k_way() -> None:
    vocab = AnswerVocabulary.build(ANSWERS)
    mask = vocab.allowed_mask(["red", "blue square"])
    assert mask.sum() == 4 and mask[STOP_ID]
    assert mask[vocab.id_of("blue")] and not mask[vocab.id_of("two")]
    with pytest.raises(ValueError, match="zebra"):
        vocab.allowed_mask(["zebra"])


def test_bad_vocabularies_raise() -> None:
    with pytest.raises(ValueError):
        AnswerVocabulary(["a", "b"])
    with pytest.raises(ValueError):
        AnswerVocabulary([*SPECIAL_TOKENS, "a", "a"])


def test_save_load_and_cache(tmp_path: Path) -> None:
    calls = []

    def embed(words: list[str]) -> torch.Tensor:
        calls.append(len(words))
        return torch.arange(len(words) * 3, dtype=torch.float32).reshape(len(words), 3)

    v1, e1 = cached_vocabulary(tmp_path, lambda: ANSWERS, embed, min_count=2, source="enc")
    v2, e2 = cached_vocabulary(tmp_path, lambda: [], embed, min_count=2, source="enc")
    assert calls == [len(v1)] and v1 == v2 and torch.equal(e1, e2)
    cached_vocabulary(tmp_path, lambda: ANSWERS, embed, min_count=1, source="enc")  # other settings: rebuilt
    assert len(calls) == 2
    vocab, emb = AnswerVocabulary.load(tmp_path)
    assert len(vocab) == emb.shape[0] == 14
    with pytest.raises(FileNotFoundError):
        AnswerVocabulary.load(tmp_path / "missing")
