"""GPV-1 (Gupta et al., CVPR 2022): image + task description -> ranked boxes with relevance, and text.

Data flow of :class:`GPV1` (shapes for a batch of ``B`` images, ``R`` object queries, ``T`` query
tokens, ``V`` answer words, width ``D``):

1. :class:`~lightning_gpv.models.gpv1.detr.DetrRegionEncoder`: DETR boxes ``(B, R, 4)`` (normalized
   ``cxcywh``), objectness logits ``(B, R, 2)`` and region descriptors ``(B, R, D)``.
2. :class:`~lightning_gpv.models.gpv1.text.QueryEncoder`: BERT query tokens projected to ``(B, T, D)``.
3. :class:`~lightning_gpv.models.gpv1.coattention.CoAttention`: co-attended text and regions.
4. Relatedness head on the regions; relevance logits = objectness + relatedness ``(B, R, 2)``.
5. Relevance conditioning of the regions (switchable).
6. :class:`~lightning_gpv.models.gpv1.decoder.AnswerDecoder` over memory = regions ++ query tokens
   ``(B, R + T, D)``, scoring words by dot products with mapped frozen BERT vectors ``(V, d_text)``.

The vocabulary vectors are a persistent buffer ``answer_vectors`` (saved in checkpoints, never
trained). The reference keeps two identical frozen ``V x 768`` tables (input embedding and output
head); one buffer serves both here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from lightning_gpv.models.gpv1 import folder
from lightning_gpv.models.gpv1.coattention import CoAttention
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.decoder import AnswerDecoder
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder
from lightning_gpv.models.gpv1.heads import RelatednessHead, RelevanceConditioning, relevance_scores
from lightning_gpv.models.gpv1.text import QueryEncoder
from lightning_gpv.models.hub import WEIGHTS_FILE, SavedFolderMixin, shareable


@dataclass
class GPV1Encoding:
    """Everything computed before the text decoder.

    Attributes:
        boxes: ``(B, R, 4)`` normalized ``cxcywh`` in ``[0, 1]`` of the (resized) input image.
        objectness_logits: ``(B, R, 2)`` DETR objectness (index 0 = object).
        relatedness_logits: ``(B, R, 2)`` task relatedness (index 0 = related).
        relevance_logits: ``(B, R, 2)`` their sum (index 0 = relevant).
        memory: ``(B, R + T, D)`` decoder memory: conditioned co-attended regions then query tokens.
        memory_padding_mask: ``(B, R + T)`` bool, True on query padding; None when padding is not masked.
    """

    boxes: torch.Tensor
    objectness_logits: torch.Tensor
    relatedness_logits: torch.Tensor
    relevance_logits: torch.Tensor
    memory: torch.Tensor
    memory_padding_mask: torch.Tensor | None

    @property
    def relevance(self) -> torch.Tensor:
        """``(B, R)`` probability that each box is relevant to the task."""
        return relevance_scores(self.relevance_logits)


@dataclass
class GPV1Output(GPV1Encoding):
    """:class:`GPV1Encoding` plus ``answer_logits``: ``(B, L, V)`` teacher-forced logits, or None."""

    answer_logits: torch.Tensor | None = None


class GPV1(nn.Module, SavedFolderMixin, library_name="lightning-gpv", tags=["gpv-1", "vision-language"]):
    """The GPV-1 network (pure PyTorch; losses and optimization live in ``GPV1Module``).

    Args:
        config: All sizes (``GPV1Config.paper()`` or ``.tiny()``) and pretrained names.
        answer_vectors: ``(V, d_text)`` BERT vectors of the answer vocabulary; zeros when None (to be
            filled by :meth:`set_answer_vectors` or a checkpoint).
    """

    def __init__(self, config: GPV1Config, answer_vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.visual = DetrRegionEncoder(config.visual, hidden)
        self.query_encoder = QueryEncoder(config.text, hidden)
        word_dim = self.query_encoder.width
        c = config.coattention
        self.coattention = CoAttention(hidden, c.num_layers, c.num_heads, c.ffn_dim, c.dropout)
        self.relatedness = RelatednessHead(hidden)
        self.conditioning = RelevanceConditioning(hidden) if config.relevance_conditioning else None
        self.answer_decoder = AnswerDecoder(config.decoder, hidden, word_dim)
        self.register_buffer("answer_vectors", torch.zeros(config.vocab_size, word_dim), persistent=True)
        if answer_vectors is not None:
            self.set_answer_vectors(answer_vectors)

    @torch.no_grad()
    def set_answer_vectors(self, vectors: torch.Tensor) -> None:
        """Fill the ``(V, d_text)`` vocabulary vectors (shape must match ``config.vocab_size``)."""
        if tuple(vectors.shape) != tuple(self.answer_vectors.shape):
            raise ValueError(
                f"answer vectors of shape {tuple(vectors.shape)}; the model expects "
                f"{tuple(self.answer_vectors.shape)} (vocab_size x text width)"
            )
        self.answer_vectors.copy_(vectors)

    def encode(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
    ) -> GPV1Encoding:
        """Run everything but the text decoder.

        Args:
            pixel_values: ``(B, 3, H, W)`` ImageNet-normalized images.
            input_ids: ``(B, T)`` WordPiece ids of the task descriptions.
            attention_mask: ``(B, T)``, 1 on real tokens and 0 on padding.
            pixel_mask: ``(B, H, W)``, 1 on real pixels; None = all real.
        """
        regions = self.visual(pixel_values, pixel_mask)
        text = self.query_encoder(input_ids, attention_mask)
        text_padding = attention_mask == 0 if self.config.mask_text_padding else None
        text, region_feats = self.coattention(text, regions.features, text_padding)
        relatedness = self.relatedness(region_feats)
        relevance = regions.objectness_logits + relatedness
        if self.conditioning is not None:
            region_feats = self.conditioning(region_feats, relevance)
        memory = torch.cat([region_feats, text], dim=1)
        memory_mask = None
        if text_padding is not None:
            region_pad = text_padding.new_zeros(text_padding.shape[0], region_feats.shape[1])
            memory_mask = torch.cat([region_pad, text_padding], dim=1)
        return GPV1Encoding(
            regions.boxes, regions.objectness_logits, relatedness, relevance, memory, memory_mask
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        answer_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> GPV1Output:
        """Encode, and score ``answer_ids`` with teacher forcing when given.

        Args:
            pixel_values: ``(B, 3, H, W)``.
            input_ids: ``(B, T)``.
            attention_mask: ``(B, T)``.
            answer_ids: ``(B, L)`` answer-vocabulary ids starting with ``__cls__``, or None.
            pixel_mask: ``(B, H, W)`` or None.
        """
        enc = self.encode(pixel_values, input_ids, attention_mask, pixel_mask)
        logits = None
        if answer_ids is not None:
            logits = self.answer_decoder(answer_ids, self.answer_vectors, enc.memory, enc.memory_padding_mask)
        return GPV1Output(**vars(enc), answer_logits=logits)

    @torch.no_grad()
    def generate(
        self,
        encoding: GPV1Encoding,
        *,
        max_len: int | None = None,
        num_beams: int = 1,
        allowed: torch.Tensor | None = None,
        length_penalty: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode answers from an encoding: ``(tokens (B, L), log-prob scores (B,))``.

        See :meth:`~lightning_gpv.models.gpv1.decoder.AnswerDecoder.generate` for the arguments
        (``allowed``: ``(V,)`` or ``(B, V)`` bool, the K-way restriction).
        """
        return self.answer_decoder.generate(
            self.answer_vectors,
            encoding.memory,
            encoding.memory_padding_mask,
            max_len=max_len,
            num_beams=num_beams,
            allowed=allowed,
            length_penalty=length_penalty,
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """What the optimizer trains: ``{"main": [...], "backbone": [...]}``, the ResNet apart (the paper
        gives it a 10x lower learning rate).

        DETR's parameters are included even while frozen (they join the optimization when unfrozen); the
        frozen text encoder and the ResNet stem/stage 1 are left out.
        """
        detr = {id(p) for p in self.visual.trainable_detr_parameters()}
        backbone = {id(p) for p in self.visual.backbone_parameters()}
        groups: dict[str, list[nn.Parameter]] = {"main": [], "backbone": []}
        for param in self.parameters():
            if param.requires_grad or id(param) in detr:
                groups["backbone" if id(param) in backbone else "main"].append(param)
        return groups

    # ------------------------------------------------------------------------------------------------
    # Saved folders (huggingface_hub's ModelHubMixin: save_pretrained, from_pretrained, push_to_hub)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the config, the sub-models' architectures and every weight (the files are listed in
        ``lightning_gpv.models.gpv1.folder``); the processor writes the tokenizer and the vocabulary."""
        folder.write_config(save_directory, self.config, self.query_encoder.bert, self.visual.detr)
        save_model(self, str(save_directory / WEIGHTS_FILE))
        shareable(save_directory / WEIGHTS_FILE)

    @classmethod
    def _load_folder(cls, path: Path) -> GPV1:
        """Rebuild the saved architecture with random weights, then load every saved weight (strictly); the
        base models (BERT, DETR) are not needed."""
        model = cls(folder.read_config(path))
        load_model(model, str(path / WEIGHTS_FILE), strict=True)
        return model

    def visual_parameters(self) -> list[nn.Parameter]:
        """DETR and its heads (the gradient-clipped group; DETR proper is frozen in stage 1)."""
        return [*self.visual.detr_parameters(), *self.visual.objectness.parameters()]

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameter count per part (buffers, e.g. the vocabulary vectors and frozen batch norm, excluded)."""
        v = self.visual
        parts = {
            "detr": sum(p.numel() for p in v.detr_parameters())
            + sum(p.numel() for p in v.objectness.parameters()),
            "region_proj": sum(p.numel() for p in v.region_proj.parameters()),
            "text_encoder": sum(p.numel() for p in self.query_encoder.bert.parameters()),
            "text_proj": sum(p.numel() for p in self.query_encoder.proj.parameters()),
            "coattention": sum(p.numel() for p in self.coattention.parameters()),
            "relatedness": sum(p.numel() for p in self.relatedness.parameters()),
            "relevance_tokens": sum(p.numel() for p in self.conditioning.parameters())
            if self.conditioning
            else 0,
            "text_decoder": sum(p.numel() for p in self.answer_decoder.decoder.parameters()),
            "answer_projections": sum(p.numel() for p in self.answer_decoder.input_proj.parameters())
            + sum(p.numel() for p in self.answer_decoder.output_proj.parameters()),
        }
        parts["total"] = sum(parts.values())
        return parts
