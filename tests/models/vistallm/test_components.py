"""Image encoder, instruction-guided tokenizer (InstructBLIP weights), LLM added tokens, tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
)

from lightning_gpv.models.vistallm.codec import CoordinateCodec
from lightning_gpv.models.vistallm.llm import build_llama, resize_with_mean
from lightning_gpv.models.vistallm.qformer import InstructionGuidedTokenizer
from lightning_gpv.models.vistallm.tokenization import added_tokens, build_word_tokenizer
from lightning_gpv.models.vistallm.vision import (
    EvaFeatures,
    build_eva_trunk,
    sincos_position_table,
    use_sincos_positions,
)


def _trunk(depth: int = 3) -> torch.nn.Module:
    return build_eva_trunk(
        timm_name="eva_giant_patch14_224",
        image_size=32,
        patch_size=8,
        width=32,
        depth=depth,
        num_heads=2,
        mlp_ratio=2.0,
    )


def test_eva_features_are_the_penultimate_block_without_norm() -> None:
    torch.manual_seed(0)
    trunk = _trunk().eval()
    x = torch.randn(2, 3, 32, 32)
    features = EvaFeatures(_trunk_copy(trunk), feature_index=1, keep_prefix_tokens=True).eval()
    assert len(features.trunk.blocks) == 2  # the last block is pruned
    with torch.no_grad():
        out = features(x)
        manual = _manual_blocks(trunk, x, 2)
    assert out.shape == (2, 1 + 16, 32)
    torch.testing.assert_close(out, manual)
    no_cls = EvaFeatures(_trunk_copy(trunk), feature_index=1, keep_prefix_tokens=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(no_cls(x), manual[:, 1:])


def _trunk_copy(trunk: torch.nn.Module) -> torch.nn.Module:
    copy = _trunk()
    copy.load_state_dict(trunk.state_dict())
    return copy


def _manual_blocks(trunk: torch.nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """Run the first ``n`` blocks by hand (timm's own pieces), no final norm."""
    tokens = trunk.patch_embed(x)
    tokens, rope = trunk._pos_embed(tokens)
    tokens = trunk.norm_pre(tokens)
    for block in trunk.blocks[:n]:
        tokens = block(tokens, rope=rope)
    return tokens


def test_eva_rejects_a_feature_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="feature_index"):
        EvaFeatures(_trunk(), feature_index=3, keep_prefix_tokens=True)


def _tiny_tokenizer(llm_width: int = 24) -> InstructionGuidedTokenizer:
    return InstructionGuidedTokenizer(vision_width=32, llm_width=llm_width, num_queries=4, hidden_size=16,
                                      num_layers=2, num_heads=2, intermediate_size=32, vocab_size=50,
                                      max_position_embeddings=32, cross_attention_frequency=2)  # fmt: skip


def _save_instructblip(folder: Path, llm_width: int, sharded: bool) -> InstructBlipForConditionalGeneration:
    vision = InstructBlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, image_size=32, patch_size=8)  # fmt: skip
    qformer = InstructBlipQFormerConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        encoder_hidden_size=32,
    )
    text = LlamaConfig(vocab_size=60, hidden_size=llm_width, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    config = InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                                text_config=text.to_dict(), num_query_tokens=4)  # fmt: skip
    torch.manual_seed(1)
    model = InstructBlipForConditionalGeneration(config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder.mkdir()
    if not sharded:
        save_file(state, str(folder / "model.safetensors"))
        return model
    # Two shards with "model."-prefixed keys, as newer checkpoints have; the LLM shard is never read.
    qformer_keys = {k for k in state if not k.startswith("language_model.")}
    save_file(
        {f"model.{k}": state[k] for k in qformer_keys}, str(folder / "model-00001-of-00002.safetensors")
    )
    save_file({f"model.{k}": state[k] for k in set(state) - qformer_keys},
              str(folder / "model-00002-of-00002.safetensors"))  # fmt: skip
    weight_map = {
        f"model.{k}": f"model-0000{1 if k in qformer_keys else 2}-of-00002.safetensors" for k in state
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"not read")  # proves the LLM shard is skipped
    return model


@pytest.mark.parametrize("sharded", [False, True])
def test_qformer_weights_load_from_an_instructblip_checkpoint(tmp_path: Path, sharded: bool) -> None:
    reference = _save_instructblip(tmp_path / "ckpt", llm_width=24, sharded=sharded)
    module = _tiny_tokenizer(llm_width=24)
    missing = module.load_instructblip(tmp_path / "ckpt")
    assert missing == []
    torch.testing.assert_close(module.query_tokens, reference.query_tokens)
    torch.testing.assert_close(module.projection.weight, reference.language_projection.weight)
    torch.testing.assert_close(module.ln_vision.weight, reference.vision_model.post_layernorm.weight)
    for name, value in reference.qformer.state_dict().items():
        torch.testing.assert_close(module.qformer.state_dict()[name], value)


def test_qformer_load_keeps_a_projection_of_another_width(tmp_path: Path) -> None:
    _save_instructblip(tmp_path / "ckpt", llm_width=24, sharded=False)
    module = _tiny_tokenizer(llm_width=40)
    assert set(module.load_instructblip(tmp_path / "ckpt")) == {"projection.weight", "projection.bias"}


def test_new_token_rows_are_the_mean_of_the_old_ones() -> None:
    torch.manual_seed(0)
    llm = build_llama(vocab_size=30, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=1e4,
                      tie_word_embeddings=False)  # fmt: skip
    old_in = llm.get_input_embeddings().weight.detach().clone()
    old_out = llm.get_output_embeddings().weight.detach().clone()
    resize_with_mean(llm, 35, [30, 31, 32, 33, 34])
    new_in, new_out = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
    assert new_in.shape == (35, 16) and new_out.shape == (35, 16)
    torch.testing.assert_close(new_in[:30], old_in)
    torch.testing.assert_close(new_in[30:], old_in.mean(0).expand(5, -1))
    torch.testing.assert_close(new_out[30:], old_out.mean(0).expand(5, -1))
    # Added ids inside the vocabulary (a padded vocabulary) are overwritten by the mean of the others.
    rows = llm.get_input_embeddings().weight.detach().clone()
    resize_with_mean(llm, 35, [3])
    torch.testing.assert_close(
        llm.get_input_embeddings().weight[3], rows[[i for i in range(35) if i != 3]].mean(0)
    )


def test_word_tokenizer_keeps_added_tokens_whole_and_covers_ascii() -> None:
    tokenizer = build_word_tokenizer(["circle"])
    codec = CoordinateCodec(num_bins=1000, num_mask_points=32)
    tokenizer.add_tokens(added_tokens(codec), special_tokens=True)
    text = "Locate the red circle <image> [<c0><c999>]<bsep>[<c5><c6>]<msep> xyzzy 42!"
    ids = tokenizer(text, add_special_tokens=True).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s>" and tokenizer.unk_token not in tokens
    assert {"<image>", "<c0>", "<c999>", "<bsep>", "<msep>", "circle"} <= set(tokens)
    assert tokens.count("<c5>") == 1 and len([t for t in tokens if t.startswith("<c")]) == 4
    decoded = tokenizer.decode(ids[1:], skip_special_tokens=False)
    assert "xyzzy" in decoded and "<c999>" in decoded


def test_sincos_positions_replace_the_patch_table() -> None:
    trunk = _trunk()
    use_sincos_positions(trunk)
    table = trunk.pos_embed[0].detach()
    assert torch.count_nonzero(table[0]) == 0  # CLS position
    torch.testing.assert_close(table[1:], sincos_position_table(4, 32))
    assert table[1:].abs().max() <= 1.0 and float(table[1:].pow(2).mean()) == pytest.approx(0.5)
    assert len({tuple(row.tolist()) for row in table[1:]}) == 16  # every patch position differs
