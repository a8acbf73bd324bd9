"""``lightning-gpv pretrain-encoder`` writes a loadable weight file and an honest card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_gpv.models import shipped
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.vision import build_vision_encoder
from lightning_gpv.pretraining.command import main
from lightning_gpv.shapesworld.files import sha256


def test_pretrain_encoder_runs_a_few_steps_and_writes_a_loadable_file(tmp_path: Path) -> None:
    out = tmp_path / "enc.safetensors"
    args = ["--out", str(out), "--num-images", "24", "--held-out", "8", "--steps", "3", "--batch-size", "8"]
    assert main(args) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == sha256(out) and card["bytes"] == out.stat().st_size
    assert card["command"].startswith("lightning-gpv pretrain-encoder --out")
    assert card["seed"] == 0 and card["settings"]["steps"] == 3
    assert set(card["quality"]) >= {"shape_acc", "color_acc", "box_iou", "box_acc50", "fine_iou"}
    assert not list(tmp_path.glob(".*partial"))

    vision = VistaLLMConfig.tiny(pretrained=False).vision
    vision.checkpoint = str(out)
    loaded = build_vision_encoder(vision)
    stored = shipped.read_part(out, shipped.ENCODER_PREFIX)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, stored[name]), name
    random = build_vision_encoder(VistaLLMConfig.tiny(pretrained=False).vision)
    assert not torch.equal(
        random.state_dict()["trunk.patch_embed.proj.weight"], stored["trunk.patch_embed.proj.weight"]
    )


def test_pretrain_encoder_keeps_an_existing_file_and_names_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "enc.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--steps", "1"])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "enc.pt")])
    assert ".safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.safetensors"), "--steps", "0"])
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_help_states_each_parts_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_gpv.pretraining.command import DEFAULTS

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    for name in ("steps", "batch_size", "lr", "num_images", "held_out"):
        listed = ", ".join(f"{part} {settings[name]:g}" for part, settings in DEFAULTS.items())
        assert f"(default {listed})" in text, name
