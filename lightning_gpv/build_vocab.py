"""The ``build-vocab`` command: GPV-1's answer vocabulary (and, for tiny models, a WordPiece ``vocab.txt``).

``GPV1Module(vocab_path=...)`` reads a folder made by
:func:`~lightning_gpv.models.gpv1.text.build_vocabulary` (``vocab.json`` + ``embeddings.pt``). This command
makes it from the training answers of COCO (captioning, classification) and VQAv2::

    # tiny random-init BERT (ShapesWorld): writes OUT/vocab.txt (tokenizer) and OUT/answers/
    lightning-gpv build-vocab --coco-root data/shapesworld/coco --vqa-root data/shapesworld/vqav2 \\
        --out data/shapesworld/gpv1_vocab --tiny
    # the paper: answers seen more than 10 times, vectors from BERT's [CLS]
    lightning-gpv build-vocab --coco-root data/coco --vqa-root data/vqav2 --vqa-image-dir \\
        'data/coco/images/{split}' --out data/gpv1_vocab --min-count 11 --text-encoder bert-base-uncased

The answer folder is ``OUT/answers`` (the recipes' ``model.vocab_path``). ``--tiny`` uses the text encoder
of ``GPV1Config.tiny()`` with a ``vocab.txt`` written from the prompts, questions and answers, of
:data:`TINY_TOKENIZER_SIZE` entries at most (the tiny recipes' ``text.vocab_size``).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_gpv.helptext import epilog, first_paragraph

if TYPE_CHECKING:
    from lightning_gpv.tasks.samples import TaskSample

TINY_TOKENIZER_SIZE = 512
"""``model.config.text.vocab_size`` of the tiny recipes: the written ``vocab.txt`` must fit in it."""


def _train_samples(
    coco_root: str | None, vqa_root: str | None, vqa_image_dir: str | None
) -> list[TaskSample]:
    """The training samples of the COCO and VQAv2 folders (:func:`datamodules.vocab.vocabulary_samples`).

    The one place :mod:`lightning_gpv` reaches into ``datamodules``, at call time: the command reads data
    files and ``lightning-gpv`` dispatches it here.
    """
    from datamodules.vocab import vocabulary_samples

    return vocabulary_samples(coco_root, vqa_root, vqa_image_dir)


def build(
    out: str | Path,
    coco_root: str | None = None,
    vqa_root: str | None = None,
    vqa_image_dir: str | None = None,
    min_count: int = 1,
    text_encoder: str | None = None,
    tiny: bool = False,
    seed: int = 0,
) -> Path:
    """Write the vocabulary folder ``out`` (see the module docstring); return ``out / "answers"``."""
    from lightning_gpv.models.gpv1 import GPV1Config
    from lightning_gpv.models.gpv1.text import build_vocabulary, write_wordpiece_vocab
    from lightning_gpv.models.gpv1.vocab import answer_texts
    from lightning_gpv.shapesworld import SHAPES
    from lightning_gpv.tasks import GPV1_PROMPTS, Task

    if not coco_root and not vqa_root:
        raise ValueError("give --coco-root and/or --vqa-root")
    if tiny == (text_encoder is not None):
        raise ValueError("give exactly one of --tiny and --text-encoder")
    out = Path(out)
    if (out / "answers" / "vocab.json").exists():
        raise FileExistsError(f"{out / 'answers'} already holds a vocabulary; remove it to rebuild")
    # Training samples draw their answer with the global ``random`` (GPV-1's VQA target): seed it, so
    # that one seed always gives one vocabulary, and give the caller's random state back afterwards.
    state = random.getstate()
    random.seed(seed)
    try:
        samples = _train_samples(coco_root, vqa_root, vqa_image_dir)
    finally:
        random.setstate(state)
    answers = list(answer_texts(samples))
    if tiny:
        tasks = (Task.LOCALIZATION, Task.CLASSIFICATION, Task.CAPTIONING, Task.VQA)
        texts = [
            GPV1_PROMPTS.render(t, index=i, category="x")
            for t in tasks
            if t != Task.VQA
            for i in range(len(GPV1_PROMPTS.templates_for(t)))
        ]
        texts += [s.question or "" for s in samples] + answers + list(SHAPES)
        vocab_txt = write_wordpiece_vocab(texts, out / "vocab.txt")
        size = len(vocab_txt.read_text(encoding="utf-8").splitlines())
        if size > TINY_TOKENIZER_SIZE:
            raise ValueError(f"{vocab_txt} has {size} entries, more than {TINY_TOKENIZER_SIZE}")
        text = replace(
            GPV1Config.tiny().text, tokenizer_name_or_path=str(vocab_txt), vocab_size=TINY_TOKENIZER_SIZE
        )
        answers += list(SHAPES)
    else:
        text = replace(GPV1Config.paper().text, name_or_path=text_encoder)
    vocab, _ = build_vocabulary(out / "answers", lambda: answers, text, min_count=min_count, seed=seed)
    print(f"build-vocab: {len(vocab)} answer words written to {out / 'answers'}")
    return out / "answers"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, help="output folder (answers/ and, with --tiny, vocab.txt)")
    parser.add_argument("--coco-root", help="COCO-format folder (captions and classes of train2014)")
    parser.add_argument("--vqa-root", help="VQAv2-format folder (answers of train2014)")
    parser.add_argument(
        "--vqa-image-dir", help="VQAv2 image folder pattern (default: ROOT/../coco/images/{split})"
    )
    parser.add_argument(
        "--min-count", type=int, default=1, help="keep answer words seen this often (paper: 11)"
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--text-encoder", help="pretrained BERT hub name or folder (e.g. bert-base-uncased)")
    group.add_argument("--tiny", action="store_true", help="tiny random-init encoder + a written vocab.txt")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightning-gpv build-vocab", description=first_paragraph(__doc__),
                                     epilog=epilog(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser = add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        build(args.out, args.coco_root, args.vqa_root, args.vqa_image_dir, args.min_count, args.text_encoder,
              args.tiny, args.seed)  # fmt: skip
    except (FileExistsError, ValueError) as err:
        print(f"build-vocab: error: {err}", file=sys.stderr)
        return 2
    return 0
