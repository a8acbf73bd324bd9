"""The weight files shipped with the package: present, unchanged, loaded by the tiny presets and recipes,
and as good as their cards say on their held-out ShapesWorld samples."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from lightning_gpv.models import shipped
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder
from lightning_gpv.models.vistallm.build import build_vistallm
from lightning_gpv.models.vistallm.config import TINY_TOKENIZER_WEIGHTS, TINY_VISION_WEIGHTS, VistaLLMConfig
from lightning_gpv.models.vistallm.vision import build_vision_encoder
from lightning_gpv.pretraining import command
from lightning_gpv.pretraining.encoder import PatchHeads, evaluate
from lightning_gpv.shapesworld.files import sha256

SHIPPED = sorted(shipped.PRETRAINED_DIR.glob("*.safetensors"))
DETR_WEIGHTS = "shapes_detr_tiny.safetensors"
KEY = "trunk.patch_embed.proj.weight"


def test_every_shipped_file_is_small_has_a_card_and_matches_its_checksum() -> None:
    names = {path.name for path in SHIPPED}
    assert {TINY_VISION_WEIGHTS, TINY_TOKENIZER_WEIGHTS, DETR_WEIGHTS} <= names
    for path in SHIPPED:
        card = shipped.read_card(path)
        assert card, f"{path.name} has no card"
        assert path.stat().st_size < 2_000_000 and card["bytes"] == path.stat().st_size
        assert card["sha256"] == sha256(path), f"{path.name} differs from its card"
        assert card["command"].startswith("lightning-gpv pretrain-encoder") and "seed" in card
        assert card["part"] in command.PARTS


def test_the_tiny_preset_loads_the_shipped_encoder_and_tokenizer_and_can_stay_random() -> None:
    model, _ = build_vistallm(VistaLLMConfig.tiny(), load_weights=True)
    for module, name in ((model.vision, TINY_VISION_WEIGHTS), (model.tokenizer, TINY_TOKENIZER_WEIGHTS)):
        stored = shipped.read_part(shipped.resolve(name), shipped.ENCODER_PREFIX)
        loaded = module.state_dict()
        assert set(loaded) == set(stored) and all(torch.equal(loaded[k], stored[k]) for k in stored), name
    stored = shipped.read_part(shipped.resolve(TINY_VISION_WEIGHTS), shipped.ENCODER_PREFIX)
    for config in (
        VistaLLMConfig.from_name("tiny_scratch").vision,
        VistaLLMConfig.tiny(pretrained=False).vision,
    ):
        assert not torch.equal(build_vision_encoder(config).state_dict()[KEY], stored[KEY])
    unloaded = build_vision_encoder(VistaLLMConfig.tiny().vision, load_weights=False).state_dict()
    assert not torch.equal(unloaded[KEY], stored[KEY])


def _card_args(path: Path) -> tuple[dict, argparse.Namespace]:
    card = shipped.read_card(path)
    args = argparse.Namespace(seed=card["seed"], held_out=card["held_out"]["num_images"],
                              styles=card["pool"]["styles"])  # fmt: skip
    return card, args


def test_the_shipped_vision_encoder_has_the_quality_its_card_records() -> None:
    path = shipped.resolve(TINY_VISION_WEIGHTS)
    card, args = _card_args(path)
    config = VistaLLMConfig.tiny().vision
    encoder = build_vision_encoder(config)
    weights = shipped.read_part(path, shipped.HEADS_PREFIX)
    heads = PatchHeads(encoder.width, int(weights["fine.weight"].shape[0] ** 0.5))
    heads.load_state_dict(weights)
    quality = evaluate(
        encoder, heads, command.held_out_pool(config, args.seed, args.held_out, args.styles), config
    )
    for name, recorded in card["quality"].items():
        assert quality[name] == pytest.approx(recorded, abs=0.01), name
    assert quality["box_acc50"] > 0.8 and quality["color_acc"] > 0.9  # what makes it worth shipping


def test_the_shipped_tokenizer_has_the_quality_its_card_records() -> None:
    from lightning_gpv.pretraining.tokenizer import BoxHead, evaluate_tokenizer, make_referring_pool

    path = shipped.resolve(TINY_TOKENIZER_WEIGHTS)
    card, args = _card_args(path)
    assert card["vision_weights"]["sha256"] == sha256(shipped.resolve(TINY_VISION_WEIGHTS))
    model, processor = build_vistallm(VistaLLMConfig.tiny(), load_weights=True)
    head = BoxHead(model.tokenizer.projection.out_features)
    head.load_state_dict(shipped.read_part(path, shipped.HEADS_PREFIX))
    pool = make_referring_pool(processor, args.held_out, seed=args.seed, style=command.STYLES[args.styles[0]],
                               start=command.HELD_OUT_START)  # fmt: skip
    assert len(pool) == card["expressions"]["held_out"]
    quality = evaluate_tokenizer(model, head, pool, int(processor.qformer_tokenizer.pad_token_id))
    for name, recorded in card["quality"].items():
        assert quality[name] == pytest.approx(recorded, abs=0.01), name
    assert quality["box_acc50"] > 0.5


def test_the_shipped_detr_has_the_quality_its_card_records() -> None:
    from lightning_gpv.pretraining.detr import (
        AttributeHeads,
        evaluate_detr,
        load_detr_tensors,
        make_detr_pool,
    )

    path = shipped.resolve(DETR_WEIGHTS)
    card, args = _card_args(path)
    config = GPV1Config.tiny(image_size=list(command.DETR_IMAGE_SIZE))
    encoder = DetrRegionEncoder(config.visual, config.hidden_size).eval()
    load_detr_tensors(encoder, DETR_WEIGHTS)  # with the objectness head GPV-1 itself trains afresh
    weights = shipped.read_part(path, shipped.HEADS_PREFIX)
    heads = AttributeHeads.from_file_state(config.visual.d_model, encoder.roi_channels, weights)
    pool = make_detr_pool(args.held_out, seed=args.seed, styles=[command.STYLES[s] for s in args.styles],
                          image_size=command.DETR_IMAGE_SIZE, start=command.HELD_OUT_START)  # fmt: skip
    quality = evaluate_detr(encoder, heads, pool)
    for name, recorded in card["quality"].items():
        assert quality[name] == pytest.approx(recorded, abs=0.01), name
    assert quality["ap50"] > 0.8


def test_missing_and_mismatched_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(shipped.WeightFileError, match="no_such.safetensors.*shipped with the package"):
        shipped.resolve("no_such.safetensors")
    vision = VistaLLMConfig.tiny().vision
    vision.width = 32
    with pytest.raises(shipped.WeightFileError, match=r"shapes_eva_tiny\.safetensors.*do not fit"):
        build_vision_encoder(vision)
    assert sorted(command.STYLES) == ["full", "sparse"]
