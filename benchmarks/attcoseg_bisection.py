"""Where does VistaLLM lose which two images of an AttCoSeg group share the object?

An AttCoSeg answer starts ``Images i and j: ...``. ``benchmarks/coseg_probe.py --task attcoseg`` measures how
often the named pair is the true one; this script follows the pair through the model to find where it is
lost. For every group of a ShapesWorld AttCoSeg split, one teacher-forced pass over the evaluation prompt
and the true answer gives

1. the visual tokens as placed in the LLM input, ``(k, L, D)`` per group: a small matcher (a linear map to 64
   dimensions, then the largest cosine similarity over the ``L x L`` token pairs of two images, a softmax over
   the group's pairs) is trained on the train groups and picks the best pair of each test group. Above chance,
   the tokens hold what tells the pair apart, in a form one attention step can compare;
2. the LLM's hidden state of every layer at each image's ``L`` positions (their mean). Attention is causal, so
   only the *later* image of the pair can see its partner: a linear read-out per layer is trained to tell
   that image from the group's other images after the first. Its ROC AUC on the test groups compares only
   images at the same place ``j`` of groups of the same size ``k``: the pair is drawn at random, so the
   later image is more often a late one, which a state can know from its place alone (the LLM's causal
   attention counts the images before it). Layer 0 is the input, which sees no other image: the control;
3. the hidden state of every layer at the position that writes the first image number: a linear read-out
   per layer scores each image slot as "in the pair"; the two best slots of a test group are its pair.

Pair accuracies are compared with choosing a pair at random (``2 / (k (k - 1))``), and the model's own first
number is reported beside the chance that a random image is in the pair (``2 / k``).

    .venv/bin/python benchmarks/attcoseg_bisection.py \\
        --ckpt outputs/demo/vistallm_stage2/checkpoints/last.ckpt --data outputs/demo/data \\
        [--train-groups 2400] [--test-groups 300]

The demo's world has 300 AttCoSeg groups (240 train, 30 test); a larger set is written by
``lightning_gpv.shapesworld.coseg.build_attcoseg`` (``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from datamodules.attcoseg import AttCosegReader
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.systems.vistallm import VistaLLMModule
from lightning_gpv.tasks.samples import TaskSample


@dataclass
class GroupStates:
    """What one teacher-forced pass of a group leaves for the probes.

    Attributes:
        visual: ``(k, L, D)`` visual tokens of the group's ``k`` images, as placed in the LLM input.
        image_states: ``(layers + 1, k, D)`` each layer's hidden state averaged over each image's positions.
        answer_states: ``(layers + 1, D)`` each layer's hidden state at the position that writes the first
            image number.
        pair: The true pair, 0-based, ascending.
        first_number: The image named by the likeliest digit token for ``1 .. k`` where the first number
            is written (0-based).
    """

    visual: torch.Tensor
    image_states: torch.Tensor
    answer_states: torch.Tensor
    pair: tuple[int, int]
    first_number: int

    @property
    def num_images(self) -> int:
        return int(self.visual.shape[0])


def digit_ids(processor: VistaLLMProcessor) -> dict[int, int]:
    """Token id -> image number (1-9) of the LLM tokenizer's single-digit tokens (a number may have
    several: word-initial and word-inner pieces)."""
    out: dict[int, int] = {}
    for token, token_id in processor.tokenizer.get_vocab().items():
        text = token.lstrip("▁Ġ#")
        if len(text) == 1 and text in "123456789":
            out[token_id] = int(text)
    return out


@torch.no_grad()
def group_states(
    model: VistaLLM, processor: VistaLLMProcessor, sample: TaskSample, digits: dict[int, int]
) -> GroupStates:
    """One teacher-forced pass over ``sample``'s evaluation prompt and true answer."""
    item = processor.encode(sample, train=False)
    batch = processor.collate([item])
    ids = batch.input_ids[0].tolist()
    first = next((i for i in range(item.prompt_length, len(ids)) if ids[i] in digits), None)
    if first is None:
        raise ValueError(f"{sample.sample_id}: the answer names no image number")
    embeds = model.embed_inputs(
        batch.input_ids, batch.pixel_values, batch.instruction_ids, batch.instruction_mask, batch.image_counts
    )
    out = model.llm(
        inputs_embeds=embeds, attention_mask=batch.attention_mask, output_hidden_states=True, use_cache=False
    )
    hidden = torch.stack([h[0] for h in out.hidden_states])  # (layers + 1, T, D)
    positions = (batch.input_ids[0] == model.image_token_id).nonzero().flatten()
    k, size = len(sample.images), model.num_queries
    image_states = hidden[:, positions].unflatten(1, (k, size)).mean(2)
    logits = out.logits[0, first - 1]
    best = max((t for t, n in digits.items() if n <= k), key=lambda t: float(logits[t]))
    pair = sorted(sample.target.selected_images)
    return GroupStates(
        visual=embeds[0, positions].unflatten(0, (k, size)),
        image_states=image_states,
        answer_states=hidden[:, first - 1],
        pair=(int(pair[0]), int(pair[1])),
        first_number=digits[best] - 1,
    )


def chance(groups: Sequence[GroupStates]) -> float:
    """The pair accuracy of choosing a pair at random."""
    return float(np.mean([2.0 / (g.num_images * (g.num_images - 1)) for g in groups]))


# --------------------------------------------------------------------------------------------------
# 1. The visual tokens


def pair_scores(
    visual: torch.Tensor, proj: nn.Module, scale: float = 10.0
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``(P,)`` scores of the ``P`` image pairs of one group (the largest cosine similarity over their
    token pairs after ``proj``) and the pairs, in ``itertools.combinations`` order."""
    z = nn.functional.normalize(proj(visual), dim=-1)  # (k, L, d)
    pairs = list(itertools.combinations(range(visual.shape[0]), 2))
    scores = torch.stack([torch.einsum("ld,md->lm", z[i], z[j]).amax() for i, j in pairs])
    return scores * scale, pairs


def fit_matcher(groups: Sequence[GroupStates], steps: int, dim: int = 64, seed: int = 0) -> nn.Module:
    """The token matcher, trained with a softmax over each train group's pairs (one group per step)."""
    torch.manual_seed(seed)
    proj = nn.Linear(groups[0].visual.shape[-1], dim)
    optimizer = torch.optim.Adam(proj.parameters(), lr=1e-3)
    for step in range(steps):
        group = groups[step % len(groups)]
        scores, pairs = pair_scores(group.visual, proj)
        loss = nn.functional.cross_entropy(scores[None], torch.tensor([pairs.index(group.pair)]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return proj


@torch.no_grad()
def matcher_accuracy(groups: Sequence[GroupStates], proj: nn.Module) -> float:
    """How often the matcher's best pair is the true one."""
    hits = []
    for group in groups:
        scores, pairs = pair_scores(group.visual, proj)
        hits.append(pairs[int(scores.argmax())] == group.pair)
    return float(np.mean(hits))


# --------------------------------------------------------------------------------------------------
# 2. and 3. Linear read-outs of the LLM's states


def roc_auc(labels: np.ndarray, scores: np.ndarray, strata: np.ndarray | None = None) -> float:
    """Area under the ROC curve: the share of (positive, negative) pairs the scores order right, ties
    counting half (the Mann-Whitney statistic). With ``strata``, only pairs of the same stratum count.

    Raises:
        ValueError: No stratum holds both labels.
    """
    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    strata = np.zeros(len(labels), dtype=int) if strata is None else np.asarray(strata)
    right, pairs = 0.0, 0
    for stratum in np.unique(strata):
        inside = strata == stratum
        positives, negatives = int(labels[inside].sum()), int((~labels[inside]).sum())
        if positives and negatives:
            ranks = rankdata(scores[inside])
            right += ranks[labels[inside]].sum() - positives * (positives + 1) / 2
            pairs += positives * negatives
    if pairs == 0:
        raise ValueError("roc_auc needs both labels in some stratum")
    return float(right / pairs)


def fit_readout(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, steps: int = 500, seed: int = 0
) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear read-out of ``(N, D)`` features (standardised here) to ``(N, C)`` binary targets, trained with
    a sigmoid cross-entropy that counts only the entries where ``weight``
    (``(N, C)``) is 1. Returns it with the features' mean and scale."""
    torch.manual_seed(seed)
    mean, scale = x.mean(0), x.std(0) + 1e-5
    readout = nn.Linear(x.shape[1], y.shape[1])
    optimizer = torch.optim.Adam(readout.parameters(), lr=1e-2, weight_decay=1e-3)
    z = (x - mean) / scale
    for _ in range(steps):
        losses = nn.functional.binary_cross_entropy_with_logits(readout(z), y, reduction="none")
        loss = (losses * weight).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return readout, mean, scale


def later_image_data(
    groups: Sequence[GroupStates], layer: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Probe 2's features ``(N, D)``, labels ``(N, 1)`` (1: the later image of the pair) and strata ``(N,)``
    (``10 k + j``) of each image ``j >= 1`` of each group."""
    x = [g.image_states[layer, j] for g in groups for j in range(1, g.num_images)]
    y = [float(j == g.pair[1]) for g in groups for j in range(1, g.num_images)]
    strata = [10 * g.num_images + j for g in groups for j in range(1, g.num_images)]
    return torch.stack(x), torch.tensor(y)[:, None], np.array(strata)


@torch.no_grad()
def _apply(readout: nn.Linear, mean: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return readout((x - mean) / scale)


def later_image_auc(
    train: Sequence[GroupStates], test: Sequence[GroupStates], layer: int
) -> tuple[float, float]:
    """Probe 2 at ``layer``: the read-out's ROC AUC within places on the train and the test groups."""
    x, y, strata = later_image_data(train, layer)
    fitted = fit_readout(x, y, torch.ones_like(y))
    x_test, y_test, strata_test = later_image_data(test, layer)
    return (
        roc_auc(y[:, 0].numpy(), _apply(*fitted, x)[:, 0].numpy(), strata),
        roc_auc(y_test[:, 0].numpy(), _apply(*fitted, x_test)[:, 0].numpy(), strata_test),
    )


def _slots(groups: Sequence[GroupStates], slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.zeros(len(groups), slots)
    valid = torch.zeros(len(groups), slots)
    for row, group in enumerate(groups):
        y[row, list(group.pair)] = 1.0
        valid[row, : group.num_images] = 1.0
    return y, valid


def _top_pair_accuracy(scores: torch.Tensor, groups: Sequence[GroupStates]) -> float:
    hits = []
    for row, group in zip(scores, groups):
        top = torch.topk(row[: group.num_images], 2).indices.tolist()
        hits.append(tuple(sorted(top)) == group.pair)
    return float(np.mean(hits))


def answer_pair_accuracy(
    train: Sequence[GroupStates], test: Sequence[GroupStates], layer: int
) -> tuple[float, float]:
    """Probe 3 at ``layer``: the pair accuracy of the read-out's two best image slots, train and test."""
    slots = max(g.num_images for g in [*train, *test])
    x = torch.stack([g.answer_states[layer] for g in train])
    y, valid = _slots(train, slots)
    fitted = fit_readout(x, y, valid)
    x_test = torch.stack([g.answer_states[layer] for g in test])
    return (
        _top_pair_accuracy(_apply(*fitted, x), train),
        _top_pair_accuracy(_apply(*fitted, x_test), test),
    )


def first_number_in_pair(groups: Sequence[GroupStates]) -> tuple[float, float]:
    """How often the model's own first number names an image of the pair, and the chance ``2 / k``."""
    return (
        float(np.mean([g.first_number in g.pair for g in groups])),
        float(np.mean([2.0 / g.num_images for g in groups])),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument(
        "--ckpt", type=Path, required=True, help="VistaLLMModule checkpoint (Lightning .ckpt)"
    )
    parser.add_argument("--data", type=Path, required=True, help="ShapesWorld folder holding attcoseg/")
    parser.add_argument("--train-groups", type=int, default=2400, help="the train split's first groups")
    parser.add_argument("--test-groups", type=int, default=300, help="the test split's first groups")
    parser.add_argument("--matcher-steps", type=int, default=3000, help="probe 1's training steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    system = VistaLLMModule.load_from_checkpoint(args.ckpt, map_location="cpu", load_weights=False).eval()
    processor, model = system.processor, system.model
    digits = digit_ids(processor)
    reader = AttCosegReader(args.data / "attcoseg")

    def states(split: str, count: int) -> list[GroupStates]:
        records = reader.read(split, train=False)[:count]
        return [group_states(model, processor, reader.sample(r, train=False), digits) for r in records]

    train, test = states("train", args.train_groups), states("test", args.test_groups)
    if len(train) < 10 or len(test) < 2:
        parser.error(
            f"{args.data / 'attcoseg'}: {len(train)} train and {len(test)} test groups; need 10 and 2"
        )
    layers = int(train[0].image_states.shape[0])
    print(
        f"{args.ckpt} on {args.data}: {len(train)} train / {len(test)} test groups, {layers - 1} LLM layers"
    )
    print(f"a random pair (chance) {chance(test):.3f} test")
    proj = fit_matcher(train, args.matcher_steps)
    print(f"1. visual tokens, matcher: pair {matcher_accuracy(train, proj):.3f} train / "
          f"{matcher_accuracy(test, proj):.3f} test")  # fmt: skip
    for layer in range(layers):
        auc = later_image_auc(train, test, layer)
        pair = answer_pair_accuracy(train, test, layer)
        print(f"layer {layer}: 2. later image of the pair, AUC {auc[0]:.3f} / {auc[1]:.3f}; "
              f"3. the answer's state, pair {pair[0]:.3f} / {pair[1]:.3f} (train / test)")  # fmt: skip
    own, base = first_number_in_pair(test)
    print(f"the model's first number is in the pair {own:.3f} test (a random image {base:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
