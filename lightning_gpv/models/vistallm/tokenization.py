"""Tokenizers of VistaLLM: the LLM's (with the added tokens) and the QFormer's instruction tokenizer.

Pretrained tokenizers load by name or path (``AutoTokenizer``; GGUF files through ``gguf_file``). A local
folder that holds a SentencePiece ``tokenizer.model`` and nothing describing it (no ``tokenizer.json``, no
``tokenizer_config.json``; Vicuna v1.3 may be shipped so) loads as a Llama tokenizer
(:func:`load_sentencepiece_tokenizer`). No Llama tokenizer ships in any wheel, so tiny configs build an
offline word-piece tokenizer (:func:`build_word_tokenizer`): every word of the VistaLLM prompt templates
and of a word list is one token, any other word is spelled with character pieces, so every ASCII text
encodes without ``[UNK]``.
"""

from __future__ import annotations

import copy
import functools
import re
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lightning_gpv.models.vistallm.codec import PAPER_NUM_MASK_POINTS, CoordinateCodec
from lightning_gpv.models.vistallm.config import LLMConfig, QFormerConfig
from lightning_gpv.tasks.catalogue import IMAGE_TOKEN
from lightning_gpv.tasks.prompt_texts import VISTALLM_TEMPLATES
from lightning_gpv.tasks.prompts import fill_point_count

WORD_SPECIALS = ("[UNK]", "<pad>", "<s>", "</s>")
"""Unknown, padding, begin and end tokens of the word tokenizer, ids 0..3."""

SENTENCEPIECE_FILE = "tokenizer.model"
"""File name of a SentencePiece model in a tokenizer folder (Llama and Vicuna ship one)."""

TOKENIZER_DESCRIPTION_FILES = ("tokenizer.json", "tokenizer_config.json")
"""Files that tell ``AutoTokenizer`` how to build a tokenizer; a folder with none of them next to a
``tokenizer.model`` loads through :func:`load_sentencepiece_tokenizer`."""


def added_tokens(codec: CoordinateCodec) -> list[str]:
    """Tokens VistaLLM adds to the LLM vocabulary, in id order: coordinate bins, separators, ``<image>``."""
    return [*codec.added_tokens(), IMAGE_TOKEN]


def _template_words() -> list[str]:
    # The paper's point count fills the mask templates, so the vocabulary (and the ids of shipped weights)
    # does not depend on a model's num_mask_points: other counts are spelled from digit pieces.
    words: list[str] = []
    for templates in VISTALLM_TEMPLATES.values():
        for template in templates:
            words += re.findall(r"[A-Za-z0-9]+", fill_point_count(template, PAPER_NUM_MASK_POINTS))
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


def sentencepiece_only(source: str | Path) -> Path | None:
    """The SentencePiece model of a local tokenizer folder that has nothing else describing its tokenizer.

    Returns:
        The path of ``source/tokenizer.model`` when ``source`` is a local folder holding that file and
        none of :data:`TOKENIZER_DESCRIPTION_FILES`; ``None`` otherwise (hub names included).
    """
    folder = Path(source)
    if not folder.is_dir() or not (folder / SENTENCEPIECE_FILE).is_file():
        return None
    if any((folder / name).is_file() for name in TOKENIZER_DESCRIPTION_FILES):
        return None
    return folder / SENTENCEPIECE_FILE


def _sentencepiece_normalizer(spec: Any) -> Any:
    """The ``tokenizers`` normalizer of a SentencePiece ``NormalizerSpec``, or ``None`` for the identity
    normalisation of Llama's model."""
    from tokenizers import Regex, normalizers

    steps: list[Any] = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        # Only the right end is stripped: text after an added token (``<image> Where``) arrives as its own
        # segment, and its leading space is the word boundary SentencePiece would have seen.
        steps += [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    return normalizers.Sequence(steps) if steps else None


def load_sentencepiece_tokenizer(model_file: str | Path) -> PreTrainedTokenizerFast:
    """A Llama-style tokenizer converted from a SentencePiece BPE model file (``tokenizer.model``).

    The conversion is transformers' ``LlamaTokenizer`` one. The model's unknown, begin, end and (when it
    has one) padding pieces become the tokenizer's special tokens. The begin token is prepended to every
    encoded text and no end token is appended, as Llama and Vicuna were trained. Characters the model has
    no piece for map to the unknown token unless the model falls back to bytes, and the model's own
    normalisation (character map, removal of extra spaces) is kept, so plain text gets SentencePiece's ids.

    Returns:
        A ``PreTrainedTokenizerFast`` whose ``name_or_path`` is the model's folder. It is not a
        ``LlamaTokenizer``: that class rebuilds its BPE model when it reloads a saved ``tokenizer.json``
        and would lose the unknown token and the normalisation; this one reloads (``AutoTokenizer``) as saved.

    Raises:
        ValueError: The model is not a BPE model (a Unigram model needs its tokenizer class named in a
            ``tokenizer_config.json`` next to it).
    """
    from sentencepiece import sentencepiece_model_pb2
    from transformers import LlamaTokenizer

    path = Path(model_file)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    spec = proto.trainer_spec
    if spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(spec.model_type)
        raise ValueError(
            f"{path} is a SentencePiece {kind} model; only BPE models (the Llama family) load from "
            f"{SENTENCEPIECE_FILE} alone: add a tokenizer_config.json naming the tokenizer class"
        )

    def piece(index: int) -> str | None:
        return proto.pieces[index].piece if 0 <= index < len(proto.pieces) else None

    specials = {
        "unk_token": piece(spec.unk_id),
        "bos_token": piece(spec.bos_id),
        "eos_token": piece(spec.eos_id),
        "pad_token": piece(spec.pad_id),
        "add_bos_token": spec.bos_id >= 0,
        "add_eos_token": False,
    }
    converted = LlamaTokenizer.from_pretrained(
        str(path.parent), add_prefix_space=proto.normalizer_spec.add_dummy_prefix, legacy=False, **specials
    )
    backend = converted.backend_tokenizer
    # LlamaTokenizer assumes byte pieces and sets no unknown token: a model without byte pieces would
    # silently drop every character it has no piece for.
    backend.model.byte_fallback = spec.byte_fallback
    if not spec.byte_fallback:
        backend.model.unk_token = piece(spec.unk_id)
    normalizer = _sentencepiece_normalizer(proto.normalizer_spec)
    if normalizer is not None:
        backend.normalizer = normalizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, name_or_path=str(path.parent), **specials)


def _base_llm_tokenizer(config: LLMConfig) -> PreTrainedTokenizerBase:
    if config.tokenizer_kind == "words":
        return build_word_tokenizer(config.extra_words)
    source = config.tokenizer or config.name_or_path
    if source is None:
        raise ValueError("a pretrained tokenizer needs llm.tokenizer or llm.name_or_path")
    model_file = None if config.gguf_file and not config.tokenizer else sentencepiece_only(source)
    if model_file is not None:
        # Without a tokenizer_config.json, AutoTokenizer prepends no <s> and (unless a config.json names
        # Llama) misses the word-start marker of the first word.
        return load_sentencepiece_tokenizer(model_file)
    if config.gguf_file and not config.tokenizer:
        # A copy: callers add tokens and set templates on what they get.
        return copy.deepcopy(_gguf_tokenizer(source, config.gguf_file, _file_stamp(source, config.gguf_file)))
    return AutoTokenizer.from_pretrained(source)


def _file_stamp(folder: str, name: str) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of ``folder/name`` when it is a local file (a hub name has none)."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _gguf_tokenizer(source: str, gguf_file: str, stamp: tuple[int, int] | None) -> PreTrainedTokenizerBase:
    """The tokenizer stored in a GGUF file, read once per file version (``stamp``) and process.

    Reading it parses the whole file's metadata in Python (about 4 s for SmolLM2-135M), and building a
    VistaLLM needs it for the LLM and the QFormer, again when a checkpoint or an exported folder loads.
    """
    del stamp  # part of the cache key only: a rewritten file is read again
    return AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)


def _ensure_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_llm_tokenizer(config: LLMConfig, codec: CoordinateCodec) -> PreTrainedTokenizerBase:
    """The LLM tokenizer with :func:`added_tokens` appended as special tokens and a padding token set.

    Vicuna has no padding token: the unknown token pads (padding never enters the loss or attention).
    ``config.chat_template``, when set, replaces the tokenizer's chat template.

    Returns:
        The tokenizer, ready for :class:`~lightning_gpv.models.vistallm.processor.VistaLLMProcessor`.
    """
    tokenizer = _base_llm_tokenizer(config)
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer {describe_tokenizer(tokenizer)} has no end-of-sequence token")
    if config.chat_template is not None:
        tokenizer.chat_template = config.chat_template
    tokenizer.add_tokens(added_tokens(codec), special_tokens=True)
    return _ensure_pad(tokenizer)


def describe_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """A name for ``tokenizer`` in messages.

    Returns:
        Its class name, followed by the hub name or folder it was loaded from when it has one.
    """
    source = getattr(tokenizer, "name_or_path", "")
    return f"{type(tokenizer).__name__} ({source})" if source else type(tokenizer).__name__


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Check that ``tokenizer`` can render chat turns (``tokenizer.apply_chat_template``).

    Raises:
        ValueError: It has no chat template; the message names the tokenizer and the remedies.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"prompt_template is CHAT_TEMPLATE but the LLM tokenizer {describe_tokenizer(tokenizer)} has no "
            "chat template: set llm.chat_template to a Jinja template, or choose a prompt_template with "
            "an {instruction} slot (e.g. VICUNA_V1_1)"
        )


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
