"""The BERT query encoder, its tokenizer, and BERT embeddings of answer-vocabulary words.

GPV-1 encodes the task description with BERT (frozen in the reference) and projects every token to the
model width. The answer vocabulary's word vectors are BERT's final hidden state at ``[CLS]`` for the
word fed alone (the reference's ``compute_vocab_bert.py``); :func:`embed_words` computes them.

A random-init encoder has no tokenizer of its own; :func:`write_wordpiece_vocab` makes a small WordPiece
``vocab.txt`` from example texts (every word, every character and its ``##`` continuation), which
:func:`load_tokenizer` reads like any BERT vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    PreTrainedModel,
)

from lightning_gpv.errors import InputError
from lightning_gpv.models.gpv1.config import TextEncoderConfig
from lightning_gpv.models.gpv1.vocab import AnswerVocabulary, cached_vocabulary
from lightning_gpv.models.hub import architecture_only

BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BASIC_TOKEN = re.compile(r"\w+|[^\w\s]")


def build_text_encoder(config: TextEncoderConfig) -> PreTrainedModel:
    """A BERT-architecture encoder: ``from_pretrained(config.name_or_path)``, random from the sizes, or
    random in the architecture of a folder holding only a ``config.json`` (a saved model's sub-folder)."""
    if (architecture := architecture_only(config.name_or_path)) is not None:
        return AutoModel.from_config(AutoConfig.from_pretrained(architecture))
    if config.name_or_path is not None:
        return AutoModel.from_pretrained(config.name_or_path)
    bert_config = BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
    )
    return BertModel(bert_config)


def load_tokenizer(config: TextEncoderConfig) -> BertTokenizer:
    """The query tokenizer: ``tokenizer_name_or_path`` (hub name, folder, ``vocab.txt``) or ``name_or_path``.

    Raises:
        ValueError: Neither is set (a random-init encoder needs a vocabulary; see
            :func:`write_wordpiece_vocab`).
        InputError: A local path (absolute, or a ``.txt`` file) that is not there, naming the field.
    """
    source = config.tokenizer_name_or_path or config.name_or_path
    if source is None:
        raise ValueError(
            "the text encoder has no tokenizer: set text.tokenizer_name_or_path to a hub name, a folder or a "
            "WordPiece vocab.txt (write_wordpiece_vocab makes a small one), or text.name_or_path"
        )
    path = Path(source)
    if path.suffix == ".txt" and path.is_file():
        return BertTokenizer(vocab=str(path), do_lower_case=True)
    if not path.exists() and (path.is_absolute() or path.suffix == ".txt"):
        # A local path that is not there (the hub would call it a malformed repository id); checkpoints
        # store local paths as they were where the model was trained.
        field = "tokenizer_name_or_path" if config.tokenizer_name_or_path else "name_or_path"
        raise InputError(
            f"text.{field} {source}: no such file or folder; point it at the tokenizer here "
            f"(--model.init_args.config.text.{field}=...), or load an exported folder (lightning-gpv export)"
        )
    return AutoTokenizer.from_pretrained(source)


def write_wordpiece_vocab(texts: Iterable[str], path: str | Path) -> Path:
    """Write a small lower-case WordPiece ``vocab.txt`` covering ``texts``.

    Holds BERT's five special tokens, every character of the texts (alone and as a ``##``
    continuation, so unseen words still tokenize) and every whole word, in a deterministic order.

    Returns:
        The path written.
    """
    words: set[str] = set()
    chars: set[str] = set()
    for text in texts:
        for token in _BASIC_TOKEN.findall(text.lower()):
            words.add(token)
            chars.update(token)
    entries = list(BERT_SPECIAL_TOKENS)
    entries += sorted(chars) + [f"##{c}" for c in sorted(chars)]
    entries += sorted(words - chars)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(entries) + "\n", encoding="utf-8")
    return path


class QueryEncoder(nn.Module):
    """BERT over the task description, then a linear projection to the model width.

    Args:
        config: Encoder sizes or pretrained name.
        hidden_size: Output width (768 in the paper).
    """

    def __init__(self, config: TextEncoderConfig, hidden_size: int) -> None:
        super().__init__()
        self.frozen = config.freeze
        self.bert = build_text_encoder(config)
        self.width = int(self.bert.config.hidden_size)
        self.proj = nn.Linear(self.width, hidden_size)
        if self.frozen:
            self.bert.requires_grad_(False)
            self.bert.eval()

    def train(self, mode: bool = True) -> QueryEncoder:
        """Switch modes, keeping a frozen BERT in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.bert.eval()
        return self

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BERT's last hidden state, shape ``(B, T, width)``; no gradients when frozen.

        Args:
            input_ids: ``(B, T)`` WordPiece ids (``[CLS] ... [SEP]`` then padding).
            attention_mask: ``(B, T)``, 1 for real tokens and 0 for padding.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden.detach() if self.frozen else hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Projected query tokens, shape ``(B, T, hidden_size)`` (padding positions included)."""
        return self.proj(self.encode_tokens(input_ids, attention_mask))


@torch.no_grad()
def embed_words(
    words: list[str],
    tokenizer: BertTokenizer,
    encoder: nn.Module,
    *,
    pooling: Literal["cls", "wordpieces"] = "cls",
    batch_size: int = 100,
) -> torch.Tensor:
    """Vectors of words from a BERT-architecture encoder.

    Args:
        words: The words (answer-vocabulary entries, special tokens included).
        tokenizer: The encoder's tokenizer.
        encoder: A BERT-architecture model (``QueryEncoder.bert``); it is run in eval mode.
        pooling: ``"cls"``: the final hidden state at ``[CLS]`` with the word fed alone (the reference;
            needs pretrained weights: a random encoder gives every word nearly the same vector);
            ``"wordpieces"``: the mean of the word's WordPiece input embeddings, scaled to unit RMS
            (distinct vectors even for a random-init encoder).
        batch_size: Words per forward pass.

    Returns:
        ``(len(words), hidden)`` float32 on the CPU.
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    table = encoder.get_input_embeddings().weight
    chunks = []
    for start in range(0, len(words), batch_size):
        enc = tokenizer(words[start : start + batch_size], padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        if pooling == "cls":
            vecs = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        else:
            inner = mask.clone()
            inner[:, 0] = 0  # [CLS]
            inner[torch.arange(len(ids)), mask.sum(1) - 1] = 0  # [SEP]
            inner = inner.float()[..., None]
            vecs = (table[ids] * inner).sum(1) / inner.sum(1).clamp(min=1)
            vecs = vecs / vecs.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)
        chunks.append(vecs.float().cpu())
    encoder.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, int(encoder.config.hidden_size))


def build_vocabulary(
    folder: str | Path,
    answers: Callable[[], Iterable[str]],
    config: TextEncoderConfig,
    *,
    min_count: int = 1,
    seed: int = 0,
) -> tuple[AnswerVocabulary, torch.Tensor]:
    """The answer vocabulary cached in ``folder``, built from ``answers()`` and embedded on a cache miss.

    Word vectors come from the encoder of ``config`` (:func:`embed_words`): ``[CLS]`` states of a
    pretrained encoder (the reference), or WordPiece-embedding means of a random-init one (random but
    fixed vectors; they are saved with the vocabulary and in checkpoints).

    Args:
        folder: Cache folder (``vocab.json`` + ``embeddings.pt``).
        answers: Yields the training answers (e.g. :func:`~lightning_gpv.models.gpv1.vocab.answer_texts`
            of the training samples); called only on a cache miss.
        config: The query encoder's config (the encoder and tokenizer are loaded only on a cache miss).
        min_count: Keep words seen at least this often (the reference: 11, i.e. count > 10).
        seed: Seeds a random-init encoder (without disturbing the global random state).
    """

    pooling = "cls" if config.name_or_path is not None else "wordpieces"

    def embed(words: list[str]) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a random-init encoder gives the same vectors every time
            encoder = build_text_encoder(config)
        return embed_words(words, load_tokenizer(config), encoder, pooling=pooling)

    source = config.name_or_path or f"random-bert-{config.hidden_size}-wordpieces-seed{seed}"
    return cached_vocabulary(folder, answers, embed, min_count=min_count, source=source)
