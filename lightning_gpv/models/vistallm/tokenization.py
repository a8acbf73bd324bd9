"""Tokenizers of VistaLLM: the LLM's (with the added tokens) and the QFormer's instruction tokenizer.

Pretrained tokenizers load by name or path (``AutoTokenizer``; GGUF files through ``gguf_file``). No
Llama tokenizer ships in any wheel, so tiny configs build an offline word-piece tokenizer
(:func:`build_word_tokenizer`): every word of the VistaLLM prompt templates and of a word list is one
token, any other word is spelled with character pieces, so every ASCII text encodes without ``[UNK]``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lightning_gpv.models.vistallm.codec import CoordinateCodec
from lightning_gpv.models.vistallm.config import LLMConfig, QFormerConfig
from lightning_gpv.tasks.catalogue import IMAGE_TOKEN
from lightning_gpv.tasks.prompt_texts import VISTALLM_TEMPLATES

WORD_SPECIALS = ("[UNK]", "<pad>", "<s>", "</s>")
"""Unknown, padding, begin and end tokens of the word tokenizer, ids 0..3."""


def added_tokens(codec: CoordinateCodec) -> list[str]:
    """Tokens VistaLLM adds to the LLM vocabulary, in id order: coordinate bins, separators, ``<image>``."""
    return [*codec.added_tokens(), IMAGE_TOKEN]


def _template_words() -> list[str]:
    words: list[str] = []
    for templates in VISTALLM_TEMPLATES.values():
        for template in templates:
            words += re.findall(r"[A-Za-z0-9]+", template)
    return words


def build_word_tokenizer(extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A deterministic offline word-piece tokenizer for tiny models.

    The vocabulary is ``WORD_SPECIALS``, every printable ASCII character and its ``##`` continuation,
    then the words of the VistaLLM templates and ``extra_words`` (deduplicated, in first-seen order).
    Text is split on whitespace and punctuation; ``<s>`` (prepended by ``add_special_tokens=True``),
    ``</s>`` and ``<pad>`` are the bos, eos and pad tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [*WORD_SPECIALS, *chars, *("##" + c for c in string.ascii_letters + string.digits)]
    words = [w for w in (*_template_words(), *extra_words) if w.isalnum()]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*pieces, *words]))}
    model = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    model.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    model.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    model.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="[UNK]", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def _base_llm_tokenizer(config: LLMConfig) -> PreTrainedTokenizerBase:
    if config.tokenizer_kind == "words":
        return build_word_tokenizer(config.extra_words)
    source = config.tokenizer or config.name_or_path
    if source is None:
        raise ValueError("a pretrained tokenizer needs llm.tokenizer or llm.name_or_path")
    kwargs = {"gguf_file": config.gguf_file} if config.gguf_file and not config.tokenizer else {}
    return AutoTokenizer.from_pretrained(source, **kwargs)


def _ensure_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_llm_tokenizer(config: LLMConfig, codec: CoordinateCodec) -> PreTrainedTokenizerBase:
    """The LLM tokenizer with :func:`added_tokens` appended as special tokens and a padding token set.

    Vicuna has no padding token: the unknown token pads (padding never enters the loss or attention).
    """
    tokenizer = _base_llm_tokenizer(config)
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no end-of-sequence token")
    tokenizer.add_tokens(added_tokens(codec), special_tokens=True)
    return _ensure_pad(tokenizer)


def load_qformer_tokenizer(config: QFormerConfig, llm_config: LLMConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of the QFormer's instruction text (BERT-base-uncased in InstructBLIP).

    With ``config.tokenizer = None`` the LLM's own tokenizer (without the added tokens) is reused. The
    result never exceeds the QFormer's ``vocab_size``.
    """
    if config.tokenizer is None:
        tokenizer = _base_llm_tokenizer(llm_config)
    else:
        kwargs = {"subfolder": config.tokenizer_subfolder} if config.tokenizer_subfolder else {}
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, **kwargs)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"QFormer tokenizer has {len(tokenizer)} tokens, vocab_size is {config.vocab_size}")
    return _ensure_pad(tokenizer)
