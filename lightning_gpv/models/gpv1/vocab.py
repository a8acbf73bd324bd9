"""GPV-1's answer vocabulary: words of the training answers, special tokens, and their BERT vectors.

The text decoder predicts one vocabulary word per step; the logit of a word is a dot product with a
linear map of the word's frozen BERT vector. The vocabulary is built from the training answers of all
text tasks (lower-cased word tokens with at least ``min_count`` occurrences; the reference keeps
count > 10, i.e. ``min_count=11``), sorted, after four special tokens with fixed ids:

* ``__pad__`` (0): padding; decoding also stops on it.
* ``__cls__`` (1): the first decoder input (BOS).
* ``__stop__`` (2): end of the answer (EOS).
* ``__unk__`` (3): out-of-vocabulary words.

(The reference appends the specials after the words; fixed leading ids keep them independent of ``V``.)

Answers are split into words by :func:`tokenize_answer` (a regular expression standing in for NLTK's
``word_tokenize``: words, numbers with their apostrophe suffix, and single punctuation marks) and
joined back by :func:`detokenize`. A vocabulary and its ``(V, d)`` vectors are cached in one folder
(``vocab.json`` + ``embeddings.pt``) by :meth:`AnswerVocabulary.save` and :func:`cached_vocabulary`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import TaskSample

PAD, CLS, STOP, UNK = "__pad__", "__cls__", "__stop__", "__unk__"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, CLS, STOP, UNK)
PAD_ID, CLS_ID, STOP_ID, UNK_ID = 0, 1, 2, 3

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}'])")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def tokenize_answer(text: str) -> list[str]:
    """Lower-case word tokens of an answer: ``"A dog's toy."`` -> ``["a", "dog's", "toy", "."]``."""
    return _WORD.findall(text.lower())


def detokenize(words: Sequence[str]) -> str:
    """Join word tokens back into text (no space before closing punctuation or after opening)."""
    text = " ".join(words)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    return _NO_SPACE_AFTER.sub(r"\1", text)


@dataclass
class AnswerVocabulary:
    """Words the text decoder can produce, with the special tokens at ids 0..3.

    Attributes:
        words: Every entry by id; ``words[:4] == SPECIAL_TOKENS``.
        min_count: The minimum count the vocabulary was built with (informational).
    """

    words: list[str]
    min_count: int = 1
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.words = list(self.words)
        if tuple(self.words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"the vocabulary must start with {SPECIAL_TOKENS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("the vocabulary has duplicate words")
        self._index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, answers: Iterable[str], *, min_count: int = 1) -> AnswerVocabulary:
        """Count word tokens over ``answers`` and keep those seen at least ``min_count`` times."""
        counts = Counter(w for a in answers for w in tokenize_answer(a))
        kept = sorted(w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS)
        return cls(list(SPECIAL_TOKENS) + kept, min_count=min_count)

    def id_of(self, word: str) -> int:
        """The id of a word token, ``UNK_ID`` when unknown."""
        return self._index.get(word, UNK_ID)

    def encode(self, text: str, max_len: int) -> list[int]:
        """``[__cls__, words..., __stop__]`` ids; words are cut so that the whole fits ``max_len``."""
        if max_len < 2:
            raise ValueError(f"max_len must leave room for __cls__ and __stop__, got {max_len}")
        ids = [self.id_of(w) for w in tokenize_answer(text)][: max_len - 2]
        return [CLS_ID, *ids, STOP_ID]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of generated ids: skips ``__cls__``, stops at ``__stop__`` or ``__pad__``."""
        words = []
        for i in ids:
            i = int(i)
            if i in (STOP_ID, PAD_ID):
                break
            if i == CLS_ID:
                continue
            words.append(self.words[i])
        return detokenize(words)

    def allowed_mask(self, texts: Iterable[str]) -> torch.Tensor:
        """``(V,)`` bool: the word tokens of ``texts`` plus ``__stop__`` (the K-way restriction).

        Classification is evaluated as K-way by forbidding every other token at every decoding step
        (token level, as the reference: a multi-word name is not enforced as a unit).

        Raises:
            ValueError: A text has a word outside the vocabulary (it could never be produced).
        """
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[STOP_ID] = True
        for text in texts:
            for w in tokenize_answer(text):
                if w not in self._index:
                    raise ValueError(f"{w!r} (of {text!r}) is not in the answer vocabulary")
                mask[self._index[w]] = True
        return mask

    def save(self, folder: str | Path, embeddings: torch.Tensor | None = None, *, source: str = "") -> None:
        """Write ``vocab.json`` (and ``embeddings.pt``, ``(V, d)`` float32, when given) into ``folder``.

        Args:
            folder: Cache folder (created).
            embeddings: The words' BERT vectors, row ``i`` for ``words[i]``.
            source: Which encoder made the vectors (checked by :func:`cached_vocabulary`).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if embeddings is not None:
            if embeddings.shape[0] != len(self):
                raise ValueError(f"{embeddings.shape[0]} embedding rows for {len(self)} words")
            torch.save(embeddings.detach().float().cpu().contiguous(), folder / "embeddings.pt")
        meta = {"words": self.words, "min_count": self.min_count, "source": source}
        (folder / "vocab.json").write_text(json.dumps(meta, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> tuple[AnswerVocabulary, torch.Tensor | None]:
        """Read a folder written by :meth:`save`: the vocabulary and its ``(V, d)`` vectors (or None)."""
        folder = Path(folder)
        path = folder / "vocab.json"
        if not path.is_file():
            raise FileNotFoundError(f"no answer vocabulary at {path}")
        meta = json.loads(path.read_text(encoding="utf-8"))
        vocab = cls(meta["words"], min_count=int(meta.get("min_count", 1)))
        emb_path = folder / "embeddings.pt"
        emb = torch.load(emb_path, weights_only=True) if emb_path.is_file() else None
        return vocab, emb


def answer_texts(samples: Iterable[TaskSample]) -> Iterator[str]:
    """The training answers of text-task samples (captioning, VQA, classification): ``target.text``."""
    for sample in samples:
        if sample.task in (Task.CAPTIONING, Task.VQA, Task.CLASSIFICATION) and sample.target.text:
            yield sample.target.text


def cached_vocabulary(
    folder: str | Path,
    answers: Callable[[], Iterable[str]],
    embed: Callable[[list[str]], torch.Tensor],
    *,
    min_count: int = 1,
    source: str = "",
) -> tuple[AnswerVocabulary, torch.Tensor]:
    """Load the vocabulary cached in ``folder``, or build, embed and cache it.

    The cache is reused when it was built with the same ``min_count`` and ``source`` and has vectors.

    Args:
        folder: Cache folder.
        answers: Called only on a cache miss: yields the training answers.
        embed: Called only on a cache miss: words to their ``(len(words), d)`` vectors (e.g.
            ``lambda ws: embed_words(ws, tokenizer, encoder)``).
        min_count: Minimum word count.
        source: Names the encoder behind ``embed``.
    """
    folder = Path(folder)
    meta_path = folder / "vocab.json"
    if meta_path.is_file() and (folder / "embeddings.pt").is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if int(meta.get("min_count", -1)) == min_count and meta.get("source", "") == source:
            vocab, emb = AnswerVocabulary.load(folder)
            assert emb is not None
            return vocab, emb
    vocab = AnswerVocabulary.build(answers(), min_count=min_count)
    emb = embed(vocab.words)
    vocab.save(folder, emb, source=source)
    return vocab, emb
