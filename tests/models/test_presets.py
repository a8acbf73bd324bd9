"""Presets by name and configs as plain data, for both families."""

from __future__ import annotations

import io

import pytest
import torch
import yaml

from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.vistallm.config import LoraSettings, VistaLLMConfig

NAMES = {GPV1Config: ("paper", "tiny"), VistaLLMConfig: ("7b", "13b", "smollm2", "tiny", "tiny_scratch")}


@pytest.mark.parametrize("cls", [GPV1Config, VistaLLMConfig], ids=lambda c: c.__name__)
def test_every_preset_round_trips_as_plain_data(cls: type) -> None:
    assert tuple(cls.presets()) == NAMES[cls]
    for name in NAMES[cls]:
        config = cls.from_name(name)
        data = config.to_dict()
        assert cls.from_dict(yaml.safe_load(yaml.safe_dump(data))) == config  # hparams.yaml
        buffer = io.BytesIO()
        torch.save({"config": data}, buffer)
        buffer.seek(0)
        assert cls.from_dict(torch.load(buffer, weights_only=True)["config"]) == config  # checkpoints
        assert cls.resolve(name) == config and cls.resolve(config) is config
    assert cls.resolve(None) == cls.resolve({}) == cls()  # one default: the paper's model


def test_overrides_merge_into_nested_parts_and_name_unknown_fields() -> None:
    config = VistaLLMConfig.from_dict(
        {"preset": "tiny", "num_bins": 32, "llm": {"num_layers": 3, "lora": {"r": 4}}}
    )
    tiny = VistaLLMConfig.tiny()
    assert (
        config.num_bins == 32
        and config.llm.num_layers == 3
        and config.llm.hidden_size == tiny.llm.hidden_size
    )
    assert config.llm.lora == LoraSettings(r=4) and config.vision == tiny.vision
    gpv1 = GPV1Config.from_name("tiny", image_size=[96, 96], visual={"num_queries": 5})
    assert gpv1.image_size == (96, 96) and gpv1.visual.num_queries == 5 and gpv1.visual.d_model == 32
    with pytest.raises(ValueError, match=r"VistaLLMConfig.llm: unknown field\(s\) \['layers'\]"):
        VistaLLMConfig.from_dict({"preset": "tiny", "llm": {"layers": 3}})
    with pytest.raises(ValueError, match=r"GPV1Config: unknown field\(s\) \['bogus'\]"):
        GPV1Config.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="unknown GPV1Config preset 'huge'.*'paper', 'tiny'"):
        GPV1Config.from_name("huge")
    with pytest.raises(TypeError, match="config must be a VistaLLMConfig"):
        VistaLLMConfig.resolve(3)
