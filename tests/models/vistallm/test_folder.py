"""Saved VistaLLM folders with LoRA: adapters under their peft names reload exactly; ``merge_lora`` folds
them (and separately trained embeddings of a tied LLM) into a plain model that reloads to the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_gpv.models.vistallm import VistaLLM
from lightning_gpv.systems.vistallm import VistaLLMModule


def _text_only(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    empty = torch.zeros(0, 1, dtype=torch.long)
    counts = torch.zeros(len(ids), dtype=torch.long)  # no image in any sample
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.zeros(0, 3, 64, 64),
                instruction_ids=empty, instruction_mask=empty, image_counts=counts)  # fmt: skip


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("tied", [False, True])
def test_lora_folders_reload_to_the_same_outputs(tied: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = VistaLLMModule({"preset": "tiny", "llm": {"tie_word_embeddings": tied, "lora": {"r": 4}}},
                            load_weights=False)  # fmt: skip
    with torch.no_grad():  # as after training: adapters and the trained embedding copies moved away
        for name, param in module.model.named_parameters():
            if param.requires_grad and ("lora_B" in name or "modules_to_save" in name):
                param.add_(torch.randn_like(param) * 0.05)
    inputs = _text_only(torch.randint(5, 500, (2, 12)))
    with torch.no_grad():
        expected = module.model.eval()(**inputs).logits
        adapters = VistaLLM.from_pretrained(module.save_pretrained(tmp_path / "lora")).eval()
        merged_folder = module.save_pretrained(tmp_path / "merged", merge_lora=True)
        merged = VistaLLM.from_pretrained(merged_folder).eval()
        assert torch.equal(adapters(**inputs).logits, expected)
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=0, atol=1e-4)  # merging rounds
    assert json.loads((merged_folder / "config.json").read_text())["config"]["llm"]["lora"] is None
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert json.loads((merged_folder / "llm_config.json").read_text())["tie_word_embeddings"] is False
    assert module.config.llm.lora is not None  # merging worked on a copy
