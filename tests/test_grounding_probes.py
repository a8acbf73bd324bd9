"""``benchmarks/grounding_probes.py``: the ridge probes and box helpers on synthetic data, the stage features
of the untrained tiny VistaLLM on the 20-image ShapesWorld, and ``main`` end to end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

STAGES = [
    "constant", "pixel patch map", "encoder patch map", "encoder mean", "encoder oracle",
    "oracle patches alone", "qformer queries", "projected tokens", "llm @ first coord", "llm @ each coord",
    "teacher-forced argmax", "greedy answer", "llm @ each coord, other image",
    "teacher-forced argmax, other image",
]  # fmt: skip


@pytest.fixture(scope="module")
def gp(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("grounding_probes")


def _boxes(n: int, seed: int) -> torch.Tensor:
    """``(n, 4)`` random valid normalized ``xyxy`` boxes."""
    corners = torch.rand(n, 2, 2, generator=torch.Generator().manual_seed(seed))
    return torch.cat([corners.min(1).values, corners.max(1).values], dim=1)


@pytest.mark.parametrize("dim", [12, 300])  # the primal (d <= n) and the dual (d > n) solve
def test_ridge_probe_recovers_a_linear_map_and_beats_the_constant(gp: ModuleType, dim: int) -> None:
    boxes = _boxes(200, seed=0)
    features = boxes @ torch.randn(4, dim, generator=torch.Generator().manual_seed(1)) + 3.0
    predicted, _ = gp.probe(features[:100], boxes[:100], features[100:])
    iou = gp.paired_box_iou(gp.as_box(predicted), boxes[100:])
    constant = gp.paired_box_iou(boxes[:100].mean(0).expand(100, 4), boxes[100:])
    assert float(iou.mean()) > 0.99 and float(iou.min()) > 0.9
    assert float(constant.mean()) < 0.5


def test_run_probes_scores_features_and_decoded_boxes_on_the_held_out_half(gp: ModuleType) -> None:
    boxes = _boxes(120, seed=2)
    noise = torch.randn(120, 8, generator=torch.Generator().manual_seed(3))
    collected = gp.StageFeatures(
        features={
            "linear": boxes @ torch.randn(4, 6, generator=torch.Generator().manual_seed(4)),
            "noise": noise,
        },
        boxes=boxes,
        decoded={"perfect": boxes.clone(), "nothing": torch.full((120, 4), float("nan"))},
        image_ids=[i // 2 for i in range(120)],  # two samples per image: halves split whole images
    )
    rows = {row["stage"]: row for row in gp.run_probes(collected)}
    assert list(rows) == ["constant", "linear", "noise", "perfect", "nothing"]
    assert rows["constant"]["n_train"] == rows["constant"]["n_test"] == 60
    assert rows["linear"]["iou"] > 0.99 and rows["linear"]["acc@0.5"] == 1.0
    assert rows["perfect"]["iou"] == pytest.approx(1.0) and rows["nothing"]["iou"] == 0.0
    assert abs(rows["noise"]["iou"] - rows["constant"]["iou"]) < 0.05  # noise knows nothing
    assert rows["constant"]["iou"] < 0.5
    # The halves never share an image.
    train = gp.split_halves(collected.image_ids)
    assert not set(torch.tensor(collected.image_ids)[train].tolist()) & set(
        torch.tensor(collected.image_ids)[~train].tolist()
    )


def test_oracle_pooling_and_patch_boxes_on_a_4x4_grid(gp: ModuleType) -> None:
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5]])  # the top-left 2 x 2 patches
    inside = gp.patch_inside(box, 4)
    assert inside.nonzero()[:, 1].tolist() == [0, 1, 4, 5]
    pooled = gp.oracle_pool(torch.eye(16)[None], box, 4)
    assert torch.allclose(pooled, inside.float() / 4)
    tiny = torch.tensor([[0.55, 0.8, 0.6, 0.85]])  # inside no patch centre: the patch under its centre
    assert gp.oracle_pool(torch.eye(16)[None], tiny, 4).argmax().item() == 3 * 4 + 2
    assert torch.allclose(gp.mask_box(inside.float(), 0.5, 4), box)
    scores = torch.zeros(1, 16)
    scores[0, 6] = 0.2  # none above the threshold: the best patch alone
    assert torch.allclose(gp.mask_box(scores, 0.5, 4), torch.tensor([[0.5, 0.25, 0.75, 0.5]]))


@pytest.fixture(scope="module")
def system() -> Iterator[object]:
    from lightning_gpv.systems.vistallm import VistaLLMModule

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield VistaLLMModule(config="tiny", stage=1, load_weights=False)
    torch.set_num_threads(threads)


def test_collect_features_shapes_and_positions(
    gp: ModuleType, shapes_and_vocab: tuple[Path, Path], system: object
) -> None:
    data, _ = shapes_and_vocab
    samples = gp.load_samples(data, "train", 12)[4:10]  # samples of 2 images (a few share each)
    assert len(samples) == 6 and len({s.image_ids[0] for s in samples}) > 1
    collected = gp.collect_features(system, samples, batch_size=4)  # batches of 4 and 2
    f = collected.features
    expected = {
        "encoder mean": (6, 64), "encoder oracle": (6, 64), "oracle patches alone": (6, 64),
        "qformer queries": (6, 8 * 64), "projected tokens": (6, 8 * 128), "llm @ first coord": (6, 128),
        "llm @ each coord": (6, 4, 128), "llm @ each coord, other image": (6, 4, 128),
    }  # fmt: skip
    assert {name: tuple(x.shape) for name, x in f.items()} == expected
    assert tuple(collected.patch_maps["pixel patch map"].shape) == (6, 64, 3 * 8 * 8)
    assert tuple(collected.patch_maps["encoder patch map"].shape) == (6, 64, 64)
    assert list(collected.decoded) == [
        "teacher-forced argmax",
        "teacher-forced argmax, other image",
        "greedy answer",
    ]
    assert all(tuple(x.shape) == (6, 4) for x in collected.decoded.values())
    argmax = collected.decoded["teacher-forced argmax"]
    assert bool(((argmax > 0) & (argmax < 1)).all())
    for box, sample in zip(collected.boxes, samples):
        height, width = sample.image_sizes[0]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        assert torch.allclose(box * scale, torch.as_tensor(sample.target.boxes[0]), atol=1e-3)
    assert torch.equal(f["llm @ first coord"], f["llm @ each coord"][:, 0])
    for own, other in zip(f["llm @ each coord"], f["llm @ each coord, other image"]):
        assert not torch.allclose(own, other)  # every sample sees another image in the control
    # Independently: the answer is "[ <x0> <y0> <x1> <y1> ]", so the states predicting the coordinates are
    # those at the answer's first 4 positions, from "[" on.
    item = system.processor.encode(samples[5], train=False)
    batch = system.processor.collate([item])
    with torch.no_grad():
        embeds = system.model.embed_inputs(
            batch.input_ids,
            batch.pixel_values,
            batch.instruction_ids,
            batch.instruction_mask,
            batch.image_counts,
        )
        hidden = system.model.llm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][0]
    start = item.prompt_length
    assert system.processor.tokenizer.convert_ids_to_tokens(int(item.input_ids[start])) == "["
    assert torch.allclose(f["llm @ each coord"][5], hidden[start : start + 4], atol=1e-4)


def test_main_runs_end_to_end(
    gp: ModuleType, shapes_and_vocab: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = shapes_and_vocab
    out = tmp_path / "probes.json"
    argv = ["--untrained", "--random-init", "--data", str(data), "--split", "train", "--samples", "8"]
    assert gp.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 samples" in printed and "Acc@0.5" in printed
    report = json.loads(out.read_text())
    assert report["samples"] == 8 and report["split"] == "train"
    assert [row["stage"] for row in report["rows"]] == STAGES
    for row in report["rows"]:
        assert 0.0 <= row["iou"] <= 1.0 and 0.0 <= row["acc@0.5"] <= 1.0
        assert row["n_train"] + row["n_test"] == 8 and row["n_test"] > 0
        assert row["stage"] in printed
