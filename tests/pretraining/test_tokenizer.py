"""Pretraining the tiny VistaLLM tokenizer on in-memory referring expressions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lightning_gpv.models import shipped
from lightning_gpv.models.vistallm.build import build_vistallm
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.pretraining.command import main
from lightning_gpv.pretraining.tokenizer import BoxHead, box_losses, make_referring_pool
from lightning_gpv.shapesworld.files import sha256
from lightning_gpv.shapesworld.sample import SPARSE_STYLE


def test_referring_pool_holds_expressions_boxes_and_shared_images() -> None:
    model, processor = build_vistallm(VistaLLMConfig.tiny(pretrained=False), load_weights=False)
    pool = make_referring_pool(processor, 6, seed=0, style=SPARSE_STYLE)
    again = make_referring_pool(processor, 6, seed=0, style=SPARSE_STYLE)
    assert len(pool) > 0 and len(pool) == len(again) and torch.equal(pool.boxes, again.boxes)
    assert pool.pixel_values.shape[1:] == (3, 64, 64) and int(pool.image_index.max()) < len(pool.pixel_values)
    assert (
        (pool.boxes[:, 2:] > pool.boxes[:, :2]).all() and (pool.boxes >= 0).all() and (pool.boxes <= 1).all()
    )
    pixels, ids, mask, boxes = pool.batch([0, len(pool) - 1], int(processor.qformer_tokenizer.pad_token_id))
    assert ids.shape == mask.shape and mask.sum(1).tolist() == [len(pool.instruction_ids[0]),
                                                                  len(pool.instruction_ids[-1])]  # fmt: skip
    tokens = model.tokenizer(model.vision(pixels), ids, mask)
    predicted = BoxHead(tokens.shape[-1])(tokens)
    assert (predicted[:, 2:] >= predicted[:, :2]).all()  # well-formed, whatever the head's weights
    assert box_losses(boxes, boxes) < 1e-6 < float(box_losses(predicted, boxes))


def test_pretrain_tokenizer_command_writes_a_file_the_config_loads(tmp_path: Path) -> None:
    out = tmp_path / "tok.safetensors"
    args = ["--part", "tokenizer", "--out", str(out), "--num-images", "8", "--held-out", "6", "--steps", "2",
            "--batch-size", "4"]  # fmt: skip
    assert main(args) == 0
    card = shipped.read_card(out)
    assert card["part"] == "tokenizer" and card["sha256"] == sha256(out)
    assert set(card["quality"]) == {"box_iou", "box_acc50"} and card["expressions"]["train"] > 0
    tiny = VistaLLMConfig.tiny()
    config = replace(tiny, qformer=replace(tiny.qformer, checkpoint=str(out)))
    model, _ = build_vistallm(config, load_weights=True)
    stored = shipped.read_part(out, shipped.ENCODER_PREFIX)
    assert all(torch.equal(value, stored[name]) for name, value in model.tokenizer.state_dict().items())
