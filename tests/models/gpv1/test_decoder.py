from __future__ import annotations

import torch

from lightning_gpv.models.gpv1.config import TextDecoderConfig
from lightning_gpv.models.gpv1.decoder import AnswerDecoder, sinusoidal_positions
from lightning_gpv.models.gpv1.vocab import CLS_ID, PAD_ID, STOP_ID

V, D, W = 12, 16, 8


def _decoder(**kw: object) -> tuple[AnswerDecoder, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = TextDecoderConfig(num_layers=2, num_heads=4, ffn_dim=32, dropout=0.0, max_answer_len=6, **kw)
    return AnswerDecoder(cfg, D, W).eval(), torch.randn(V, W), torch.randn(2, 5, D)


def test_teacher_forcing_shapes_and_causality() -> None:
    dec, words, memory = _decoder()
    tokens = torch.tensor([[CLS_ID, 4, 5, 6], [CLS_ID, 7, STOP_ID, PAD_ID]])
    logits = dec(tokens, words, memory)
    assert logits.shape == (2, 4, V)
    changed = tokens.clone()
    changed[:, 3] = 9
    torch.testing.assert_close(dec(changed, words, memory)[:, :3], logits[:, :3])


def test_logits_are_dot_products_with_mapped_word_vectors() -> None:
    dec, words, memory = _decoder()
    logits = dec(torch.tensor([[CLS_ID]]), words, memory[:1])
    h = dec.decoder(dec.input_proj(words[[CLS_ID]])[None], memory[:1])
    torch.testing.assert_close(logits[0, 0], (h[0, 0] @ dec.output_proj(words).T))


def test_memory_padding_mask() -> None:
    dec, words, memory = _decoder()
    mask = torch.tensor([[False, False, False, True, True]] * 2)
    other = memory.clone()
    other[:, 3:] = 100.0
    tokens = torch.tensor([[CLS_ID, 4]] * 2)
    torch.testing.assert_close(dec(tokens, words, memory, mask), dec(tokens, words, other, mask))


def test_greedy_decoding_is_argmax_and_pads_after_stop() -> None:
    dec, words, memory = _decoder()
    tokens, scores = dec.generate(words, memory, max_len=6)
    assert tokens.shape[0] == 2 and (tokens[:, 0] == CLS_ID).all() and tokens.shape[1] <= 6
    for row in tokens.tolist():
        if STOP_ID in row:
            assert all(t == PAD_ID for t in row[row.index(STOP_ID) + 1 :])
    # step 1 is the argmax of the teacher-forced distribution (specials other than stop excluded)
    logp = dec(tokens[:, :1], words, memory)[:, -1].log_softmax(-1)
    logp[:, [PAD_ID, CLS_ID, 3]] = float("-inf")
    assert torch.equal(tokens[:, 1], logp.argmax(-1))
    assert (scores <= 0).all()


def test_beam_search_scores_at_least_greedy() -> None:
    dec, words, memory = _decoder()
    g_tokens, g_scores = dec.generate(words, memory, max_len=4)
    b_tokens, b_scores = dec.generate(words, memory, max_len=4, num_beams=4, length_penalty=0.0)
    assert b_tokens.shape[0] == 2
    assert (b_scores >= g_scores - 1e-4).all()
    # one beam is greedy
    one, one_scores = dec.generate(words, memory, max_len=4, num_beams=1)
    assert torch.equal(one, g_tokens)


def test_beam_scores_are_sequence_log_probs() -> None:
    dec, words, memory = _decoder()
    tokens, scores = dec.generate(words, memory, max_len=4, num_beams=3, length_penalty=0.0)
    with torch.no_grad():
        logp = dec(tokens, words, memory).log_softmax(-1)
    for b in range(2):
        total = 0.0
        for t in range(1, tokens.shape[1]):
            total += float(logp[b, t - 1, tokens[b, t]])
            if tokens[b, t] == STOP_ID:
                break
        assert abs(total - float(scores[b])) < 1e-3


def test_k_way_restriction() -> None:
    dec, words, memory = _decoder()
    allowed = torch.zeros(V, dtype=torch.bool)
    allowed[[5, 8]] = True
    for beams in (1, 3):
        tokens, _ = dec.generate(words, memory, max_len=6, num_beams=beams, allowed=allowed)
        assert set(tokens[:, 1:].flatten().tolist()) <= {5, 8, STOP_ID, PAD_ID}
    per_sample = torch.zeros(2, V, dtype=torch.bool)
    per_sample[0, 9] = per_sample[1, 10] = True
    tokens, _ = dec.generate(words, memory, max_len=3, allowed=per_sample)
    assert set(tokens[0, 1:].tolist()) <= {9, STOP_ID, PAD_ID}
    assert set(tokens[1, 1:].tolist()) <= {10, STOP_ID, PAD_ID}


def test_position_encoding_option() -> None:
    dec, words, memory = _decoder(position_encoding=True)
    assert dec(torch.tensor([[CLS_ID, 4, 4]] * 2), words, memory).shape == (2, 3, V)
    pe = sinusoidal_positions(5, 6)
    assert pe.shape == (5, 6) and torch.allclose(pe[0, 1::2], torch.ones(3))
