from __future__ import annotations

import torch

from lightning_gpv.models.gpv1.heads import RelatednessHead, RelevanceConditioning, relevance_scores


def test_relevance_scores_are_softmax_of_class_zero() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [-1.0, 3.0]]])
    torch.testing.assert_close(relevance_scores(logits), torch.sigmoid(logits[..., 0] - logits[..., 1]))


def test_relatedness_shape() -> None:
    assert RelatednessHead(8)(torch.randn(2, 5, 8)).shape == (2, 5, 2)


def test_conditioning_adds_weighted_tokens() -> None:
    cond = RelevanceConditioning(4)
    regions = torch.zeros(1, 2, 4)
    logits = torch.tensor([[[10.0, -10.0], [-10.0, 10.0]]])  # first relevant, second not
    out = cond(regions, logits)
    torch.testing.assert_close(out[0, 0], cond.tokens[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0, 1], cond.tokens[1], atol=1e-6, rtol=0)


def test_conditioning_passes_gradient_to_relevance() -> None:
    cond = RelevanceConditioning(4)
    logits = torch.zeros(1, 3, 2, requires_grad=True)
    cond(torch.randn(1, 3, 4), logits).pow(2).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
