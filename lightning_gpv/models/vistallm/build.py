"""Build VistaLLM and its processor from a config: the one place that assembles the family."""

from __future__ import annotations

import torch
from timm.models.eva import EvaBlock, EvaBlockPostNorm
from timm.models.vision_transformer import Block as VitBlock
from torch import nn
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.instructblip.modeling_instructblip import InstructBlipQFormerLayer
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.models.vistallm.qformer import InstructionGuidedTokenizer
from lightning_gpv.models.vistallm.tokenization import load_llm_tokenizer, load_qformer_tokenizer
from lightning_gpv.models.vistallm.vision import EvaFeatures, TransformersVisionFeatures

FSDP_LAYER_CLASSES: tuple[type[nn.Module], ...] = (
    LlamaDecoderLayer,
    EvaBlock,
    EvaBlockPostNorm,
    VitBlock,
    CLIPEncoderLayer,
    SiglipEncoderLayer,
    InstructBlipQFormerLayer,
)
"""Transformer blocks of VistaLLM, each an FSDP unit and an activation-checkpointing target: LLM decoder
layers (another causal LM's are found through its ``_no_split_modules``), EVA, CLIP and SigLIP blocks,
QFormer layers."""

FSDP_UNIT_CLASSES: tuple[type[nn.Module], ...] = (
    EvaFeatures,
    TransformersVisionFeatures,
    InstructionGuidedTokenizer,
)
"""Parts wrapped whole: the frozen image encoder (EVA, or a CLIP/SigLIP tower) and the trainable
instruction-guided tokenizer."""


def build_vistallm(
    config: VistaLLMConfig,
    *,
    load_weights: bool = True,
    eval_template: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[VistaLLM, VistaLLMProcessor]:
    """The model and its processor, sharing one LLM tokenizer (the coordinate and ``<image>`` tokens
    added) and the QFormer's instruction tokenizer.

    Args:
        config: The model.
        load_weights: Load the pretrained weights the config names; ``False`` builds from the dimensions.
        eval_template: Instruction template the processor uses in evaluation.
        dtype: Dtype of the loaded LLM weights.
    """
    tokenizer = load_llm_tokenizer(config.llm, config.codec)
    qformer_tokenizer = load_qformer_tokenizer(config.qformer, config.llm)
    processor = VistaLLMProcessor(config, tokenizer, qformer_tokenizer, eval_template=eval_template)
    model = VistaLLM.from_config(config, tokenizer=tokenizer, load_weights=load_weights, dtype=dtype)
    return model, processor
