from __future__ import annotations

import torch

from lightning_gpv.models.gpv1.coattention import CoAttention


def _coattention() -> CoAttention:
    torch.manual_seed(0)
    return CoAttention(hidden=16, num_layers=2, num_heads=4, ffn_dim=32, dropout=0.0).eval()


def test_shapes() -> None:
    text, regions = _coattention()(torch.randn(3, 7, 16), torch.randn(3, 5, 16))
    assert text.shape == (3, 7, 16) and regions.shape == (3, 5, 16)


def test_padding_mask_hides_padding_from_regions() -> None:
    co = _coattention()
    text, regions = torch.randn(1, 6, 16), torch.randn(1, 5, 16)
    pad = torch.tensor([[False, False, False, False, True, True]])
    other = text.clone()
    other[:, 4:] = torch.randn(1, 2, 16) * 10  # change only the padding tokens
    t1, r1 = co(text, regions, pad)
    t2, r2 = co(other, regions, pad)
    torch.testing.assert_close(r1, r2)
    torch.testing.assert_close(t1[:, :4], t2[:, :4])
    # Without the mask (as the reference), padding leaks into the regions.
    _, r3 = co(text, regions, None)
    _, r4 = co(other, regions, None)
    assert not torch.allclose(r3, r4)


def test_padding_mask_makes_batch_padding_irrelevant() -> None:
    co = _coattention()
    text, regions = torch.randn(1, 4, 16), torch.randn(1, 5, 16)
    padded = torch.cat([text, torch.zeros(1, 3, 16)], dim=1)
    mask = torch.tensor([[False] * 4 + [True] * 3])
    t1, r1 = co(text, regions, torch.zeros(1, 4, dtype=torch.bool))
    t2, r2 = co(padded, regions, mask)
    torch.testing.assert_close(r1, r2)
    torch.testing.assert_close(t1, t2[:, :4])
