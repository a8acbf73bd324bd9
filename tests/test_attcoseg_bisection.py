"""``benchmarks/attcoseg_bisection.py``: the three probes on states built to hold (or not) the pair."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def bisection(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("attcoseg_bisection")


def _groups(bisection: ModuleType, count: int, seed: int, *, shared: bool) -> list:
    """Groups of 3-5 images of 2 random tokens: 8 signature dimensions, then 16 of noise. With ``shared``,
    one token of each image of the pair has the same signature (the shared object; its noise differs, so
    a matcher must learn to look at the signature). Layer 1 of the image states marks the later image of
    the pair, layer 0 only each image's place (which the later image of a random pair tends to have late);
    the answer state of layer 1 holds the pair as two one-hot slots."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(count):
        k = int(rng.integers(3, 6))
        pair = tuple(sorted(rng.choice(k, size=2, replace=False).tolist()))
        visual = np.concatenate([rng.normal(size=(k, 2, 8)), rng.normal(size=(k, 2, 16))], axis=-1)
        if shared:
            visual[pair[1], int(rng.integers(2)), :8] = visual[pair[0], int(rng.integers(2)), :8]
        images = torch.tensor(rng.normal(size=(2, k, 8)), dtype=torch.float32)
        images[0, :, 1] += torch.arange(k)
        images[1, pair[1], 0] += 3.0
        answer = torch.tensor(rng.normal(scale=0.1, size=(2, 8)), dtype=torch.float32)
        answer[1, list(pair)] += 1.0
        visual_t = torch.tensor(visual, dtype=torch.float32)
        groups.append(bisection.GroupStates(visual_t, images, answer, pair, first_number=pair[0]))
    return groups


def test_the_matcher_learns_to_find_a_pair_that_shares_a_signature(bisection: ModuleType) -> None:
    train, test = _groups(bisection, 200, 0, shared=True), _groups(bisection, 100, 1, shared=True)
    assert bisection.chance(test) == pytest.approx(
        np.mean([2 / (g.num_images * (g.num_images - 1)) for g in test])
    )
    untrained = bisection.matcher_accuracy(test, bisection.fit_matcher(train, steps=0))
    trained = bisection.matcher_accuracy(test, bisection.fit_matcher(train, steps=1000))
    assert untrained < 0.6 and trained > 0.75  # about 0.45 and 0.87 (chance 0.20)
    blind_train, blind_test = (
        _groups(bisection, 200, 2, shared=False),
        _groups(bisection, 100, 3, shared=False),
    )
    assert bisection.matcher_accuracy(blind_test, bisection.fit_matcher(blind_train, steps=1000)) < 0.35


def test_pair_scores_follow_the_combinations_order(bisection: ModuleType) -> None:
    visual = torch.zeros(3, 1, 2)
    visual[0, 0], visual[1, 0], visual[2, 0] = (
        torch.tensor([1.0, 0.0]),
        torch.tensor([0.0, 1.0]),
        torch.tensor([1.0, 0.1]),
    )
    scores, pairs = bisection.pair_scores(visual, torch.nn.Identity(), scale=1.0)
    assert pairs == list(itertools.combinations(range(3), 2))
    assert pairs[int(scores.argmax())] == (0, 2)


def test_roc_auc_against_counting_pairs(bisection: ModuleType) -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.3
    scores = rng.integers(0, 6, size=60).astype(float)  # many ties
    pos, neg = scores[labels], scores[~labels]
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert bisection.roc_auc(labels, scores) == pytest.approx(expected)
    with pytest.raises(ValueError, match="both labels"):
        bisection.roc_auc(np.ones(3, dtype=bool), np.arange(3.0))
    # Within strata: the scores only say the stratum, where the positives are more frequent.
    strata = np.repeat([0, 1], 30)
    labels = np.concatenate([np.arange(30) < 5, np.arange(30) < 20])
    assert bisection.roc_auc(labels, strata.astype(float)) > 0.7
    assert bisection.roc_auc(labels, strata.astype(float), strata) == 0.5


def test_the_read_outs_see_the_pair_only_where_the_states_hold_it(bisection: ModuleType) -> None:
    train, test = _groups(bisection, 300, 4, shared=True), _groups(bisection, 600, 5, shared=True)
    control, marked = bisection.later_image_auc(train, test, 0), bisection.later_image_auc(train, test, 1)
    assert abs(control[1] - 0.5) < 0.05 and marked[1] > 0.95
    # Layer 0's place alone tells the later image apart across places, not within them.
    x, y, _ = bisection.later_image_data(train, 0)
    x_test, y_test, _ = bisection.later_image_data(test, 0)
    readout, mean, scale = bisection.fit_readout(x, y, torch.ones_like(y))
    with torch.no_grad():
        across = bisection.roc_auc(y_test[:, 0].numpy(), readout((x_test - mean) / scale)[:, 0].numpy())
    assert across > 0.54  # about 0.56: what a perfect place signal gives
    blind, holding = (
        bisection.answer_pair_accuracy(train, test, 0),
        bisection.answer_pair_accuracy(train, test, 1),
    )
    assert blind[1] < 0.4 and holding[1] > 0.95
    own, base = bisection.first_number_in_pair(test)
    assert own == 1.0 and base == pytest.approx(np.mean([2 / g.num_images for g in test]))


def test_group_states_of_a_tiny_model_on_a_shapesworld_group(
    bisection: ModuleType, shapes_and_vocab: tuple[Path, Path], one_thread: None
) -> None:
    from datamodules.attcoseg import AttCosegReader
    from lightning_gpv.systems.vistallm import VistaLLMModule

    system = VistaLLMModule("tiny", load_weights=False).eval()
    reader = AttCosegReader(shapes_and_vocab[0] / "attcoseg")
    sample = reader.sample(reader.read("train", train=False)[0], train=False)
    digits = bisection.digit_ids(system.processor)
    assert set(digits.values()) == set(range(1, 10))
    states = bisection.group_states(system.model, system.processor, sample, digits)
    k, size, width = len(sample.images), system.model.num_queries, system.model.llm.config.hidden_size
    layers = system.model.llm.config.num_hidden_layers
    assert states.visual.shape == (k, size, width)
    assert states.image_states.shape == (layers + 1, k, width)
    assert states.answer_states.shape == (layers + 1, width)
    assert states.pair == tuple(sorted(sample.target.selected_images)) and 0 <= states.first_number < k
    # The visual tokens are the encoder's and tokenizer's, image by image.
    item = system.processor.encode(sample, train=False)
    batch = system.processor.collate([item])
    with torch.no_grad():
        visual = system.model.encode_images(
            batch.pixel_values, batch.instruction_ids, batch.instruction_mask, batch.image_counts
        )
    torch.testing.assert_close(states.visual, visual)
    torch.testing.assert_close(states.image_states[0], visual.mean(1))  # layer 0: the input
    # The answer state is the one whose next token is the first image number (the last hidden state is
    # after the final norm, so the LM head reads it directly).
    ids = batch.input_ids[0].tolist()
    first = next(i for i in range(item.prompt_length, len(ids)) if ids[i] in digits)
    assert digits[ids[first]] == states.pair[0] + 1
    with torch.no_grad():
        logits = system.model.llm.get_output_embeddings()(states.answer_states[-1])
    allowed = [t for t, n in digits.items() if n <= k]
    assert digits[max(allowed, key=lambda t: float(logits[t]))] - 1 == states.first_number
