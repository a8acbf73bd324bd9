"""Presets and the parameter count of the paper-sized models, built on the meta device (no download)."""

from __future__ import annotations

import pytest
import torch

from lightning_gpv.models.vistallm.config import VisionConfig, VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.tokenization import added_tokens


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_presets_hold_the_paper_numbers() -> None:
    cfg = VistaLLMConfig.vistallm_7b()
    assert (cfg.vision.open_clip_name, cfg.vision.open_clip_pretrained) == (
        "EVA01-g-14",
        "laion400m_s11b_b41k",
    )
    assert cfg.vision.num_tokens == 257 and cfg.vision.feature_index == 38
    assert (cfg.qformer.num_queries, cfg.qformer.hidden_size, cfg.qformer.num_layers) == (32, 768, 12)
    assert cfg.llm.hidden_size == 4096 and cfg.llm.num_layers == 32 and cfg.llm.vocab_size == 32000
    assert (cfg.num_bins, cfg.num_mask_points) == (1000, 32)
    big = VistaLLMConfig.vistallm_13b()
    assert (big.llm.hidden_size, big.llm.num_layers) == (5120, 40)
    assert len(added_tokens(cfg.codec)) == 1003  # 1000 bins, <bsep>, <msep>, <image>


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="instruction"):
        VistaLLMConfig(prompt_template="no slot")
    with pytest.raises(ValueError, match="feature_layer"):
        VistaLLMConfig(vision=VisionConfig(depth=4, feature_layer=7))


def test_vistallm_7b_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        model = VistaLLM.from_config(VistaLLMConfig.vistallm_7b(), load_weights=False)
    eva, tokenizer, llm = _count(model.vision), _count(model.tokenizer), _count(model.llm)
    # EVA01-g-14 has 1011.1M trunk parameters; the last block, final norm and head are pruned (39 blocks).
    assert eva == pytest.approx(0.986e9, rel=0.01)
    qformer = _count(model.tokenizer.qformer)
    assert qformer == pytest.approx(0.1857e9, rel=0.01)
    assert tokenizer - qformer == 768 * 4096 + 4096 + 32 * 768 + 2 * 1408  # projection, queries, LayerNorm
    vicuna = 6_738_415_616
    assert llm == vicuna + 2 * 1003 * 4096  # new input and output rows
    assert _count(model) == pytest.approx(7.92e9, rel=0.01)
    assert model.image_token_id == 32000 + 1002


def test_vistallm_13b_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        model = VistaLLM.from_config(VistaLLMConfig.vistallm_13b(), load_weights=False)
    assert _count(model.llm) == 13_015_864_320 + 2 * 1003 * 5120


def _bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_vistallm_7b_lora_adapter_is_a_small_part_of_the_model_on_meta() -> None:
    # The paper-sized model with the default LoRA settings: the adapter folder holds the adapters, the
    # added tokens' rows and the instruction-guided tokenizer; EVA and Vicuna come from their base names.
    config = VistaLLMConfig.from_name("7b", llm={"lora": {}})
    with torch.device("meta"):
        model = VistaLLM.from_config(config, load_weights=False)
    adapter = model.adapter_state_dict()
    assert not any(k.startswith("vision.") for k in adapter)
    assert {k for k in adapter if k.startswith("tokenizer.")} == {
        k for k in model.state_dict() if k.startswith("tokenizer.")
    }
    llm = [k for k in adapter if k.startswith("llm.")]
    assert llm and all("lora_" in k or "trainable_tokens_delta" in k for k in llm)
    rows = [adapter[k] for k in llm if "trainable_tokens_delta" in k]
    assert [tuple(t.shape) for t in rows] == [(1003, 4096)] * 2  # embedding and untied head
    # A merged export holds the base model's weights once (no adapters, no kept originals).
    merged = {k: v for k, v in model.state_dict().items() if "lora_" not in k and "trainable_tokens" not in k}
    ratio = _bytes(adapter) / _bytes(merged)
    assert ratio == pytest.approx(0.033, abs=0.003)  # 264M of 7.92B parameters
