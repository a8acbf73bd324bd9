"""Saved VistaLLM folders with LoRA: adapters under their peft names reload exactly; ``merge_lora`` folds
them (and separately trained embeddings of a tied LLM) into a plain model that reloads to the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_gpv.models.vistallm import VistaLLM
from lightning_gpv.models.vistallm.tokenization import added_tokens
from lightning_gpv.systems.vistallm import VistaLLMModule


def _text_only(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    empty = torch.zeros(0, 1, dtype=torch.long)
    counts = torch.zeros(len(ids), dtype=torch.long)  # no image in any sample
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.zeros(0, 3, 64, 64),
                instruction_ids=empty, instruction_mask=empty, image_counts=counts)  # fmt: skip


def _perturb_adapters(module: VistaLLMModule) -> None:
    """As after training: adapters, added-token rows and the trained embedding copies moved away."""
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if param.requires_grad and name.startswith("llm.") and "lora_A" not in name:
                param.add_(torch.randn_like(param) * 0.05)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("tied", "modules_to_save"), [(False, []), (True, []), (True, ["embed_tokens", "lm_head"])]
)
def test_lora_folders_reload_to_the_same_outputs(
    tied: bool, modules_to_save: list[str], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    lora = {"r": 4, "modules_to_save": modules_to_save}
    module = VistaLLMModule({"preset": "tiny", "llm": {"tie_word_embeddings": tied, "lora": lora}},
                            load_weights=False)  # fmt: skip
    _perturb_adapters(module)
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
    # A tied head stays tied when only the added rows trained; full copies trained apart untie it.
    assert json.loads((merged_folder / "llm_config.json").read_text())["tie_word_embeddings"] is (
        tied and not modules_to_save
    )
    assert module.config.llm.lora is not None  # merging worked on a copy


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lora_trains_only_the_added_rows_of_the_vocabulary() -> None:
    torch.manual_seed(0)
    module = VistaLLMModule({"preset": "tiny", "llm": {"lora": {"r": 4}}}, load_weights=False)
    rows = {
        n: tuple(p.shape) for n, p in module.model.llm.named_parameters() if "trainable_tokens_delta" in n
    }
    added = len(added_tokens(module.config.codec))  # coordinate bins, <image> and the other markers
    assert len(rows) == 2 and all(shape == (added, 128) for shape in rows.values())  # embedding and head
    assert not any(".modules_to_save." in n for n, _ in module.model.named_parameters())
    trainable = {n for n, p in module.model.llm.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if "lora_" in n} | set(rows)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_adapter_folder_of_a_random_model_holds_every_weight(tmp_path: Path) -> None:
    # The tiny preset names no pretrained weights: nothing comes from a base model, so the adapter
    # must hold the image encoder and the LLM too, and reload exactly.
    torch.manual_seed(0)
    module = VistaLLMModule({"preset": "tiny", "llm": {"lora": {"r": 4}}}, load_weights=False)
    _perturb_adapters(module)
    assert set(module.model.adapter_state_dict()) == set(module.model.state_dict())
    folder = module.save_pretrained(tmp_path / "adapter", adapter=True)
    assert (folder / "adapter.safetensors").is_file() and not (folder / "model.safetensors").exists()
    inputs = _text_only(torch.randint(5, 500, (2, 12)))
    with torch.no_grad():
        expected = module.model.eval()(**inputs).logits
        assert torch.equal(VistaLLM.from_pretrained(folder).eval()(**inputs).logits, expected)
    with pytest.raises(ValueError, match="exclude each other"):
        module.save_pretrained(tmp_path / "both", adapter=True, merge_lora=True)
    plain = VistaLLMModule("tiny", load_weights=False)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        plain.save_pretrained(tmp_path / "plain", adapter=True)
