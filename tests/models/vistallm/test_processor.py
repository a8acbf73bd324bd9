"""VistaLLMProcessor: images, instructions, targets, labels, padding; parsing generated text."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gpv.geometry import Mask, mask_iou
from lightning_gpv.metrics.evaluation import Evaluator
from lightning_gpv.metrics.tables import EvalItem, answer_well_formed, evaluation_table
from lightning_gpv.models.vistallm import processor as processor_module
from lightning_gpv.models.vistallm.codec import (
    PAPER_NUM_BINS,
    PAPER_NUM_MASK_POINTS,
    CoordinateCodec,
    decode_generated,
)
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.processor import IGNORE_INDEX, VistaLLMProcessor
from lightning_gpv.tasks import IMAGE_TOKEN, Target, Task, TaskSample
from lightning_gpv.tasks.catalogue import Family

# Answers below use the paper's codec (1000 bins, 32 points); the tiny processor's is its .codec.
PAPER = CoordinateCodec(num_bins=PAPER_NUM_BINS, num_mask_points=PAPER_NUM_MASK_POINTS)
serialize_answer, parse_prediction = PAPER.serialize_answer, PAPER.parse_prediction


def test_processor_codec_follows_the_config(
    tiny_config: VistaLLMConfig, tiny_processor: VistaLLMProcessor
) -> None:
    codec = tiny_processor.codec
    assert (codec.num_bins, codec.num_mask_points) == (tiny_config.num_bins, tiny_config.num_mask_points)
    assert codec.num_bins == 64  # the tiny config's, not the paper's 1000
    tokens = tiny_processor.tokenizer.convert_tokens_to_ids(codec.added_tokens())
    assert tiny_processor.tokenizer.unk_token_id not in tokens
    assert pickle.loads(pickle.dumps(tiny_processor)).codec == codec


def test_labels_cover_only_the_answer_and_its_end(
    tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    tok = tiny_processor.tokenizer
    for key, sample in samples.items():
        item = tiny_processor.encode(sample, train=True)
        p = item.prompt_length
        assert (item.labels[:p] == IGNORE_INDEX).all(), key
        assert torch.equal(item.labels[p:], item.input_ids[p:]), key
        assert int(item.input_ids[-1]) == tok.eos_token_id, key
        answer = tok.decode(item.input_ids[p:-1], skip_special_tokens=False)
        assert tiny_processor.codec.num_bins == tiny_processor.config.num_bins
        expected = tiny_processor.codec.serialize_answer(
            sample.task, sample.target, item.image_sizes, style="tokens"
        )
        assert answer.replace(" ", "") == expected.replace(" ", ""), key
        assert (item.input_ids[:p] == tiny_processor.image_token_id).sum() == 8 * sample.num_images


def test_images_are_resized_without_crop_or_flip(tiny_processor: VistaLLMProcessor) -> None:
    image = np.zeros((40, 120, 3), dtype=np.uint8)
    image[:, :60] = 255  # left half white
    sample = TaskSample(Task.REC, [image], Target(boxes=[[0, 0, 60, 40]]), expression="the white half")
    item = tiny_processor.encode(sample, train=True)
    pixels = item.pixel_values[0]
    assert pixels.shape == (3, 64, 64)
    assert pixels[:, :, :28].mean() > pixels[:, :, 36:].mean() + 1.0  # still white on the left
    assert item.image_sizes == [(40, 120)]
    # Coordinates are relative to the original 120 x 40 image: [0, 0, 60, 40] -> bins 0, 0, 32, 63 of 64.
    answer = tiny_processor.tokenizer.decode(
        item.input_ids[item.prompt_length : -1], skip_special_tokens=False
    )
    assert tiny_processor.config.num_bins == 64
    assert answer.replace(" ", "") == "[<c0><c0><c32><c63>]"


def test_regions_are_tokens_for_the_llm_and_numbers_for_the_qformer(
    tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    item = tiny_processor.encode(samples["reg"], train=False)
    prompt = tiny_processor.tokenizer.decode(item.input_ids[: item.prompt_length], skip_special_tokens=False)
    assert "<c12>" in prompt and "[12, 8, 44, 40]" in item.instruction  # 64 bins in the tiny config
    qformer_text = tiny_processor.qformer_tokenizer.decode(item.instruction_ids)
    assert "44" in qformer_text and "<c44>" not in qformer_text and IMAGE_TOKEN not in qformer_text


def test_evaluation_uses_a_fixed_template_and_training_varies_it(
    tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    fixed = {tiny_processor.encode(samples["vqa"], train=False).instruction for _ in range(5)}
    torch.manual_seed(0)
    varied = {tiny_processor.encode(samples["vqa"], train=True).instruction for _ in range(20)}
    assert len(fixed) == 1 and len(varied) > 1


def test_collate_pads_sequences_right_and_prompts_left(
    tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    items = [tiny_processor.encode(samples[k], train=True) for k in ("vqa", "attcoseg")]
    batch = tiny_processor.collate(items)
    assert batch.pixel_values.shape == (5, 3, 64, 64) and batch.image_counts.tolist() == [1, 4]
    lengths = [len(it.input_ids) for it in items]
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert batch.attention_mask[0, : lengths[0]].all() and not batch.attention_mask[0, lengths[0] :].any()
    assert (batch.labels[0, lengths[0] :] == IGNORE_INDEX).all()
    prompt_lengths = [it.prompt_length for it in items]
    assert batch.prompt_mask.sum(1).tolist() == prompt_lengths
    assert batch.prompt_mask[:, -1].all()  # left padding: every prompt ends at the last column
    assert torch.equal(batch.prompt_ids[0, -prompt_lengths[0] :], items[0].input_ids[: prompt_lengths[0]])
    assert batch.targets[1].selected_images == [1, 3]
    moved = batch.to(torch.device("cpu"))
    assert moved.targets is batch.targets


def test_processor_pickles(tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]) -> None:
    clone = pickle.loads(pickle.dumps(tiny_processor))
    a = clone.encode(samples["rec"], train=False)
    b = tiny_processor.encode(samples["rec"], train=False)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.pixel_values, b.pixel_values)


def test_cached_images_give_the_same_pixels_without_decoding_again(
    tiny_config: VistaLLMConfig,
    tiny_processor: VistaLLMProcessor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{k}.png" for k in range(2)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(path)
    sample = TaskSample(Task.NLVR2, [str(p) for p in paths], Target(text="True"), question="Two circles.")
    cached = VistaLLMProcessor(tiny_config, tiny_processor.tokenizer, tiny_processor.qformer_tokenizer,
                               image_cache=8)  # fmt: skip
    expected = tiny_processor.encode(sample, train=False)
    first = cached.encode(sample, train=False)
    decoded: list[object] = []
    monkeypatch.setattr(processor_module, "load_image", lambda ref: decoded.append(ref))
    again = cached.encode(sample, train=False)
    assert decoded == [] and len(cached.image_cache) == 2
    for item in (first, again):
        assert torch.equal(item.pixel_values, expected.pixel_values)
        assert item.image_sizes == expected.image_sizes == [(40, 70), (40, 70)]
        assert torch.equal(item.input_ids, expected.input_ids)


# --------------------------------------------------------------------------------------------------
# Answers and parsing


def test_box_and_mask_answers_round_trip(samples: dict[str, TaskSample]) -> None:
    sizes = [(80, 100)]
    rec = samples["rec"]
    text = serialize_answer(Task.REC, rec.target, sizes)
    pred = parse_prediction(Task.REC, text, sizes, sample_id="x")
    assert pred.sample_id == "x" and pred.dropped == []
    np.testing.assert_allclose(pred.boxes, rec.target.boxes, atol=PAPER.max_quantization_error(100) + 1e-4)
    res = samples["res"]
    pred = parse_prediction(Task.RES, serialize_answer(Task.RES, res.target, sizes), sizes)
    assert len(pred.masks) == 1 and len(pred.masks[0].polygons[0]) == 32
    assert mask_iou(pred.masks[0].to_array(), res.target.masks[0].to_array()) > 0.9


def test_multi_image_masks_go_to_their_images(samples: dict[str, TaskSample]) -> None:
    sizes = [(80, 100), (40, 50), (80, 100), (160, 200)]
    target = samples["attcoseg"].target
    scaled = [Mask.from_array(np.kron(m.to_array(), np.ones((2, 2), bool))) for m in target.masks]
    target = Target(masks=[target.masks[0], scaled[1]], mask_image=[1, 3], selected_images=[1, 3])
    sizes = [(80, 100), (80, 100), (80, 100), (160, 200)]
    text = serialize_answer(Task.ATTCOSEG, target, sizes)
    assert text.startswith("Images 2 and 4: ")
    pred = parse_prediction(Task.ATTCOSEG, text, sizes)
    assert pred.selected_images == [1, 3] and pred.mask_image.tolist() == [1, 3]
    assert (pred.masks[1].height, pred.masks[1].width) == (160, 200)
    assert mask_iou(pred.masks[1].to_array(), scaled[1].to_array()) > 0.9
    coseg = samples["coseg"]
    pred = parse_prediction(
        Task.COSEG, serialize_answer(Task.COSEG, coseg.target, [(80, 100)] * 4), [(80, 100)] * 4
    )
    assert pred.mask_image.tolist() == [0, 1, 2, 3]


def test_empty_grec_answer_means_no_target() -> None:
    text = serialize_answer(Task.GREC, Target(), [(10, 10)])
    assert text == ""
    assert parse_prediction(Task.GREC, text, [(10, 10)]).boxes.shape == (0, 4)


@pytest.mark.parametrize("task", [t for t in Task])
def test_parsing_never_crashes_on_garbage(tiny_processor: VistaLLMProcessor, task: Task) -> None:
    tok = tiny_processor.tokenizer
    rng = np.random.default_rng(int.from_bytes(task.value.encode(), "little") % 2**32)
    texts = [
        "",
        "[",
        "]]][[",
        "[<c1><c2>",
        "Images 9 and 0: [<c5>]<msep>[1, 2, 3]",
        "[<c1>]" * 50,
        "\x00\uffff",
    ]
    for _ in range(20):
        ids = torch.from_numpy(rng.integers(-5, len(tok) + 5, size=int(rng.integers(0, 60))))
        texts.append(decode_generated(tok, ids))
    for text in texts:
        for codec in (PAPER, tiny_processor.codec):
            pred = codec.parse_prediction(task, text, [(30, 40), (50, 60)])
            assert pred.task is task
            assert all(0 <= i < 2 for i in pred.mask_image.tolist())


def test_task_metrics_score_perfect_and_garbage_answers(
    tiny_config: VistaLLMConfig, samples: dict[str, TaskSample]
) -> None:
    keys = ("rec", "res", "vqa", "nlvr2", "coseg", "attcoseg")
    sizes = {k: [(80, 100)] * samples[k].num_images for k in keys}
    sizes["vqa"], sizes["nlvr2"] = [(60, 90)], [(80, 100), (50, 70)]
    targets = [samples[k].target for k in keys]
    meta = [{"identifier": "dev-1-0-0"} if k == "nlvr2" else {} for k in keys]
    answers = {k: serialize_answer(samples[k].task, samples[k].target, sizes[k]) for k in keys}
    perfect = [
        parse_prediction(samples[k].task, answers[k], sizes[k], sample_id=samples[k].sample_id) for k in keys
    ]
    points = PAPER.num_mask_points  # the answers above are the paper codec's
    evaluator = Evaluator(
        evaluation_table(Family.VISTALLM), checks={"well_formed": lambda p: answer_well_formed(p, points)}
    )

    def score(predictions: list) -> dict[str, float]:
        evaluator.start(["d"])
        evaluator.update(
            0, [EvalItem(p, t, tuple(sizes[k]), m) for p, t, k, m in zip(predictions, targets, keys, meta)]
        )
        return {key.removeprefix("val/d/"): value for key, value in evaluator.compute(0, "val").items()}

    good = score(perfect)
    assert good["rec/acc@0.5"] == 1.0 and good["vqa/accuracy"] == 1.0 and good["nlvr2/accuracy"] == 1.0
    assert good["res/mIoU"] > 0.9 and good["coseg/jaccard"] > 0.9 and good["attcoseg/jaccard"] > 0.9
    assert all(good[f"{k}/well_formed"] == 1.0 and good[f"{k}/parse_failure"] == 0.0 for k in keys)
    garbage = [
        parse_prediction(samples[k].task, "[<c3>", sizes[k], sample_id=samples[k].sample_id) for k in keys
    ]
    bad = score(garbage)
    assert bad["rec/acc@0.5"] == 0.0 and bad["res/mIoU"] == 0.0 and bad["vqa/accuracy"] == 0.0
    assert bad["coseg/jaccard"] == 0.0
    assert all(bad[f"{k}/well_formed"] == 0.0 for k in ("rec", "res", "coseg", "attcoseg"))
    assert all(bad[f"{k}/parse_failure"] == 1.0 for k in ("rec", "res", "coseg", "attcoseg"))


def test_added_tokens_in_user_text_are_read_as_words(
    tiny_processor: VistaLLMProcessor, samples: dict[str, TaskSample]
) -> None:
    base = samples["rec"]
    tricky = dataclasses.replace(base, expression="the <image> circle at <c5> <bsep>")
    plain, item = (tiny_processor.encode(s, train=False) for s in (base, tricky))
    image_id = tiny_processor.image_token_id
    queries = tiny_processor.num_queries
    assert int((item.input_ids == image_id).sum()) == int((plain.input_ids == image_id).sum()) == queries
    coordinate_ids = set(tiny_processor.tokenizer.convert_tokens_to_ids(["<c5>", "<bsep>"]))
    assert not coordinate_ids & set(item.input_ids[: item.prompt_length].tolist())
    assert "image" in item.instruction and "circle" in item.instruction
