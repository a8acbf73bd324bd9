from __future__ import annotations

import pytest

from lightning_gpv.models.gpv1 import DetrEncoderConfig, GPV1Config


def test_paper_preset_sizes() -> None:
    c = GPV1Config.paper()
    assert c.visual.num_queries == 100 and c.visual.d_model == 256 and c.visual.roi_size == 7
    assert c.visual.backbone_hidden_sizes[-1] == 2048
    assert (c.text.hidden_size, c.text.num_layers, c.text.freeze) == (768, 12, True)
    assert (c.coattention.num_layers, c.coattention.num_heads, c.coattention.ffn_dim) == (3, 16, 3072)
    assert (c.decoder.num_layers, c.decoder.num_heads, c.decoder.ffn_dim) == (3, 8, 2048)
    assert c.hidden_size == 768 and c.image_size == (480, 640)


def test_presets_take_overrides_and_dicts() -> None:
    c = GPV1Config.tiny(relevance_conditioning=False, visual={"num_queries": 5})
    assert not c.relevance_conditioning
    assert isinstance(c.visual, DetrEncoderConfig) and c.visual.num_queries == 5
    assert c.visual.d_model == GPV1Config.tiny().visual.d_model  # the rest of the preset's part is kept
    assert GPV1Config(image_size=[32, 48]).image_size == (32, 48)


@pytest.mark.parametrize("bad", [{"hidden_size": 770}, {"vocab_size": 3}])
def test_invalid_configs_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        GPV1Config.tiny(**bad)
