"""VistaLLM forward: visual token placement, stages, LoRA, generation bounds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lightning_gpv.models.vistallm.config import LoraSettings, VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.tasks import TaskSample


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _names(model: torch.nn.Module, prefix: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefix)}


@pytest.mark.parametrize("keys", [("rec",), ("nlvr2",), ("coseg",), ("rec", "nlvr2", "coseg")])
def test_visual_tokens_sit_at_the_image_placeholders(
    tiny_model: VistaLLM,
    tiny_processor: VistaLLMProcessor,
    samples: dict[str, TaskSample],
    keys: tuple[str, ...],
) -> None:
    tiny_model.eval()
    batch = tiny_processor.collate([tiny_processor.encode(samples[k], train=False) for k in keys])
    num_queries = tiny_model.num_queries
    counts = [samples[k].num_images for k in keys]
    assert batch.image_counts.tolist() == counts
    is_image = batch.input_ids == tiny_model.image_token_id
    assert is_image.sum(1).tolist() == [c * num_queries for c in counts]  # 1, 2 and 4 images -> k x L

    with torch.no_grad():
        embeds = tiny_model.embed_inputs(
            batch.input_ids,
            batch.pixel_values,
            batch.instruction_ids,
            batch.instruction_mask,
            batch.image_counts,
        )
        start = 0
        for b, count in enumerate(counts):
            # Each image of sample b, tokenized alone with sample b's instruction, in placeholder order.
            mask = batch.instruction_mask[b : b + 1]
            ids = batch.instruction_ids[b : b + 1]
            for image in range(count):
                pixels = batch.pixel_values[start + image : start + image + 1]
                expected = tiny_model.encode_images(pixels, ids, mask, torch.tensor([1]))[0]
                placed = embeds[b][is_image[b]].view(count, num_queries, -1)[image]
                torch.testing.assert_close(placed, expected, atol=1e-5, rtol=1e-4)
            start += count
        text = tiny_model.llm.get_input_embeddings()(batch.input_ids)
        torch.testing.assert_close(embeds[~is_image], text[~is_image])


def test_instruction_changes_the_visual_tokens(tiny_model: VistaLLM) -> None:
    tiny_model.eval()
    pixels = torch.randn(1, 3, 64, 64)
    mask = torch.ones(1, 5, dtype=torch.long)
    a = tiny_model.encode_images(pixels, torch.tensor([[5, 6, 7, 8, 9]]), mask, torch.tensor([1]))
    b = tiny_model.encode_images(pixels, torch.tensor([[50, 60, 70, 80, 90]]), mask, torch.tensor([1]))
    assert a.shape == (1, tiny_model.num_queries, tiny_model.llm.config.hidden_size)
    assert not torch.allclose(a, b)


def test_placeholder_count_mismatch_is_an_error(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    batch = tiny_processor.collate([tiny_processor.encode(samples["nlvr2"], train=False)])
    with pytest.raises(ValueError, match="<image> positions"):
        tiny_model.embed_inputs(
            batch.input_ids, batch.pixel_values[:1], batch.instruction_ids, batch.instruction_mask,
            torch.tensor([1]),
        )  # fmt: skip


def test_stage_1_trains_all_but_the_image_encoder(tiny_model: VistaLLM) -> None:
    tiny_model.set_stage(1)
    everything = _names(tiny_model, "")
    assert _trainable(tiny_model) == everything - _names(tiny_model, "vision.")
    assert _names(tiny_model, "vision.")  # the encoder exists and is frozen


def test_stage_2_trains_only_the_instruction_guided_tokenizer(tiny_model: VistaLLM) -> None:
    tiny_model.set_stage(2)
    assert _trainable(tiny_model) == _names(tiny_model, "tokenizer.")
    assert {n.split(".")[1] for n in _trainable(tiny_model)} == {
        "ln_vision",
        "qformer",
        "query_tokens",
        "projection",
    }
    with pytest.raises(ValueError, match="stage"):
        tiny_model.set_stage(3)


def test_frozen_encoder_stays_in_eval_mode(tiny_model: VistaLLM) -> None:
    tiny_model.set_stage(1)
    tiny_model.train()
    assert not tiny_model.vision.training and tiny_model.tokenizer.training and tiny_model.llm.training


def test_lora_touches_only_the_llm(tiny_config: VistaLLMConfig, tiny_processor: VistaLLMProcessor) -> None:
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    cfg = dataclasses.replace(tiny_config, llm=dataclasses.replace(tiny_config.llm, lora=lora))
    model = VistaLLM.from_config(cfg, tokenizer=tiny_processor.tokenizer)
    assert model.has_lora
    adapters = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert adapters and all(n.startswith("llm.") for n in adapters)
    assert all(
        n.split(".")[-4] in {"q_proj", "k_proj", "v_proj", "o_proj"} for n in adapters if "lora_A" in n
    )

    model.set_stage(1)
    trainable = _trainable(model)
    llm_trainable = {n for n in trainable if n.startswith("llm.")}
    assert trainable - llm_trainable == _names(model, "tokenizer.")
    assert adapters <= llm_trainable
    # Besides the adapters, only the added tokens' rows of the embedding and the head train.
    others = llm_trainable - adapters
    assert others and all(".token_adapter.trainable_tokens_delta." in n for n in others)
    assert {n.split(".token_adapter.")[0].split(".")[-1] for n in others} == {"embed_tokens", "lm_head"}
    model.set_stage(2)
    assert _trainable(model) == _names(model, "tokenizer.")


def test_loss_covers_answers_and_gradients_reach_trainable_parts(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    tiny_model.set_stage(1)
    tiny_model.train()
    batch = tiny_processor.collate([tiny_processor.encode(samples[k], train=True) for k in ("rec", "nlvr2")])
    out = tiny_model(**batch.model_inputs())
    assert out.loss.isfinite()
    out.loss.backward()
    assert tiny_model.tokenizer.query_tokens.grad is not None
    assert tiny_model.tokenizer.qformer.embeddings.word_embeddings.weight.grad is not None
    assert all(p.grad is None for p in tiny_model.vision.parameters())


@pytest.mark.parametrize("max_new_tokens", [0, 1, 5])
def test_generation_respects_its_maximum_length(
    tiny_model: VistaLLM,
    tiny_processor: VistaLLMProcessor,
    samples: dict[str, TaskSample],
    max_new_tokens: int,
) -> None:
    tiny_model.eval()
    batch = tiny_processor.collate([tiny_processor.encode(samples[k], train=False) for k in ("rec", "coseg")])
    tok = tiny_processor.tokenizer
    out = tiny_model.generate(
        **batch.generation_inputs(), max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    assert out.shape[0] == 2 and out.shape[1] <= max_new_tokens


def test_generation_matches_teacher_forcing_under_left_padding(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    """Greedy tokens of a padded batch equal the argmax of a full forward on each sample alone."""
    tiny_model.eval()
    tok = tiny_processor.tokenizer
    items = [tiny_processor.encode(samples[k], train=False) for k in ("vqa", "coseg")]
    batch = tiny_processor.collate(items)
    kwargs = {"eos_token_id": -1, "pad_token_id": tok.pad_token_id}
    generated = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=4, **kwargs)
    for i, item in enumerate(items):
        single = tiny_processor.collate([item])
        ids = single.prompt_ids
        for step in range(4):
            with torch.no_grad():
                embeds = tiny_model.embed_inputs(
                    ids,
                    single.pixel_values,
                    single.instruction_ids,
                    single.instruction_mask,
                    single.image_counts,
                )
                logits = tiny_model.llm(inputs_embeds=embeds).logits
            next_id = logits[0, -1].argmax()
            assert int(generated[i, step]) == int(next_id)
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)


def test_answer_span_loss_equals_the_full_sequence_loss(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    tiny_model.eval()
    batch = tiny_processor.collate(
        [tiny_processor.encode(samples[k], train=False) for k in ("vqa", "res", "rec")]
    )
    with torch.no_grad():
        out = tiny_model(**batch.model_inputs())
        inputs = {k: v for k, v in batch.model_inputs().items() if k != "labels"}
        full = tiny_model(**inputs).logits
    expected = torch.nn.functional.cross_entropy(
        full[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    first = int((batch.labels != -100).any(0).nonzero()[0]) - 1
    assert out.logits.shape[1] < full.shape[1]
    torch.testing.assert_close(out.logits[:, 0], full[:, first], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("synced", [True, False])
def test_generation_stops_together_across_processes(tmp_path: Path, synced: bool) -> None:
    """Two gloo processes: rank 0's sample ends at once, rank 1's never. Synced (the default under
    torch.distributed), both run the same number of LLM forwards, as FSDP's collectives require."""
    import torch.multiprocessing as mp
    from _generation_ddp import MAX_NEW_TOKENS, worker

    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path), synced), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert rank1["forwards"] == MAX_NEW_TOKENS and rank1["ids"].shape == (1, MAX_NEW_TOKENS)
    assert int(rank0["ids"][0, 0]) == rank0["eos"]
    if synced:
        assert rank0["forwards"] == rank1["forwards"]
        assert rank0["ids"].shape == (1, MAX_NEW_TOKENS) and rank0["ids"][0, 1:].eq(0).all()
    else:
        assert rank0["forwards"] == 1 and rank0["ids"].shape == (1, 1)
