"""GPV-1: configuration, network, losses, answer vocabulary and sample processor.

The LightningModule is :class:`lightning_gpv.systems.gpv1.GPV1Module`.
"""

from lightning_gpv.models.gpv1.build import build_gpv1
from lightning_gpv.models.gpv1.config import (
    CoAttentionConfig,
    DetrEncoderConfig,
    GPV1Config,
    TextDecoderConfig,
    TextEncoderConfig,
)
from lightning_gpv.models.gpv1.losses import GPV1Criterion, GPV1LossConfig
from lightning_gpv.models.gpv1.matcher import HungarianMatcher
from lightning_gpv.models.gpv1.model import GPV1, GPV1Encoding, GPV1Output
from lightning_gpv.models.gpv1.processor import GPV1Batch, GPV1Item, GPV1Processor
from lightning_gpv.models.gpv1.text import build_vocabulary, write_wordpiece_vocab
from lightning_gpv.models.gpv1.vocab import AnswerVocabulary, answer_texts

__all__ = [
    "GPV1",
    "AnswerVocabulary",
    "GPV1Batch",
    "GPV1Item",
    "GPV1Processor",
    "answer_texts",
    "build_gpv1",
    "build_vocabulary",
    "write_wordpiece_vocab",
    "CoAttentionConfig",
    "DetrEncoderConfig",
    "GPV1Config",
    "GPV1Criterion",
    "GPV1Encoding",
    "GPV1LossConfig",
    "GPV1Output",
    "HungarianMatcher",
    "TextDecoderConfig",
    "TextEncoderConfig",
]
