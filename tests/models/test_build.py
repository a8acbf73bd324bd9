"""Each family's builder returns the model and the processor that goes with it."""

from __future__ import annotations

from pathlib import Path

from lightning_gpv.models.gpv1 import GPV1Config, build_gpv1, write_wordpiece_vocab
from lightning_gpv.models.vistallm import VistaLLMConfig, build_vistallm


def test_build_vistallm_shares_one_tokenizer_with_the_added_tokens() -> None:
    config = VistaLLMConfig.tiny()
    model, processor = build_vistallm(config, load_weights=False)
    tokenizer = processor.tokenizer
    assert model.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert model.llm.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert processor.codec == config.codec


def test_build_gpv1_without_a_vocabulary_makes_a_placeholder_of_the_config_size(tmp_path: Path) -> None:
    tokens = write_wordpiece_vocab(["what color is the circle"], tmp_path / "vocab.txt")
    config = GPV1Config.from_name("tiny", vocab_size=40, text={"tokenizer_name_or_path": str(tokens)})
    model, processor = build_gpv1(config)
    assert model.config == config and len(processor.vocab) == 40
    assert model.parameter_groups()["backbone"] and model.parameter_groups()["main"]
