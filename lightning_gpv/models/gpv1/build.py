"""Build GPV-1 and its processor from a config: the one place that assembles the family."""

from __future__ import annotations

from dataclasses import replace

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn
from transformers.models.bert.modeling_bert import BertLayer, BertModel
from transformers.models.detr.modeling_detr import DetrDecoderLayer, DetrEncoderLayer
from transformers.models.resnet.modeling_resnet import (
    ResNetBasicLayer,
    ResNetBottleNeckLayer,
    ResNetEmbeddings,
)

from lightning_gpv.models.gpv1.coattention import CoAttentionLayer
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.model import GPV1
from lightning_gpv.models.gpv1.processor import GPV1Processor
from lightning_gpv.models.gpv1.vocab import SPECIAL_TOKENS, AnswerVocabulary

FSDP_LAYER_CLASSES: tuple[type[nn.Module], ...] = (
    DetrEncoderLayer,
    DetrDecoderLayer,
    BertLayer,
    CoAttentionLayer,
    nn.TransformerDecoderLayer,
    ResNetBasicLayer,
    ResNetBottleNeckLayer,
    BasicBlock,
    Bottleneck,
)
"""GPV-1 blocks, each an FSDP unit: DETR encoder/decoder, BERT, ResNet (transformers' or timm's),
co-attention and answer-decoder layers."""

FSDP_UNIT_CLASSES: tuple[type[nn.Module], ...] = (BertModel, ResNetEmbeddings)
"""Parts wrapped whole: the (frozen) BERT query encoder and the frozen ResNet stem."""


def build_gpv1(
    config: GPV1Config, vocab_path: str | None = None, seed: int = 0
) -> tuple[GPV1, GPV1Processor]:
    """The model and its processor (query tokenizer, answer vocabulary, image resizing).

    Args:
        config: The model; ``vocab_size`` is replaced by the vocabulary's size when one is read
            (``model.config`` is the config actually built).
        vocab_path: Folder of the answer vocabulary and its vectors (``vocab.json`` + ``embeddings.pt``).
            ``None`` builds a placeholder vocabulary of ``config.vocab_size`` words (memory planning, or
            loading a checkpoint, which restores the real words and vectors).
        seed: Seeds the processor's training-time prompt choice.
    """
    vectors = None
    if vocab_path is not None:
        vocab, vectors = AnswerVocabulary.load(vocab_path)
        if vectors is None:
            raise ValueError(f"the answer vocabulary at {vocab_path} has no embeddings.pt")
        config = replace(config, vocab_size=len(vocab))
    else:
        placeholders = (f"__word{i}__" for i in range(config.vocab_size - len(SPECIAL_TOKENS)))
        vocab = AnswerVocabulary([*SPECIAL_TOKENS, *placeholders])
    return GPV1(config, answer_vectors=vectors), GPV1Processor.from_config(config, vocab, seed=seed)
