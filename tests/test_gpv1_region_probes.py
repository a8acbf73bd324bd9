"""``benchmarks/gpv1_region_probes.py``: the expression labels, the logistic probe, and ``main`` end to end on
the 20-image ShapesWorld with the tiny GPV-1 recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from lightning_gpv.demo import tiny_recipe
from lightning_gpv.shapesworld.scene import COLORS, SHAPES


@pytest.fixture(scope="module")
def rp(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("gpv1_region_probes")


def test_attribute_labels_read_the_named_colour_and_shape(rp: ModuleType) -> None:
    colour, shape = tuple(COLORS)[1], SHAPES[2]
    assert rp.attribute_labels(f"The {colour} {shape}") == {"color": 1, "shape": 2}
    assert rp.attribute_labels(f"{colour} thing") == {"color": 1, "shape": None}
    assert rp.attribute_labels("left one") == {"color": None, "shape": None}


def test_logistic_probe_separates_a_linear_labelling_and_not_noise(rp: ModuleType) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (400,), generator=generator)
    centres = torch.randn(3, 8, generator=generator) * 4
    features = centres[labels] + torch.randn(400, 8, generator=generator)
    accuracy, majority = rp.logistic_probe(features, labels)
    assert accuracy > 0.95 and majority < 0.5
    noise = torch.randn(400, 8, generator=generator)
    assert rp.logistic_probe(noise, labels)[0] < 0.6


def test_report_lists_every_stage_and_the_ranking(rp: ModuleType) -> None:
    generator = torch.Generator().manual_seed(1)
    n = 60
    labels = [{"color": k % 3, "shape": None if k % 2 else k % 4} for k in range(n)]
    features = {stage: list(torch.randn(n, 4, generator=generator)) for stage in rp.STAGES}
    hits = {"samples": 10, "oracle": 9, "relevance": 5, "objectness": 4, "relatedness": 3}
    text = rp.report({"features": features, "labels": labels, "hits": hits, "sensitivity": [0.5, 1.5]})
    for stage in rp.STAGES:
        assert stage in text
    assert "oracle 0.900, relevance 0.500, objectness 0.400, relatedness 0.300" in text
    assert "(mean |margin change|, 2 pairs): 1.000" in text


def test_collect_follows_each_found_object_through_every_stage(
    rp: ModuleType, shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, vocab = shapes_and_vocab
    module, loader = rp.load(tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "gpv1.yaml"), None)
    collected = rp.collect(module, loader, batches=4)
    features, labels, hits = collected["features"], collected["labels"], collected["hits"]
    found = len(labels)
    assert 0 < found <= hits["samples"] <= 4 * 8 and found == hits["oracle"]  # oracle: some box hits
    hidden = module.model.config.hidden_size
    roi, decoder = module.model.visual.roi_channels, module.model.config.visual.d_model
    widths = {"pixels": 3, "roi (C5)": roi, "detr decoder": decoder, "region": hidden, "co-attended": hidden}
    for stage, width in widths.items():
        assert len(features[stage]) == found and all(f.shape == (width,) for f in features[stage]), stage
    assert all(0 <= hits[name] <= hits["samples"] for name in ("relevance", "objectness", "relatedness"))
    assert all(value >= 0 for value in collected["sensitivity"])
    # The pixel row is the referred object's colour: the normalized mean is not the background's.
    assert any(float(f.abs().max()) > 0.5 for f in features["pixels"])


def test_main_runs_end_to_end(
    rp: ModuleType, shapes_and_vocab: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, vocab = shapes_and_vocab
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "gpv1.yaml")
    assert rp.main(["--recipe", str(recipe), "--batches", "3"]) == 0
    printed = capsys.readouterr().out
    for stage in rp.STAGES:
        assert stage in printed
    assert "top-1 hit rate at IoU 0.5: oracle" in printed and "query sensitivity" in printed


def test_main_names_a_recipe_of_another_model(
    rp: ModuleType, shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = shapes_and_vocab
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "vistallm.yaml")
    with pytest.raises(SystemExit, match=r"vistallm\.yaml: a VistaLLMModule recipe; this probe needs"):
        rp.main(["--recipe", str(recipe)])
