"""Speed of CIDErD and VQAAccuracy against the reference implementations, measured in the same run.

    python benchmarks/metrics_speed.py [--images 5000] [--refs 5] [--questions 50000] [--threads 1]

* CIDEr-D: pycocoevalcap 1.2 ``Cider`` vs ``lightning_gpv.metrics.CIDErD`` on synthetic captions (fixed seed)
  for ``--images`` images with ``--refs`` references each: tokenization alone (pycocoevalcap's Java
  PTBTokenizer, two calls as in COCOEvalCap, vs ``ptb_tokenize_batch``; the tokens are asserted equal),
  (a) CIDEr-D on the same PTB-tokenized input, (b) end to end from raw captions, tokenization included
  both ways. Needs ``pycocoevalcap``; without ``java`` the reference tokens are ours and the reference
  end-to-end time leaves the Java tokenizer out (the output says so; that speed-up is a lower bound).
* VQA: a plain re-execution of the official ``vqaEval.py`` loop (HEAD a013f00, restated below from its
  definition; the official file is not installable) vs ``VQAAccuracy``.

Our timings include every ``update`` (batches of 100, with ids) and the final ``compute``; caches are
cleared first. The values are asserted equal (CIDEr-D |diff| <= 1e-12, VQA 1e-9). torch runs with
``--threads`` threads.
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch

from lightning_gpv.helptext import first_paragraph
from lightning_gpv.metrics import CIDErD, VQAAccuracy, _sync, captioning
from lightning_gpv.metrics.ptb_tokenizer import ptb_tokenize, ptb_tokenize_batch
from lightning_gpv.metrics.vqa import _CONTRACTIONS, normalize_vqa_answer

BATCH = 100

_SUBJECTS = [
    "man",
    "woman",
    "dog",
    "cat",
    "child",
    "group of people",
    "bus",
    "plate",
    "zebra",
    "surfer",
    "kite",
]
_VERBS = [
    "riding",
    "sitting on",
    "standing next to",
    "eating",
    "holding",
    "looking at",
    "flying over",
    "near",
]
_OBJECTS = ["wave", "bench", "street", "frisbee", "pizza", "table", "beach", "umbrella", "field", "building"]
_EXTRA = ["", "", " in the park", " on a sunny day", ", while smiling", " (outside)", " that isn't moving"]


def synthetic_captions(n_images: int, n_refs: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    vocab = [f"w{i:04d}" for i in range(4000)]

    def caption() -> str:
        det = rng.choice(["A", "The", "Two", "a", "An old", "Some"])
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 4))]
        text = (
            f"{det} {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} a {' '.join(words)} {rng.choice(_OBJECTS)}"
        )
        return text.replace("  ", " ") + rng.choice(_EXTRA) + rng.choice([".", ".", "", " ."])

    return [caption() for _ in range(n_images)], [[caption() for _ in range(n_refs)] for _ in range(n_images)]


def _row(label: str, ref_name: str, ref_time: float, our_name: str, our_time: float) -> None:
    speedup = ref_time / our_time
    print(f"  {label}  {ref_name} {ref_time:7.3f} s | {our_name} {our_time:7.3f} s | {speedup:5.1f}x faster")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def ours_cider(preds: list[str], refs: list[list[str]], tokenizer: Any) -> float:
    metric = CIDErD(tokenizer=tokenizer)
    for start in range(0, len(preds), BATCH):
        stop = start + BATCH
        metric.update(preds[start:stop], refs[start:stop], ids=list(range(start, min(stop, len(preds)))))
    return float(metric.compute())


def clear_caches() -> None:
    """Forget every tokenization and word hash, so that our timings start cold."""
    ptb_tokenize.cache_clear()
    captioning._WORD_HASHES.clear()
    _sync._HASH_CACHE.clear()


def bench_cider(n_images: int, n_refs: int) -> None:
    from pycocoevalcap.cider.cider import Cider

    preds, refs = synthetic_captions(n_images, n_refs)
    gts_raw = {i: [{"caption": c} for c in r] for i, r in enumerate(refs)}
    res_raw = {i: [{"caption": p}] for i, p in enumerate(preds)}
    captions = preds + [c for r in refs for c in r]
    print(f"CIDEr-D: {n_images} images x {n_refs} references ({len(captions)} raw captions)")
    java = shutil.which("java") is not None

    def reference_tokenize() -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """pycocoevalcap's Java PTBTokenizer, one call for the references and one for the predictions."""
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize(gts_raw), PTBTokenizer().tokenize(res_raw)

    # Tokenization alone; the tokens must agree caption by caption.
    clear_caches()
    our_tokens, our_time = timed(lambda: ptb_tokenize_batch(captions))
    if java:
        (gts_tok, res_tok), ref_time = timed(reference_tokenize)
        java_tokens = [res_tok[i][0] for i in range(n_images)] + [
            t for i in range(n_images) for t in gts_tok[i]
        ]
        assert java_tokens == our_tokens
        _row("PTB tokenization", "Java PTBTokenizer", ref_time, "ptb_tokenize_batch", our_time)
    else:
        print(
            "  java not found: the reference tokens below are lightning_gpv's (equal to the jar's on the "
            "cached oracle), and the reference end-to-end time leaves out the Java tokenizer, so that "
            "speed-up is a lower bound"
        )
        tok_preds, tok_refs = our_tokens[:n_images], our_tokens[n_images:]
        res_tok = {i: [t] for i, t in enumerate(tok_preds)}
        gts_tok = {i: tok_refs[i * n_refs : (i + 1) * n_refs] for i in range(n_images)}

    # (a) the same tokenized input
    (ref_value, _), ref_time = timed(lambda: Cider().compute_score(gts_tok, res_tok))
    tok_preds = [res_tok[i][0] for i in range(n_images)]
    tok_refs = [gts_tok[i] for i in range(n_images)]
    clear_caches()
    our_value, our_time = timed(lambda: ours_cider(tok_preds, tok_refs, tokenizer=None))
    assert abs(ref_value - our_value) <= 1e-12, (ref_value, our_value)
    _row("tokenized input ", "pycocoevalcap", ref_time, "CIDErD", our_time)

    # (b) end to end: raw captions, tokenization included both ways
    def reference_pipeline() -> float:
        if not java:
            return Cider().compute_score(gts_tok, res_tok)[0]
        gts, res = reference_tokenize()
        return Cider().compute_score(gts, res)[0]

    ref_value, ref_time = timed(reference_pipeline)
    clear_caches()
    our_value, our_time = timed(lambda: ours_cider(preds, refs, tokenizer="ptb"))
    assert abs(ref_value - our_value) <= 1e-12, (ref_value, our_value)
    if java:
        _row("raw + PTB (Java)", "pycocoevalcap", ref_time, "CIDErD", our_time)
    else:
        _row("raw (no Java)   ", "Cider, no tokenizer", ref_time, "CIDErD", our_time)
    print(f"  CIDEr-D = {our_value:.12f} (|pycocoevalcap - ours| = {abs(ref_value - our_value):.1e})")


# --- VQA -------------------------------------------------------------------------------------------------
_PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
_NUMBERS |= {"six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or (re.search(_COMMA_STRIP, text) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)


def _process_digit_article(text: str) -> str:
    out = []
    for word in text.lower().split():
        word = _NUMBERS.setdefault(word, word)
        if word not in ["a", "an", "the"]:
            out.append(word)
    for i, word in enumerate(out):
        if word in _CONTRACTIONS:
            out[i] = _CONTRACTIONS[word]
    return " ".join(out)


def reference_vqa(questions: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """The official evaluation loop (HEAD): answer records, normalization only when the answers differ."""
    acc_qa, acc_type = [], {}
    for q in questions:
        answers = [dict(a) for a in q["answers"]]
        for a in answers:
            a["answer"] = a["answer"].replace("\n", " ").replace("\t", " ").strip()
        res = q["prediction"].replace("\n", " ").replace("\t", " ").strip()
        if len({a["answer"] for a in answers}) > 1:
            for a in answers:
                a["answer"] = _process_digit_article(_process_punctuation(a["answer"]))
            res = _process_digit_article(_process_punctuation(res))
        gt_acc = []
        for gt in answers:
            others = [item for item in answers if item != gt]
            matching = [item for item in others if item["answer"] == res]
            gt_acc.append(min(1, float(len(matching)) / 3))
        acc = float(sum(gt_acc)) / len(gt_acc)
        acc_qa.append(acc)
        acc_type.setdefault(q["answer_type"], []).append(acc)
    overall = float(sum(acc_qa)) / len(acc_qa)
    return overall, {k: float(sum(v)) / len(v) for k, v in acc_type.items()}


def synthetic_vqa(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    pool = [
        "yes",
        "Yes",
        "no",
        "No.",
        "2",
        "two",
        "3",
        "three",
        "red",
        "Red",
        "the dog",
        "a dog",
        "dog",
        "cat",
        "isnt",
        "it's",
        "left side.",
        "fire_hydrant",
        "3,000",
        "1.5",
        "none",
        "tennis",
        "red and white",
    ]
    types = ["yes/no", "number", "other"]
    questions = []
    for qid in range(n):
        main = rng.choice(pool)
        answers = [main if rng.random() < 0.6 else rng.choice(pool) for _ in range(10)]
        questions.append(
            {
                "question_id": qid,
                "prediction": rng.choice([main, rng.choice(pool)]),
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                    for i, a in enumerate(answers)
                ],
                "answer_type": rng.choice(types),
            }
        )
    return questions


def ours_vqa(questions: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    metric = VQAAccuracy(per_answer_type=True)
    for start in range(0, len(questions), BATCH):
        batch = questions[start : start + BATCH]
        metric.update(
            [q["prediction"] for q in batch],
            [[a["answer"] for a in q["answers"]] for q in batch],
            ids=[q["question_id"] for q in batch],
            answer_types=[q["answer_type"] for q in batch],
        )
    return metric.compute()  # type: ignore[return-value]


def bench_vqa(n: int) -> None:
    questions = synthetic_vqa(n)
    print(f"VQA accuracy: {n} questions x 10 answers")
    (ref_overall, ref_types), ref_time = timed(lambda: reference_vqa(questions))
    normalize_vqa_answer.cache_clear()
    ours, our_time = timed(lambda: ours_vqa(questions))
    assert abs(ref_overall - float(ours["overall"])) <= 1e-9
    assert all(abs(v - float(ours[k])) <= 1e-9 for k, v in ref_types.items())
    _row("10 answers each ", "official loop", ref_time, "VQAAccuracy", our_time)
    print(f"  accuracy = {float(ours['overall']):.12f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--questions", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, {args.threads} torch thread(s), "
        f"{platform.processor() or platform.machine()}"
    )
    bench_cider(args.images, args.refs)
    bench_vqa(args.questions)


if __name__ == "__main__":
    main()
