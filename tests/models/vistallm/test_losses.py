"""VistaLLM's answer loss: plain cross-entropy and Gaussian soft targets on coordinate tokens."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.losses import IGNORE_INDEX, answer_loss, coordinate_soft_targets
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.tasks import TaskSample

VOCAB, COORDS = 12, torch.tensor([4, 5, 6, 7, 8, 9])  # six bins at ids 4..9


def test_soft_targets_are_normalised_gaussians_around_the_bin() -> None:
    q = coordinate_soft_targets(torch.tensor([0, 3]), 6, sigma=1.0)
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    assert q[1].argmax() == 3 and q[0].argmax() == 0
    torch.testing.assert_close(q[1, 2], q[1, 4])  # symmetric
    assert q[1, 2] / q[1, 3] == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="sigma"):
        coordinate_soft_targets(torch.tensor([0]), 6, sigma=0.0)


def test_zero_sigma_is_the_plain_cross_entropy() -> None:
    logits = torch.randn(5, VOCAB)
    targets = torch.tensor([1, 5, IGNORE_INDEX, 9, 2])
    expected = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(answer_loss(logits, targets), expected)
    torch.testing.assert_close(answer_loss(logits, targets, coord_token_ids=COORDS), expected)


def test_soft_targets_prefer_near_misses_and_leave_words_alone() -> None:
    # both rows give the target bin 3 (id 7) the same probability; the rest sits on bin 2 or on bin 5
    near, far = torch.full((VOCAB,), -10.0), torch.full((VOCAB,), -10.0)
    near[[7, 6]] = torch.tensor([1.0, 2.0])
    far[[7, 9]] = torch.tensor([1.0, 2.0])
    target = torch.tensor([7])
    plain = [answer_loss(row[None], target) for row in (near, far)]
    soft = [
        answer_loss(row[None], target, coord_token_ids=COORDS, coord_label_sigma=1.0) for row in (near, far)
    ]
    torch.testing.assert_close(plain[0], plain[1])
    assert soft[0] < soft[1] - 1.0
    # word tokens (ids outside COORDS) keep their one-hot target, ignored tokens stay out of the mean
    logits, words = torch.randn(3, VOCAB), torch.tensor([1, IGNORE_INDEX, 3])
    expected = F.cross_entropy(logits, words, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(
        answer_loss(logits, words, coord_token_ids=COORDS, coord_label_sigma=2.0), expected
    )


def test_soft_loss_equals_the_cross_entropy_against_the_mixed_targets() -> None:
    logits = torch.randn(4, VOCAB)
    targets = torch.tensor([6, 2, IGNORE_INDEX, 9])
    q = torch.zeros(4, VOCAB)
    q[0, COORDS] = coordinate_soft_targets(torch.tensor([2]), 6, 1.5)[0]
    q[1, 2] = 1.0
    q[3, COORDS] = coordinate_soft_targets(torch.tensor([5]), 6, 1.5)[0]
    rows = [0, 1, 3]
    expected = F.cross_entropy(logits[rows], q[rows])
    got = answer_loss(logits, targets, coord_token_ids=COORDS, coord_label_sigma=1.5)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="coord_token_ids"):
        answer_loss(logits, targets, coord_label_sigma=1.0)


def test_model_smooths_its_coordinate_tokens(
    tiny_config: VistaLLMConfig, tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    tokenizer = tiny_processor.tokenizer
    batch = tiny_processor.collate([tiny_processor.encode(samples[k], train=True) for k in ("rec", "vqa")])
    losses = {}
    for sigma in (0.0, 2.0):
        torch.manual_seed(0)
        config = dataclasses.replace(tiny_config, coord_label_sigma=sigma)
        model = VistaLLM.from_config(config, tokenizer=tokenizer).eval()
        with torch.no_grad():  # added tokens start as one mean row: every bin would score the same
            model.llm.get_output_embeddings().weight.normal_(0.0, 1.0)
        expected_ids = tokenizer.convert_tokens_to_ids([f"<c{i}>" for i in range(config.num_bins)])
        assert list(model.coord_token_ids) == expected_ids
        with torch.no_grad():
            losses[sigma] = float(model(**batch.model_inputs()).loss)
    assert losses[2.0] != pytest.approx(losses[0.0], abs=1e-3)
    with pytest.raises(ValueError, match="coord_label_sigma"):
        dataclasses.replace(tiny_config, coord_label_sigma=-1.0)
