"""Constrained decoding: the coordinate grammar accepts what the codec writes, rejects what it never writes,
and keeps generated boxes and masks whole; off, generation is plain greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_gpv.geometry import Mask
from lightning_gpv.models.vistallm.codec import BOX_SEP, MASK_SEP
from lightning_gpv.models.vistallm.constraints import (
    TEXT_ANSWER,
    AnswerFormat,
    CoordinateGrammar,
    GrammarState,
    ObjectKind,
    Phase,
    answer_format,
)
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.models.vistallm.tokenization import build_word_tokenizer
from lightning_gpv.tasks import Target, Task, TaskSample


@pytest.fixture(scope="module")
def grammar(tiny_processor: VistaLLMProcessor) -> CoordinateGrammar:
    return CoordinateGrammar.from_tokenizer(tiny_processor.codec, tiny_processor.tokenizer)


def _mask(box: tuple[int, int, int, int], height: int = 80, width: int = 100) -> Mask:
    array = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = True
    return Mask.from_array(array)


# Targets of every answer format of the codec (image 0 is 80 x 100, CoSeg/AttCoSeg have four images).
TARGETS = {
    "rec": (Task.REC, Target(boxes=[[20, 10, 70, 50]])),
    "grec_several": (Task.GREC, Target(boxes=[[20, 10, 70, 50], [0, 0, 10, 10], [50, 40, 100, 80]])),
    "grec_no_target": (Task.GREC, Target(boxes=np.zeros((0, 4), np.float32))),
    "localization": (Task.LOCALIZATION, Target(boxes=[[20, 10, 70, 50], [0, 0, 10, 10]])),
    "res": (Task.RES, Target(masks=[_mask((20, 10, 70, 50))])),
    "gres_several": (Task.GRES, Target(masks=[_mask((20, 10, 70, 50)), _mask((0, 0, 15, 30))])),
    "gres_no_target": (Task.GRES, Target(masks=[])),
    "coseg": (Task.COSEG, Target(masks=[_mask((20, 10, 70, 50))] * 4, mask_image=[0, 1, 2, 3])),
    "attcoseg": (
        Task.ATTCOSEG,
        Target(masks=[_mask((20, 10, 70, 50))] * 2, mask_image=[1, 3], selected_images=[1, 3]),
    ),
    "spot_captioning": (Task.SPOT_CAPTIONING, Target(text="a red circle", boxes=[[20, 10, 70, 50]])),
    "vqa": (Task.VQA, Target(text="red", answers=["red"])),
    "captioning": (Task.CAPTIONING, Target(text="a red circle [left] of a square")),
}


def _answer_ids(processor: VistaLLMProcessor, task: Task, target: Target) -> list[int]:
    """The answer ids the processor trains on (end token included)."""
    text = processor.codec.serialize_answer(task, target, [(80, 100)] * 4, style="tokens")
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids if text else []
    return [*ids, int(processor.tokenizer.eos_token_id)]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_grammar_accepts_every_codec_answer_token_by_token(
    name: str, grammar: CoordinateGrammar, tiny_processor: VistaLLMProcessor
) -> None:
    task, target = TARGETS[name]
    ids = _answer_ids(tiny_processor, task, target)
    state = grammar.start(answer_format(task))
    for token in ids:
        allowed = grammar.allowed(state)
        assert allowed is not None and token in allowed, (name, tiny_processor.tokenizer.decode([token]))
        state = grammar.advance(state, token)
    assert state.phase is Phase.END
    assert grammar.accepts(answer_format(task), ids)


def test_grammar_is_derived_from_the_tokenizer(grammar: CoordinateGrammar, tiny_processor) -> None:
    tokenizer, codec = tiny_processor.tokenizer, tiny_processor.codec
    assert grammar.coord_ids == set(tokenizer.convert_tokens_to_ids(codec.coordinate_tokens()))
    assert grammar.opener_ids == {tokenizer.convert_tokens_to_ids("[")}
    assert grammar.closer_ids == {tokenizer.convert_tokens_to_ids("]")}
    assert grammar.box_sep_id == tokenizer.convert_tokens_to_ids(BOX_SEP)
    assert grammar.mask_sep_id == tokenizer.convert_tokens_to_ids(MASK_SEP)
    assert grammar.group_length(ObjectKind.MASK) == 2 * codec.num_mask_points
    with pytest.raises(ValueError, match="added tokens"):  # a tokenizer without the coordinate tokens
        CoordinateGrammar.from_tokenizer(codec, build_word_tokenizer())


def test_grammar_rejects_what_the_codec_never_writes(grammar: CoordinateGrammar) -> None:
    c = sorted(grammar.coord_ids)
    (opener,), (closer,) = grammar.opener_ids, grammar.closer_ids
    bsep, msep, eos = grammar.box_sep_id, grammar.mask_sep_id, grammar.eos_id
    box = [opener, c[1], c[2], c[30], c[40], closer]
    rec, grec = answer_format(Task.REC), answer_format(Task.GREC)
    assert grammar.accepts(rec, [*box, eos])
    assert not grammar.accepts(rec, [opener, c[1], c[2], c[3], closer, eos])  # three coordinates
    assert not grammar.accepts(rec, [opener, *c[:5], closer, eos])  # five
    assert not grammar.accepts(rec, [opener, c[1], eos])  # the end inside a group
    assert not grammar.accepts(rec, [c[1], *box, eos])  # a coordinate outside a group
    assert not grammar.accepts(rec, [opener, c[30], c[2], c[1], c[40], closer, eos])  # x1 < x0
    assert not grammar.accepts(rec, [opener, c[1], c[40], c[30], c[2], closer, eos])  # y1 < y0
    assert grammar.accepts(rec, [opener, c[30], c[2], c[30], c[2], closer, eos])  # a degenerate box
    assert not grammar.accepts(rec, [eos])  # REC answers one box
    assert not grammar.accepts(rec, [*box, bsep, *box, eos])  # ... and only one
    assert grammar.accepts(grec, [*box, bsep, *box, eos])
    assert grammar.accepts(grec, [eos])  # gRefCOCO's "no target"
    assert not grammar.accepts(grec, [*box, msep, *box, eos])  # boxes are joined by <bsep>
    assert not grammar.accepts(grec, [*box, bsep, eos])  # a separator is followed by a group
    n = grammar.codec.num_mask_points
    assert n != 2  # a box is not a mask
    mask = [opener, *c[2 * n - 1 :: -1], closer]  # contour points in any order
    res = answer_format(Task.RES)
    assert grammar.accepts(res, [*mask, eos])
    assert not grammar.accepts(res, [opener, *c[:4], closer, eos])  # a box where a mask belongs
    assert not grammar.accepts(res, [opener, *c[: 2 * n - 2], closer, eos])  # one point short
    text = [i for i in range(grammar.vocab_size) if i not in grammar.coord_ids and i > 3][:3]
    assert grammar.accepts(TEXT_ANSWER, [*text, eos])
    assert not grammar.accepts(TEXT_ANSWER, [text[0], c[5], eos])  # coordinates only inside groups
    assert not grammar.accepts(TEXT_ANSWER, [text[0], bsep, eos])
    attcoseg = answer_format(Task.ATTCOSEG)
    assert grammar.accepts(attcoseg, [*text, *mask, msep, *mask, eos])
    assert not grammar.accepts(attcoseg, [*text, eos])  # at least one mask
    assert not grammar.accepts(attcoseg, [*text, closer, *mask, eos])  # brackets are the groups'


def test_forbidden_token_leaves_the_sample_free(grammar: CoordinateGrammar) -> None:
    state = grammar.start(answer_format(Task.REC))
    assert grammar.allowed(state) == grammar.opener_ids  # no end token: REC answers one box
    word = next(i for i in range(grammar.vocab_size) if i not in grammar.bracket_ids and i > 3)
    free = grammar.advance(state, word)
    assert free.phase is Phase.FREE and grammar.allowed(free) is None
    assert grammar.advance(free, min(grammar.coord_ids)) == free


def test_budget_keeps_groups_whole(grammar: CoordinateGrammar) -> None:
    eos, (opener,), c = grammar.eos_id, grammar.opener_ids, sorted(grammar.coord_ids)
    rec, grec, gres = (answer_format(t) for t in (Task.REC, Task.GREC, Task.GRES))
    # A box takes 6 tokens: with 5 left, REC ends rather than write a box the parser would drop.
    assert grammar.allowed(grammar.start(rec), remaining=6) == {opener}
    assert grammar.allowed(grammar.start(rec), remaining=5) == {eos}
    after_box = GrammarState(grec, Phase.AFTER_GROUP, objects=1)
    assert grammar.allowed(after_box, remaining=7) == {eos, grammar.box_sep_id}
    assert grammar.allowed(after_box, remaining=6) == {eos}
    # A budget of one mask and the end holds one mask but not a second one.
    mask = [opener, *c[: 2 * grammar.codec.num_mask_points], max(grammar.closer_ids)]
    budget = len(mask) + 1
    assert grammar.accepts(gres, [*mask, eos], max_new_tokens=budget)
    assert not grammar.accepts(gres, [*mask, grammar.mask_sep_id], max_new_tokens=budget)
    assert grammar.accepts(gres, [*mask, grammar.mask_sep_id, *mask, eos], max_new_tokens=2 * budget)
    assert grammar.accepts(gres, [*mask, grammar.mask_sep_id])
    # AttCoSeg's first mask follows free text; it opens at the last step that still holds it.
    attcoseg = grammar.start(answer_format(Task.ATTCOSEG))
    assert eos not in grammar.allowed(attcoseg, remaining=96) and opener in grammar.allowed(attcoseg, 96)
    assert grammar.allowed(attcoseg, remaining=len(mask)) == {opener}


def test_batch_mask_matches_the_allowed_sets(grammar: CoordinateGrammar) -> None:
    c = sorted(grammar.coord_ids)
    states = [
        grammar.start(answer_format(Task.REC)),
        GrammarState(answer_format(Task.REC), Phase.GROUP, coords=1, corner=(5,)),
        GrammarState(answer_format(Task.REC), Phase.GROUP, coords=2, corner=(5, 7)),
        GrammarState(answer_format(Task.REC), Phase.GROUP, coords=4, corner=(5, 7)),
        GrammarState(answer_format(Task.GREC), Phase.AFTER_GROUP, objects=1),
        grammar.start(TEXT_ANSWER),
        grammar.start(answer_format(Task.SPOT_CAPTIONING)),
        GrammarState(TEXT_ANSWER, Phase.END),
    ]
    width = grammar.vocab_size + 4  # an LLM vocabulary padded beyond the tokenizer
    mask = grammar.mask(states, None, width, torch.device("cpu"))
    assert mask is not None and mask.shape == (len(states), width) and mask.dtype == torch.bool
    for row, state in zip(mask, states):
        allowed = grammar.allowed(state)
        expected = set(range(grammar.vocab_size)) if allowed is None else allowed
        assert set(row[: grammar.vocab_size].nonzero().flatten().tolist()) == expected
    assert set(mask[1].nonzero().flatten().tolist()) == set(c)
    assert set(mask[2].nonzero().flatten().tolist()) == set(c[5:])  # x1 >= x0
    assert mask[5, grammar.vocab_size :].all() and not mask[1, grammar.vocab_size :].any()
    assert grammar.mask([states[-1]], None, width, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="width"):
        grammar.mask(states, None, grammar.vocab_size - 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="min_objects"):
        AnswerFormat(ObjectKind.BOX, min_objects=2, max_objects=1)


# ----------------------------------------------------------------------------------------------------
# Generation


def _batch(processor: VistaLLMProcessor, samples: dict[str, TaskSample], names: list[str]):
    return processor.collate([processor.encode(samples[n], train=False) for n in names])


def _plain_greedy(model: VistaLLM, batch, max_new_tokens: int, eos: int, pad: int) -> torch.Tensor:
    """The greedy loop of ``VistaLLM.generate`` as it was before constrained decoding (the reference)."""
    inputs = batch.generation_inputs()
    embeds = model.embed_inputs(
        inputs["prompt_ids"], inputs["pixel_values"], inputs["instruction_ids"], inputs["instruction_mask"],
        inputs["image_counts"],
    )  # fmt: skip
    mask = inputs["prompt_mask"].long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1)  # fmt: skip
    done = torch.zeros(len(batch), dtype=torch.bool)
    generated = []
    for _ in range(max_new_tokens):
        token = torch.where(done, torch.full_like(done, pad, dtype=torch.long), out.logits[:, -1].argmax(-1))
        generated.append(token)
        done |= token == eos
        if len(generated) == max_new_tokens or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(len(batch), 1)], dim=1)
        positions = positions[:, -1:] + 1
        embeds = model.llm.get_input_embeddings()(token[:, None])
        out = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                        past_key_values=out.past_key_values, use_cache=True)  # fmt: skip
    return torch.stack(generated, dim=1)


NAMES = ["rec", "res", "vqa", "reg", "attcoseg"]


def test_constrained_generation_parses_without_failure(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples, grammar: CoordinateGrammar
) -> None:
    tiny_model.eval()
    batch = _batch(tiny_processor, samples, NAMES)
    tokenizer, budget = tiny_processor.tokenizer, tiny_processor.config.max_new_tokens
    formats = [answer_format(t) for t in batch.tasks]
    generated = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=budget,
                                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                    grammar=grammar, answer_formats=formats)  # fmt: skip
    for ids, fmt in zip(generated.tolist(), formats):
        assert grammar.accepts(fmt, ids, max_new_tokens=budget)
    rec, res, vqa, reg, attcoseg = tiny_processor.decode(generated, batch)
    assert not rec.dropped and len(rec.boxes) == 1  # random weights, yet one whole box
    assert not res.dropped and len(res.masks) == 1
    assert len(res.masks[0].polygons[0]) == tiny_processor.codec.num_mask_points
    for text in (vqa.text, reg.text):
        assert "<c" not in text and BOX_SEP not in text and MASK_SEP not in text
    # Whole masks only; the free text of random weights may name images the sample lacks (not a group).
    assert attcoseg.masks and all(
        len(m.polygons[0]) == tiny_processor.codec.num_mask_points for m in attcoseg.masks
    )
    assert all(d.startswith("image number") for d in attcoseg.dropped), attcoseg.dropped
    with pytest.raises(ValueError, match="answer_formats"):
        tiny_model.generate(**batch.generation_inputs(), max_new_tokens=2, eos_token_id=3, pad_token_id=1,
                            grammar=grammar)  # fmt: skip


def test_generation_reports_the_answers_its_budget_changed(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples, grammar: CoordinateGrammar
) -> None:
    tiny_model.eval()
    batch = _batch(tiny_processor, samples, ["rec"])
    eos, pad = int(tiny_processor.tokenizer.eos_token_id), int(tiny_processor.tokenizer.pad_token_id)
    constrained = {"eos_token_id": eos, "pad_token_id": pad, "grammar": grammar,
                   "answer_formats": [answer_format(Task.REC)], "return_cut": True}  # fmt: skip
    # A box takes 6 tokens: with 5 the budget rule ends the answer where the format asks for an opener.
    ids, cut = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=5, **constrained)
    assert ids.tolist() == [[eos]] and cut.tolist() == [True]
    ids, cut = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=7, **constrained)
    assert ids.shape[1] == 7 and ids[0, -1] == eos and cut.tolist() == [False]
    assert len(tiny_processor.decode(ids, batch)[0].boxes) == 1
    # With 6 the box fills the budget; only the end token could follow it, so nothing was cut.
    ids, cut = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=6, **constrained)
    assert ids.shape[1] == 6 and eos not in ids[0].tolist() and cut.tolist() == [False]
    state = grammar.start(answer_format(Task.REC))
    assert not grammar.must_end(state)
    for token in ids[0].tolist():
        state = grammar.advance(state, token)
    assert grammar.must_end(state)
    # Unconstrained: an answer without its end token within the budget is cut, one that ends is not.
    plain = {"pad_token_id": pad, "return_cut": True}
    first, cut = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=1, eos_token_id=-1, **plain)
    assert cut.tolist() == [True]
    ends_at_once = {"eos_token_id": int(first[0, 0]), **plain}
    ids, cut = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=4, **ends_at_once)
    assert ids.shape[1] == 1 and cut.tolist() == [False]
    ids, cut = tiny_model.generate(**batch.generation_inputs(), max_new_tokens=0, eos_token_id=eos, **plain)
    assert ids.shape == (1, 0) and cut.tolist() == [True]


def test_unconstrained_generation_is_plain_greedy(
    tiny_model: VistaLLM, tiny_processor: VistaLLMProcessor, samples
) -> None:
    tiny_model.eval()
    batch = _batch(tiny_processor, samples, NAMES)
    eos, pad = int(tiny_processor.tokenizer.eos_token_id), int(tiny_processor.tokenizer.pad_token_id)
    kwargs = {"max_new_tokens": 24, "eos_token_id": eos, "pad_token_id": pad}
    with torch.no_grad():
        reference = _plain_greedy(tiny_model, batch, 24, eos, pad)
    off = tiny_model.generate(**batch.generation_inputs(), **kwargs)
    assert torch.equal(off, reference)
    assert torch.equal(tiny_model.generate(**batch.generation_inputs(), **kwargs, grammar=None), reference)


def test_module_option_is_a_plain_hyperparameter(samples) -> None:
    from lightning_gpv.systems.vistallm import VistaLLMModule

    torch.manual_seed(0)
    module = VistaLLMModule(config="tiny", load_weights=False, constrained_decoding=True).eval()
    assert module.hparams["constrained_decoding"] is True and module.constrained_decoding
    batch = module.processor.collate(
        [module.processor.encode(samples[n], train=False) for n in ("rec", "res")]
    )
    rec, res = module.predict_batch(batch)
    assert not rec.dropped and len(rec.boxes) == 1 and not res.dropped and len(res.masks) == 1
    assert module.coordinate_grammar() is module.coordinate_grammar()  # built once
    assert VistaLLMModule(config="tiny", load_weights=False).hparams["constrained_decoding"] is False
