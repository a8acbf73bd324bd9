"""CIDEr-D against the golden values of pycocoevalcap 1.2 and against pycocoevalcap itself."""

from __future__ import annotations

import random

import pytest
import torch
from _metrics_oracle import java_available, pycocoevalcap_tokenize

from lightning_gpv.metrics import CIDErD
from lightning_gpv.metrics.captioning import cider_d_scores
from lightning_gpv.metrics.ptb_tokenizer import ptb_tokenize

Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider

GTS = {
    "img1": [
        "A man riding a wave on top of a surfboard.",
        "A surfer riding a large wave in the ocean.",
        "A man's surfing on a big wave.",
    ],
    "img2": [
        "Two dogs playing with a frisbee in the park.",
        "A couple of dogs run on the grass (outside).",
        "Dogs chasing a frisbee on a green lawn.",
    ],
    "img3": [
        "A plate of food with broccoli and rice.",
        "A white plate topped with rice, meat, and broccoli.",
        "Food on a plate, including vegetables.",
    ],
}
RES = {
    "img1": "A man riding a wave on a surfboard.",
    "img2": "Two dogs playing in the grass.",
    "img3": "A plate of rice and broccoli.",
}
KEYS = list(GTS)


def _cider(preds: list[str], refs: list[list[str]], **kwargs: object) -> float:
    metric = CIDErD(**kwargs)  # type: ignore[arg-type]
    metric.update(preds, refs)
    return metric.compute().item()


def test_golden_values_with_ptb_tokenizer() -> None:
    metric = CIDErD()
    metric.update([RES[k] for k in KEYS], [GTS[k] for k in KEYS], ids=KEYS)
    assert metric.compute().item() == pytest.approx(2.2673315180685174, abs=1e-12)


def test_golden_per_image_scores() -> None:
    metric = CIDErD()
    metric.update([RES[k] for k in KEYS], [GTS[k] for k in KEYS])
    states, _ = metric._gather_states(["words", "lengths", "n_refs"])
    scores = cider_d_scores(states["words"], states["lengths"], states["n_refs"])
    expected = [3.1986660280511474, 1.41871811808055, 2.184610408073855]
    assert scores.tolist() == pytest.approx(expected, abs=1e-12)


def test_golden_values_edge_cases() -> None:
    refs = [GTS[k] for k in KEYS]
    assert _cider([RES[k] for k in KEYS], refs, tokenizer=None) == pytest.approx(
        1.6995694923823141, abs=1e-12
    )
    assert _cider(["", RES["img2"], RES["img3"]], refs) == pytest.approx(1.201109508718135, abs=1e-12)
    assert _cider([GTS[k][0] for k in KEYS], refs) == pytest.approx(4.163133064569318, abs=1e-12)
    assert _cider([RES["img1"]], [GTS["img1"]]) == 0.0  # one image: every reference n-gram has idf 0


def _corpus(seed: int, n_images: int, vocab: int = 60) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0 if rng.random() < 0.05 else 1, 12)))

    preds = [sentence() for _ in range(n_images)]
    refs = [[sentence() for _ in range(rng.randint(1, 6))] for _ in range(n_images)]
    return preds, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocoevalcap_on_random_corpora(seed: int) -> None:
    preds, refs = _corpus(seed, 200)
    expected, expected_per_image = Cider().compute_score(
        {i: r for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(preds)}
    )
    metric = CIDErD(tokenizer=None)
    for start in range(0, 200, 37):  # uneven batches
        metric.update(
            preds[start : start + 37], refs[start : start + 37], ids=list(range(start, min(start + 37, 200)))
        )
    assert metric.compute().item() == pytest.approx(expected, abs=1e-9)


def test_per_caption_unit_equals_replicated_pycocoevalcap() -> None:
    preds, refs = _corpus(5, 60)
    gts, res, k = {}, {}, 0
    for pred, ref in zip(preds, refs):
        for _ in ref:  # GPV-1: one unit per caption annotation, each with all the image's references
            gts[k], res[k] = ref, [pred]
            k += 1
    expected, _ = Cider().compute_score(gts, res)
    assert _cider(preds, refs, tokenizer=None, per_caption=True) == pytest.approx(expected, abs=1e-9)
    # The same number from one update row per annotation.
    metric = CIDErD(tokenizer=None)
    metric.update([res[i][0] for i in gts], [gts[i] for i in gts], ids=list(gts))
    assert metric.compute().item() == pytest.approx(expected, abs=1e-9)


def test_duplicates_are_dropped_by_id() -> None:
    preds, refs = _corpus(7, 30)
    clean = _cider(preds, refs, tokenizer=None)
    metric = CIDErD(tokenizer=None)
    metric.update(preds, refs, ids=[f"img{i}" for i in range(30)])
    metric.update(preds[:4], refs[:4], ids=[f"img{i}" for i in range(4)])  # DistributedSampler padding
    assert metric.compute().item() == pytest.approx(clean, abs=1e-12)
    # Without ids the repeats change N and the document frequencies.
    assert _cider(preds + preds[:4], refs + refs[:4], tokenizer=None) != pytest.approx(clean, abs=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_corpus_and_empty_predictions() -> None:
    assert CIDErD().compute().item() == 0.0
    preds, refs = _corpus(8, 10)
    assert _cider([""] * 10, refs, tokenizer=None) == 0.0
    with pytest.raises(ValueError):
        CIDErD().update(["a"], [[]])
    with pytest.raises(TypeError):
        CIDErD().update("a dog", [["a dog"]])  # type: ignore[arg-type]


def test_unicode_and_callable_tokenizer() -> None:
    preds = ["Un café à Zürich.", "北京 的 街道", "A dog 🐶 runs."]
    refs = [["Un café très chaud à Zürich."], ["北京 的 街道 很 长"], ["A dog runs in the park."]]
    tok = [[ptb_tokenize(s) for s in r] for r in refs]
    expected, _ = Cider().compute_score(
        {i: r for i, r in enumerate(tok)}, {i: [ptb_tokenize(p)] for i, p in enumerate(preds)}
    )
    assert _cider(preds, refs) == pytest.approx(expected, abs=1e-12)
    assert _cider(preds, refs, tokenizer=ptb_tokenize) == pytest.approx(expected, abs=1e-12)


def test_float64_states_survive_dtype_casts() -> None:
    metric = CIDErD(tokenizer=None)
    metric.update(["a b c"], [["a b", "b c d"]])
    metric.update(["x y"], [["x y z"]])
    metric.set_dtype(torch.float32)  # int64 states must not be touched
    assert metric.words[0].dtype == torch.int64


@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_full_pipeline_against_pycocoevalcap_with_java_tokenizer() -> None:
    """Raw captions: pycocoevalcap tokenizes refs and hyps in two Java calls; we tokenize in Python."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {k: [{"caption": c} for c in GTS[k]] for k in KEYS}
    gts["img4"] = [
        {"caption": "Mr. Smith's dog can't run, e.g. (fast)!"},
        {"caption": "A dog -- brown -- sits."},
    ]
    res = {k: [{"caption": RES[k]}] for k in KEYS} | {"img4": [{"caption": "Dr. Who's dog isn't running..."}]}
    tokenizer = PTBTokenizer()
    expected, _ = Cider().compute_score(tokenizer.tokenize(gts), tokenizer.tokenize(res))
    keys = list(gts)
    preds = [res[k][0]["caption"] for k in keys]
    refs = [[c["caption"] for c in gts[k]] for k in keys]
    assert _cider(preds, refs) == pytest.approx(expected, abs=1e-9)
    assert pycocoevalcap_tokenize(preds)[0] == ptb_tokenize(preds[0])
