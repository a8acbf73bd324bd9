from __future__ import annotations

import io

import pytest
import torch

from lightning_gpv.models.gpv1 import GPV1, GPV1Config
from lightning_gpv.models.gpv1.vocab import CLS_ID, STOP_ID


def _inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "pixel_values": torch.randn(batch, 3, 64, 64),
        "input_ids": torch.randint(5, 100, (batch, 6)),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])[:batch],
    }


def test_forward_shapes(tiny_model: GPV1) -> None:
    answers = torch.tensor([[CLS_ID, 5, 6, STOP_ID], [CLS_ID, 7, STOP_ID, 0]])
    out = tiny_model(**_inputs(), answer_ids=answers)
    assert out.boxes.shape == (2, 10, 4)
    assert (
        out.relevance_logits.shape
        == out.objectness_logits.shape
        == out.relatedness_logits.shape
        == (2, 10, 2)
    )
    torch.testing.assert_close(out.relevance_logits, out.objectness_logits + out.relatedness_logits)
    assert out.relevance.shape == (2, 10) and ((out.relevance >= 0) & (out.relevance <= 1)).all()
    assert out.memory.shape == (2, 10 + 6, 32)
    assert out.memory_padding_mask.tolist()[1] == [False] * 14 + [True] * 2
    assert out.answer_logits.shape == (2, 4, 32)


def test_outputs_do_not_depend_on_batch_padding(tiny_model: GPV1) -> None:
    inputs = _inputs()
    short = {k: v[1:] for k, v in inputs.items()}
    short["input_ids"], short["attention_mask"] = short["input_ids"][:, :4], short["attention_mask"][:, :4]
    answers = torch.tensor([[CLS_ID, 5, STOP_ID]])
    a = tiny_model(**short, answer_ids=answers)
    b = tiny_model(**{k: v[1:] for k, v in inputs.items()}, answer_ids=answers)
    torch.testing.assert_close(a.relevance_logits, b.relevance_logits)
    torch.testing.assert_close(a.answer_logits, b.answer_logits)


def test_unmasked_padding_as_the_reference(tiny_config: GPV1Config) -> None:
    tiny_config.mask_text_padding = False
    model = GPV1(tiny_config).eval()
    out = model(**_inputs())
    assert out.memory_padding_mask is None


def test_relevance_conditioning_switch(tiny_config: GPV1Config) -> None:
    torch.manual_seed(0)
    on = GPV1(tiny_config).eval()
    tiny_config.relevance_conditioning = False
    torch.manual_seed(0)
    off = GPV1(tiny_config).eval()
    assert on.conditioning is not None and off.conditioning is None
    assert on.parameter_breakdown()["total"] - off.parameter_breakdown()["total"] == 2 * 32
    state = {k: v for k, v in on.state_dict().items() if not k.startswith("conditioning.")}
    off.load_state_dict(state)
    inputs, answers = _inputs(), torch.tensor([[CLS_ID, 5]] * 2)
    a, b = on(**inputs, answer_ids=answers), off(**inputs, answer_ids=answers)
    torch.testing.assert_close(a.relevance_logits, b.relevance_logits)  # relevance is computed before
    assert not torch.allclose(a.answer_logits, b.answer_logits)  # ... and conditions the text
    region_delta = a.memory[:, :10] - b.memory[:, :10]
    expected = a.relevance_logits.softmax(-1) @ on.conditioning.tokens
    torch.testing.assert_close(region_delta, expected, atol=1e-5, rtol=0)


def test_text_loss_reaches_relevance_only_with_conditioning(tiny_config: GPV1Config) -> None:
    for conditioning in (True, False):
        tiny_config.relevance_conditioning = conditioning
        model = GPV1(tiny_config)
        out = model(**_inputs(), answer_ids=torch.tensor([[CLS_ID, 5]] * 2))
        out.answer_logits.sum().backward()
        grad = model.visual.objectness.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == conditioning


def test_generate(tiny_model: GPV1) -> None:
    enc = tiny_model.encode(**_inputs())
    tokens, scores = tiny_model.generate(enc, max_len=5)
    assert tokens.shape[0] == 2 and tokens.shape[1] <= 5 and scores.shape == (2,)
    beam_tokens, _ = tiny_model.generate(enc, max_len=5, num_beams=3)
    assert beam_tokens.shape[0] == 2


def test_answer_vectors_are_a_saved_buffer(tiny_model: GPV1, tiny_config: GPV1Config) -> None:
    assert "answer_vectors" in tiny_model.state_dict()
    assert all(p is not tiny_model.answer_vectors for p in tiny_model.parameters())
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_model.set_answer_vectors(torch.zeros(3, 32))
    buf = io.BytesIO()
    torch.save(tiny_model.state_dict(), buf)
    buf.seek(0)
    other = GPV1(tiny_config).eval()
    other.load_state_dict(torch.load(buf, weights_only=True))
    inputs = _inputs()
    torch.testing.assert_close(
        tiny_model(**inputs, answer_ids=torch.tensor([[CLS_ID, 4]] * 2)).answer_logits,
        other(**inputs, answer_ids=torch.tensor([[CLS_ID, 4]] * 2)).answer_logits,
        rtol=0,
        atol=0,
    )
