"""The paper preset's size, built on the meta device (no memory, no download)."""

from __future__ import annotations

import torch

from lightning_gpv.models.gpv1 import GPV1, GPV1Config

# Reference (allenai/gpv-1) parameter counts per part, from /work/shared/reference/gpv1_reference.md.
REFERENCE = {
    "detr": 41_501_638,  # R50 convs 23,454,912 + transformer 17,363,456 + input proj + queries + heads
    "region_proj": 1_770_240,  # detr_joiner 2304 -> 768
    "text_encoder": 109_482_240,  # BERT-base-uncased with pooler
    "text_proj": 590_592,
    "coattention": 46_070_784,  # 3 x 15,356,928, of which 3 x 2 x 590,592 are never used (q_dense1/2)
    "relatedness": 1_538,
    "relevance_tokens": 26_112,  # v_rel/v_nrel 1,536 + unused vision/lang tokens 1,536 + pos_enc 23,040
    "text_decoder": 23_633_664,
    "answer_projections": 1_181_184,
}
REFERENCE_TOTAL = 224_257_992
UNUSED_IN_REFERENCE = {"coattention": 3 * 2 * 590_592, "relevance_tokens": 2 * 768 + 30 * 768}


def _paper() -> GPV1:
    with torch.device("meta"):
        return GPV1(GPV1Config.paper())


def test_meta_device_build_needs_no_download(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _paper()
    assert all(p.is_meta for p in model.parameters())
    assert model.answer_vectors.shape == (7600, 768)


def test_paper_parameter_count() -> None:
    parts = _paper().parameter_breakdown()
    assert sum(REFERENCE.values()) == REFERENCE_TOTAL
    for name, count in REFERENCE.items():
        assert parts[name] == count - UNUSED_IN_REFERENCE.get(name, 0), name
    assert parts["total"] == REFERENCE_TOTAL - sum(UNUSED_IN_REFERENCE.values()) == 220_689_864
    assert abs(parts["total"] - 224e6) / 224e6 < 0.02  # "about 224M" without the vocabulary tables


def test_paper_count_with_vocabulary_tables() -> None:
    model = _paper()
    total = sum(p.numel() for p in model.parameters())
    vocab_vectors = model.answer_vectors.numel()
    # The reference holds two identical frozen V x 768 tables; with V = 7.6k that is about 236M.
    assert abs(REFERENCE_TOTAL + 2 * vocab_vectors - 236e6) / 236e6 < 0.01
    # Here one buffer serves both roles.
    assert total + vocab_vectors == 220_689_864 + 7600 * 768


def test_trainable_split() -> None:
    model = _paper()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("query_encoder.bert.", "visual.detr.backbone.")) for n in frozen)
    bert = sum(p.numel() for p in model.query_encoder.bert.parameters())
    stem_and_stage1 = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith("visual.detr.backbone.") and not p.requires_grad
    )
    assert stem_and_stage1 == 9_408 + 212_992  # conv1 7x7 + the three bottlenecks of stage 1
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 220_689_864 - bert - stem_and_stage1
