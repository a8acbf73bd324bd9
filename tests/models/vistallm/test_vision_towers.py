"""CLIP and SigLIP image encoders (transformers towers): chosen block, token counts, pretrained folders,
normalisation, and a tiny VistaLLM on each (stages, gradients, generation, FSDP units)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, PreTrainedModel, SiglipConfig, SiglipModel
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from lightning_gpv.fsdp_units import describe_units
from lightning_gpv.models.vistallm.build import FSDP_LAYER_CLASSES, FSDP_UNIT_CLASSES, build_vistallm
from lightning_gpv.models.vistallm.config import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VisionConfig,
    VistaLLMConfig,
)
from lightning_gpv.models.vistallm.vision import (
    TransformersVisionFeatures,
    build_transformers_tower,
    build_vision_encoder,
    sincos_position_table,
)
from lightning_gpv.strategies import VistaLLMFSDPStrategy
from lightning_gpv.tasks import TaskSample

REPO = Path(__file__).resolve().parents[3]
TOWERS = ("clip", "siglip")
TINY = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0}
"""A 4 x 4 patch grid, 3 blocks: block 1 is the penultimate one."""


def _vision(tower: str, **fields: object) -> VisionConfig:
    return VisionConfig(tower=tower, **{**TINY, **fields})  # type: ignore[arg-type]


def _tower(tower: str, seed: int = 0, **fields: object) -> PreTrainedModel:
    """A full random tower (3 blocks, post layernorm, no pruning)."""
    torch.manual_seed(seed)
    return build_transformers_tower(_vision(tower, **fields)).eval()


def _blocks_by_hand(tower: PreTrainedModel, x: torch.Tensor, n: int) -> torch.Tensor:
    """Embeddings (then CLIP's ``pre_layrnorm``) and the first ``n`` blocks, called one by one."""
    tokens = tower.embeddings(x)
    if hasattr(tower, "pre_layrnorm"):
        tokens = tower.pre_layrnorm(tokens)
    for layer in tower.encoder.layers[:n]:
        tokens = layer(tokens, None)
    return tokens


def _images(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------------------------------
# Config


def test_normalisation_and_token_count_follow_the_tower() -> None:
    clip, siglip, eva = _vision("clip"), _vision("siglip"), VisionConfig()
    assert (clip.mean, clip.std) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) == (eva.mean, eva.std)
    assert (siglip.mean, siglip.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert _vision("siglip", mean=[0.1, 0.2, 0.3]).mean == (0.1, 0.2, 0.3)  # explicit values win
    assert (clip.num_tokens, _vision("clip", keep_prefix_tokens=False).num_tokens) == (17, 16)
    assert (siglip.num_prefix_tokens, siglip.num_tokens) == (0, 16)  # no CLS, whatever keep_prefix_tokens
    assert _vision("siglip", keep_prefix_tokens=False).num_tokens == 16
    assert clip.feature_index == 1
    # A recipe switching a preset's tower passes mean/std as None to get the new tower's.
    switched = VistaLLMConfig.from_name("tiny", vision={"tower": "siglip", "mean": None, "std": None})
    assert switched.vision.mean == (0.5, 0.5, 0.5) and switched.vision.num_tokens == 64


def test_invalid_tower_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="tower"):
        VisionConfig(tower="vit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hf_name_or_path"):
        VisionConfig(hf_name_or_path="openai/clip-vit-large-patch14")  # EVA takes open_clip weights
    with pytest.raises(ValueError, match="3 values"):
        _vision("clip", mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="224 or 336"):
        VisionConfig.clip_vit_large(image_size=448)


def test_presets_of_hub_towers() -> None:
    large, large_336 = VisionConfig.clip_vit_large(), VisionConfig.clip_vit_large(336)
    assert large.hf_name_or_path == "openai/clip-vit-large-patch14" and large.num_tokens == 257
    assert large_336.hf_name_or_path == "openai/clip-vit-large-patch14-336" and large_336.num_tokens == 577
    assert large.mean == OPENAI_CLIP_MEAN and large.feature_index == 22
    base, so400m = VisionConfig.siglip_base(), VisionConfig.siglip_so400m()
    assert (base.num_tokens, so400m.num_tokens) == (196, 729)
    assert base.mean == so400m.std == (0.5, 0.5, 0.5) and so400m.feature_index == 25
    assert VisionConfig.siglip_base(hf_name_or_path="/models/siglip").hf_name_or_path == "/models/siglip"


def test_clip_large_on_meta_drops_the_last_block_and_post_layernorm() -> None:
    config = VisionConfig.clip_vit_large()
    with torch.device("meta"):
        full = build_transformers_tower(config)
        encoder = build_vision_encoder(config, load_weights=False)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(full) == 303_179_776  # CLIP ViT-L/14 vision tower
    assert count(encoder) == count(full) - count(full.encoder.layers[-1]) - 2 * 1024


# ----------------------------------------------------------------------------------------------------
# Features


@pytest.mark.parametrize("tower", TOWERS)
def test_features_are_the_penultimate_block_output_without_post_layernorm(tower: str) -> None:
    full = _tower(tower)
    x = _images()
    features = TransformersVisionFeatures(
        copy.deepcopy(full), feature_index=1, keep_prefix_tokens=True
    ).eval()
    assert len(features.tower.encoder.layers) == 2  # the last block is pruned
    assert isinstance(features.tower.post_layernorm, torch.nn.Identity)
    assert not hasattr(features.tower, "head")
    with torch.no_grad():
        out = features(x)
        by_hand = _blocks_by_hand(full, x, 2)
        reference = full(pixel_values=x, output_hidden_states=True)
    prefix = 1 if tower == "clip" else 0
    assert out.shape == (2, prefix + 16, 32)
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(out, reference.hidden_states[-2])
    torch.testing.assert_close(reference.hidden_states[0], _blocks_by_hand(full, x, 0))  # the embeddings
    normed = full.post_layernorm(by_hand)
    assert not torch.allclose(out, normed, atol=1e-3)  # no post layernorm
    no_cls = TransformersVisionFeatures(copy.deepcopy(full), feature_index=1, keep_prefix_tokens=False)
    with torch.no_grad():
        torch.testing.assert_close(no_cls.eval()(x), by_hand[:, prefix:])


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("keep", [True, False])
def test_token_count_matches_the_config(tower: str, keep: bool) -> None:
    config = _vision(tower, keep_prefix_tokens=keep, position_embedding="sincos")
    encoder = build_vision_encoder(config, load_weights=False).eval()
    assert isinstance(encoder, TransformersVisionFeatures) and encoder.width == config.width
    with torch.no_grad():
        assert encoder(_images(3)).shape == (3, config.num_tokens, config.width)
    positions = encoder.tower.embeddings.position_embedding.weight
    prefix = 1 if tower == "clip" else 0
    torch.testing.assert_close(positions[prefix:], sincos_position_table(4, 32))
    assert not positions[:prefix].any()


def test_feature_layer_counts_blocks_as_for_eva() -> None:
    full = _tower("clip")
    x = _images()
    with torch.no_grad():
        states = full(pixel_values=x, output_hidden_states=True).hidden_states
    for feature_layer, state in ((0, 1), (-3, 1), (-1, 3), (2, 3)):
        config = _vision("clip", feature_layer=feature_layer)
        encoder = TransformersVisionFeatures(
            copy.deepcopy(full), feature_index=config.feature_index, keep_prefix_tokens=True
        ).eval()
        with torch.no_grad():
            torch.testing.assert_close(encoder(x), states[state])
    with pytest.raises(ValueError, match="feature_index"):
        TransformersVisionFeatures(copy.deepcopy(full), feature_index=3, keep_prefix_tokens=True)


def test_gradient_checkpointing_of_a_trainable_tower() -> None:
    features = TransformersVisionFeatures(_tower("siglip"), feature_index=1, keep_prefix_tokens=True).train()
    x = _images()
    plain = features(x)
    plain.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in features.named_parameters()}
    features.zero_grad()
    features.set_grad_checkpointing(True)
    assert features.tower.encoder.gradient_checkpointing
    checkpointed = features(x)
    checkpointed.square().mean().backward()
    torch.testing.assert_close(checkpointed, plain)
    for name, param in features.named_parameters():
        torch.testing.assert_close(param.grad, grads[name])
    features.set_grad_checkpointing(False)
    assert not features.tower.encoder.gradient_checkpointing


# ----------------------------------------------------------------------------------------------------
# Pretrained towers from folders


def _whole_model(tower: str, vision: PreTrainedModel) -> PreTrainedModel:
    """A whole CLIP/SigLIP model (text half included, as on the hub) holding ``vision``'s weights."""
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # fmt: skip
    vision_config = vision.config.to_dict()
    if tower == "clip":
        whole = CLIPModel(CLIPConfig(vision_config=vision_config, text_config=text))
    else:
        whole = SiglipModel(SiglipConfig(vision_config=vision_config, text_config=text))
    whole.vision_model.load_state_dict(vision.state_dict())
    return whole


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("layout", ["vision", "whole"])
def test_pretrained_tower_loads_from_a_folder(tower: str, layout: str, tmp_path: Path) -> None:
    saved = _tower(tower, seed=3)
    (saved if layout == "vision" else _whole_model(tower, saved)).save_pretrained(tmp_path)
    config = _vision(tower, hf_name_or_path=str(tmp_path), position_embedding="sincos")
    x = _images()
    with torch.no_grad():
        expected = saved(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        loaded = build_vision_encoder(config, load_weights=True).eval()
        torch.testing.assert_close(loaded(x), expected)  # the saved weights, sincos not applied
        random = build_vision_encoder(config, load_weights=False).eval()  # dimensions only
        assert not torch.allclose(random(x), expected)
    assert loaded.tower.config.model_type == f"{tower}_vision_model"
    assert {n for n, _ in loaded.named_parameters()} == {n for n, _ in random.named_parameters()}


def test_pretrained_tower_must_match_the_config(tmp_path: Path) -> None:
    _tower("clip").save_pretrained(tmp_path / "narrow")
    with pytest.raises(ValueError, match="width: the tower has hidden_size=32"):
        build_vision_encoder(_vision("clip", width=48, hf_name_or_path=str(tmp_path / "narrow")))
    with pytest.raises(ValueError, match="depth"):
        build_vision_encoder(_vision("clip", depth=4, hf_name_or_path=str(tmp_path / "narrow")))
    # The activation is not stored in the weights: a saved VistaLLM folder rebuilds the tower from the
    # config, so it must be in the config.
    _tower("clip", hidden_act="gelu").save_pretrained(tmp_path / "gelu")
    with pytest.raises(ValueError, match="hidden_act"):
        build_vision_encoder(_vision("clip", hf_name_or_path=str(tmp_path / "gelu")))
    encoder = build_vision_encoder(_vision("clip", hidden_act="gelu", hf_name_or_path=str(tmp_path / "gelu")))
    assert encoder.tower.config.hidden_act == "gelu"
    with pytest.raises(OSError):
        build_vision_encoder(_vision("siglip", hf_name_or_path=str(tmp_path / "missing")))
    # A checkpoint without some of the tower's weights is refused (no silently random block).
    weights = load_file(tmp_path / "narrow" / "model.safetensors")
    partial = {k: v for k, v in weights.items() if ".layers.0.mlp." not in k}
    save_file(partial, tmp_path / "narrow" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no weights for"):
        build_vision_encoder(_vision("clip", hf_name_or_path=str(tmp_path / "narrow")))


def test_normalisation_must_agree_with_the_tower_image_processor(tmp_path: Path) -> None:
    _tower("siglip").save_pretrained(tmp_path)
    processor = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32}}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    assert build_vision_encoder(_vision("siglip", hf_name_or_path=str(tmp_path))) is not None
    wrong = _vision("siglip", hf_name_or_path=str(tmp_path), mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    with pytest.raises(ValueError, match="image processor"):
        build_vision_encoder(wrong)


# ----------------------------------------------------------------------------------------------------
# A tiny VistaLLM on each tower


def _tiny_config(tower: str) -> VistaLLMConfig:
    vision = VisionConfig(tower=tower, image_size=64, patch_size=8, width=64, depth=3, num_heads=2,
                          mlp_ratio=2.0, position_embedding="sincos")  # fmt: skip
    return dataclasses.replace(VistaLLMConfig.tiny(), vision=vision)


def _names(model: torch.nn.Module, prefix: str = "") -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefix)}


@pytest.mark.parametrize("tower", TOWERS)
def test_tiny_vistallm_trains_the_qformer_not_the_tower_and_generates(
    tower: str, samples: dict[str, TaskSample]
) -> None:
    torch.manual_seed(0)
    config = _tiny_config(tower)
    model, processor = build_vistallm(config, load_weights=False)
    assert isinstance(model.vision, TransformersVisionFeatures)
    expected_mean = (0.5,) * 3 if tower == "siglip" else OPENAI_CLIP_MEAN
    torch.testing.assert_close(processor.mean.flatten(), torch.tensor(expected_mean))

    model.set_stage(1)
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _names(model) - _names(model, "vision.")
    assert _names(model, "vision.tower.encoder.layers.")  # the tower exists and is frozen
    assert not model.vision.training and model.tokenizer.training
    batch = processor.collate([processor.encode(samples[k], train=True) for k in ("rec", "nlvr2")])
    with torch.no_grad():
        features = model.vision(batch.pixel_values)
    assert features.shape == (3, config.vision.num_tokens, 64)  # 1 + 2 images
    out = model(**batch.model_inputs())
    assert out.loss.isfinite()
    out.loss.backward()
    assert all(p.grad is None for p in model.vision.parameters())
    assert model.tokenizer.ln_vision.weight.grad is not None and model.tokenizer.ln_vision.weight.grad.any()
    assert model.tokenizer.query_tokens.grad is not None and model.tokenizer.query_tokens.grad.any()
    cross = [p.grad for n, p in model.tokenizer.qformer.named_parameters() if "crossattention" in n]
    assert cross and all(g is not None for g in cross) and any(g.any() for g in cross)

    model.set_stage(2)
    assert not any(p.requires_grad for p in model.vision.parameters())
    model.eval()
    generation = processor.collate([processor.encode(samples[k], train=False) for k in ("rec", "coseg")])
    tok = processor.tokenizer
    generated = model.generate(**generation.generation_inputs(), max_new_tokens=3, eos_token_id=-1,
                               pad_token_id=tok.pad_token_id)  # fmt: skip
    assert generated.shape == (2, 3)


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("stage", [1, 2])
def test_fsdp_units_keep_the_frozen_tower_apart(tower: str, stage: int) -> None:
    assert CLIPEncoderLayer in FSDP_LAYER_CLASSES and SiglipEncoderLayer in FSDP_LAYER_CLASSES
    assert TransformersVisionFeatures in FSDP_UNIT_CLASSES
    model, _ = build_vistallm(_tiny_config(tower), load_weights=False)
    model.set_stage(stage)
    units = describe_units(model, VistaLLMFSDPStrategy().wrap_policy)
    assert not [unit for unit in units if unit.mixed]
    by_name = {unit.name: unit for unit in units}
    assert by_name["vision"].class_name == "TransformersVisionFeatures"
    assert by_name["vision"].trainable_numel == 0 and by_name["vision"].frozen_numel > 0
    layer = "CLIPEncoderLayer" if tower == "clip" else "SiglipEncoderLayer"
    assert sum(unit.class_name == layer for unit in units) == 2  # blocks 0 and 1; block 2 is pruned
    assert "vision.tower" not in by_name  # the tower is called through the wrapper's forward only


_WORKER = r"""
import dataclasses, os, sys, torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from lightning_gpv.models.vistallm.config import VisionConfig, VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.strategies import VistaLLMFSDPStrategy

rank, world, init, tower = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)


class Root(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, method, *args, **kwargs):
        return getattr(self.model, method)(*args, **kwargs)


torch.manual_seed(0)
vision = VisionConfig(tower=tower, image_size=64, patch_size=8, width=64, depth=3, num_heads=2, mlp_ratio=2.0)
config = dataclasses.replace(VistaLLMConfig.tiny(), vision=vision)
vista = VistaLLM.from_config(config, load_weights=False).eval()
vista.set_stage(1)
L = vista.num_queries
ids = torch.cat([torch.full((2, L), vista.image_token_id), torch.randint(4, 500, (2, 6))], 1)
batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(2, 3, 64, 64),
             instruction_ids=torch.randint(4, 500, (2, 5)),
             instruction_mask=torch.ones(2, 5, dtype=torch.long), image_counts=torch.tensor([1, 1]),
             labels=ids.masked_fill(ids == vista.image_token_id, -100))
reference = vista(**batch).loss.item()
preset = VistaLLMFSDPStrategy()
root = FSDP(Root(vista), auto_wrap_policy=preset.wrap_policy, device_id=torch.device("cpu"),
            use_orig_params=True, sharding_strategy=preset.sharding_strategy)
apply_activation_checkpointing(root, checkpoint_wrapper_fn=checkpoint_wrapper,
                               auto_wrap_policy=preset.checkpoint_policy)
names = {type(m.module).__name__ for m in root.modules() if isinstance(m, FSDP)}
assert "TransformersVisionFeatures" in names, names
layer = "CLIPEncoderLayer" if tower == "clip" else "SiglipEncoderLayer"
checkpointed = [m for m in root.modules() if type(m).__name__ == "CheckpointWrapper"
                and type(m._checkpoint_wrapped_module).__name__ == layer]
assert len(checkpointed) == 2, len(checkpointed)
out = root("forward", **batch)
out.loss.backward()
assert abs(out.loss.item() - reference) < 1e-4, (out.loss.item(), reference)
with torch.no_grad():
    generated = root("generate", ids, torch.ones_like(ids), batch["pixel_values"], batch["instruction_ids"],
                     batch["instruction_mask"], batch["image_counts"], max_new_tokens=3, eos_token_id=-1,
                     pad_token_id=0)
assert generated.shape == (2, 3)
dist.barrier()
print(f"rank {rank} ok", flush=True)
dist.destroy_process_group()
os._exit(0)  # skip the interpreter teardown (a gloo thread being destroyed there can abort the process)
"""


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("tower", TOWERS)
def test_two_processes_full_shard(tower: str, tmp_path: Path, run_ranks: Callable[..., list[str]]) -> None:
    """With real sharding and activation checkpointing the tower's units are only entered through their
    forward, and the hidden states are still captured."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    run_ranks(script, 2, tmp_path / "init", tower)
