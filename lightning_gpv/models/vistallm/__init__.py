"""VistaLLM (Pramanick et al., 2024): EVA-CLIP encoder, instruction-guided QFormer tokenizer, causal LLM.

Pure-torch model code; the LightningModule is :class:`lightning_gpv.systems.vistallm.VistaLLMModule`.
"""

from lightning_gpv.models.vistallm.build import build_vistallm
from lightning_gpv.models.vistallm.codec import CoordinateCodec, ParseResult, decode_generated
from lightning_gpv.models.vistallm.config import (
    LLMConfig,
    LoraSettings,
    QFormerConfig,
    VisionConfig,
    VistaLLMConfig,
)
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMBatch, VistaLLMItem, VistaLLMProcessor
from lightning_gpv.models.vistallm.tokenization import (
    added_tokens,
    build_word_tokenizer,
    load_llm_tokenizer,
    load_qformer_tokenizer,
)

__all__ = [
    "CoordinateCodec",
    "LLMConfig",
    "LoraSettings",
    "ParseResult",
    "QFormerConfig",
    "VisionConfig",
    "VistaLLM",
    "VistaLLMBatch",
    "VistaLLMConfig",
    "VistaLLMItem",
    "VistaLLMProcessor",
    "added_tokens",
    "build_vistallm",
    "build_word_tokenizer",
    "decode_generated",
    "load_llm_tokenizer",
    "load_qformer_tokenizer",
]
