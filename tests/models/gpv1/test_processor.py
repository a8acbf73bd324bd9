from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_gpv.models.gpv1 import GPV1, GPV1Config
from lightning_gpv.models.gpv1.processor import GPV1Batch, GPV1Processor
from lightning_gpv.models.gpv1.vocab import CLS_ID, PAD_ID, STOP_ID, AnswerVocabulary
from lightning_gpv.tasks import GPV1_PROMPTS, Prediction, Target, Task, TaskSample
from lightning_gpv.tasks.processing import SampleProcessor

IMAGE = np.zeros((40, 80, 3), np.uint8)
IMAGE[:, 40:] = 255


def _samples() -> list[TaskSample]:
    vqa_target = Target(text="Red circle", answers=["red circle"] * 3)
    loc_target = Target(boxes=[[0, 0, 40, 20], [40, 20, 80, 40]])
    return [
        TaskSample(Task.VQA, [IMAGE], vqa_target, question="What?", sample_id="q1"),
        TaskSample(Task.LOCALIZATION, [IMAGE], loc_target, category="star", sample_id="l1"),
        TaskSample(Task.CLASSIFICATION, [IMAGE], Target(text="star"), region=[40, 0, 80, 40], sample_id="c1"),
        TaskSample(Task.CAPTIONING, [IMAGE], Target(text="a red star on a blue circle ."), sample_id="cap1"),
        TaskSample(
            Task.REC, [IMAGE], Target(boxes=[[10, 10, 30, 30]]), expression="the left star", sample_id="r1"
        ),
    ]


@pytest.fixture
def processor(tiny_config: GPV1Config) -> GPV1Processor:
    vocab = AnswerVocabulary.build(["red circle", "star", "a red star on a blue circle"])
    return GPV1Processor.from_config(tiny_config, vocab, seed=3)


def test_is_a_sample_processor_and_pickles(processor: GPV1Processor) -> None:
    assert isinstance(processor, SampleProcessor)
    clone = pickle.loads(pickle.dumps(processor))
    item_a, item_b = processor.encode(_samples()[0], train=False), clone.encode(_samples()[0], train=False)
    assert item_a.input_ids == item_b.input_ids


def test_encode_image_and_targets(processor: GPV1Processor) -> None:
    vqa, loc, cls, cap, rec = (processor.encode(s, train=True) for s in _samples())
    assert vqa.pixel_values.shape == (3, 64, 64) and vqa.pixel_values.dtype == torch.float32
    assert vqa.answer_ids == [CLS_ID, processor.vocab.id_of("red"), processor.vocab.id_of("circle"), STOP_ID]
    assert vqa.boxes is None and loc.answer_ids is None
    torch.testing.assert_close(loc.boxes, torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]))
    assert cls.frame == (40.0, 0.0, 40.0, 40.0)
    assert cls.pixel_values[0].min() > 1.5  # the crop is the white half (normalized white ~ 2.2)
    assert len(cap.answer_ids) == processor.max_answer_len == 8  # truncated, still ends with __stop__
    assert cap.answer_ids[-1] == STOP_ID
    torch.testing.assert_close(rec.boxes, torch.tensor([[0.25, 0.5, 0.25, 0.5]]))


def test_prompts_seeded_at_train_fixed_at_eval(processor: GPV1Processor) -> None:
    loc = _samples()[1]
    assert processor.prompt(loc, train=False) == "Locate star."
    train_prompts = {processor.prompt(loc, train=True) for _ in range(3)}
    assert len(train_prompts) == 1  # deterministic per (seed, sample)
    assert train_prompts <= {
        GPV1_PROMPTS.render(Task.LOCALIZATION, index=i, category="star") for i in range(18)
    }
    chosen = set()
    for i in range(40):
        sample = TaskSample(Task.LOCALIZATION, [IMAGE], category="star", sample_id=f"l{i}")
        chosen.add(processor.prompt(sample, train=True))
    assert len(chosen) > 5  # templates vary across samples


def test_collate_pads(processor: GPV1Processor) -> None:
    batch = processor.collate([processor.encode(s, train=False) for s in _samples()])
    assert isinstance(batch, GPV1Batch) and len(batch) == 5
    assert batch.pixel_values.shape == (5, 3, 64, 64)
    assert batch.input_ids.shape == batch.attention_mask.shape
    assert (batch.input_ids[batch.attention_mask == 0] == 0).all()
    assert batch.has_text.tolist() == [True, False, True, True, False]
    assert batch.has_boxes.tolist() == [False, True, False, False, True]
    assert (batch.answer_ids[1] == PAD_ID).all()
    assert [len(b) for b in batch.target_boxes] == [0, 2, 0, 0, 1]
    moved = batch.to("cpu")
    assert moved.samples is batch.samples and moved.tasks == batch.tasks
    with pytest.raises(ValueError):
        processor.collate([])


def test_predictions_rank_boxes_in_original_pixels(processor: GPV1Processor, tiny_config: GPV1Config) -> None:
    batch = processor.collate([processor.encode(s, train=False) for s in _samples()[1:3]])
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.25, 0.25, 0.5, 0.5]]] * 2)
    relevance = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    tokens = torch.tensor([[CLS_ID, processor.vocab.id_of("star"), STOP_ID]] * 2)
    loc, cls = processor.predictions(batch, boxes, relevance, tokens)
    assert isinstance(loc, Prediction) and loc.sample_id == "l1" and loc.text == "star"
    np.testing.assert_allclose(loc.boxes, [[0, 0, 40, 20], [0, 0, 80, 40]])
    np.testing.assert_allclose(loc.scores, [0.9, 0.1])
    np.testing.assert_allclose(cls.boxes[0], [40, 0, 80, 40])  # crop frame mapped back


def test_model_runs_on_a_collated_batch(processor: GPV1Processor, tiny_config: GPV1Config) -> None:
    tiny_config.vocab_size = len(processor.vocab)
    model = GPV1(tiny_config).eval()
    batch = processor.collate([processor.encode(s, train=True) for s in _samples()])
    out = model(batch.pixel_values, batch.input_ids, batch.attention_mask, batch.answer_ids)
    assert out.answer_logits.shape[:2] == batch.answer_ids.shape


def test_wordpiece_vocab_fixture_is_used(wordpiece_vocab: Path, processor: GPV1Processor) -> None:
    assert len(processor.tokenizer) == len(wordpiece_vocab.read_text().splitlines())
