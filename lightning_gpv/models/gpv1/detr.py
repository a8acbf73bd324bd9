"""GPV-1's visual encoder: transformers' DETR plus RoI-aligned region features and a binary objectness head.

DETR itself (ResNet backbone with frozen batch norm, sine positions, transformer encoder/decoder, object
queries, box MLP) is transformers' ``DetrForObjectDetection``; this module only runs its parts in order
so that the raw backbone map, which DETR does not return, is available for RoI pooling, and adds:

* ``objectness``: ``Linear(d, 2)`` replacing DETR's 80-way classifier (index 0 = object, 1 = no object);
* region descriptors: ``[layer_norm(mean_7x7(roi_align(C5, box))), decoder feature]`` (2048 + 256 in
  the paper), projected to the model width by ``region_proj``.

Needs transformers >= 5 (the keyword names of ``DetrEncoder``/``DetrDecoder.forward``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

from lightning_gpv.geometry.boxes import box_convert
from lightning_gpv.models import shipped
from lightning_gpv.models.gpv1.config import DetrEncoderConfig
from lightning_gpv.models.hub import architecture_only

_TRAINABLE_BACKBONE_PARTS = ("stages.1.", "stages.2.", "stages.3.", "layer2.", "layer3.", "layer4.")
"""DETR trains only ResNet stages 2-4 (stem and stage 1 stay frozen); HF and timm ResNet names."""

_HALF = (torch.bfloat16, torch.float16)
FRESH_PARTS = ("region_proj.", "objectness.")
"""Parts a pretrained DETR file (``DetrEncoderConfig.checkpoint``) does not set: GPV-1 trains them from their
init (the paper replaces DETR's classifier by a new binary objectness head)."""
_WRAPPER_PREFIX = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module)\.")


@dataclass
class RegionOutput:
    """What the visual encoder returns for a batch of ``B`` images and ``R`` object queries.

    Attributes:
        features: ``(B, R, hidden)`` projected region descriptors.
        detr_features: ``(B, R, d_model)`` DETR decoder output (last layer, after its layer norm).
        boxes: ``(B, R, 4)`` predicted boxes, normalized ``cxcywh`` in ``[0, 1]``.
        objectness_logits: ``(B, R, 2)``; index 0 = object, 1 = no object.
        roi_features: ``(B, R, C)`` the boxes' pooled backbone features in the descriptors (see
            :meth:`DetrRegionEncoder.roi_features`); None when the config leaves them out.
    """

    features: torch.Tensor
    detr_features: torch.Tensor
    boxes: torch.Tensor
    objectness_logits: torch.Tensor
    roi_features: torch.Tensor | None = None


def build_detr(config: DetrEncoderConfig) -> DetrForObjectDetection:
    """``DetrForObjectDetection``: ``from_pretrained(config.name_or_path)`` or random from the sizes.

    The random build uses transformers' own ResNet (no timm, no download; works on the meta device).
    """
    if (architecture := architecture_only(config.name_or_path)) is not None:
        # A saved model's sub-folder: the architecture only (its weights come from the model's own file).
        detr_config = DetrConfig.from_pretrained(architecture)
        detr_config.use_pretrained_backbone = False
        return DetrForObjectDetection(detr_config)
    if config.name_or_path is not None:
        return DetrForObjectDetection.from_pretrained(config.name_or_path)
    backbone = ResNetConfig(
        embedding_size=config.backbone_embedding_size,
        hidden_sizes=list(config.backbone_hidden_sizes),
        depths=list(config.backbone_depths),
        layer_type=config.backbone_layer_type,
        out_features=[f"stage{len(config.backbone_depths)}"],
    )
    detr_config = DetrConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        num_queries=config.num_queries,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.num_heads,
        decoder_attention_heads=config.num_heads,
        encoder_ffn_dim=config.ffn_dim,
        decoder_ffn_dim=config.ffn_dim,
        dropout=config.dropout,
        num_labels=1,
    )
    detector = DetrForObjectDetection(detr_config)
    _init_like_detr(detector)
    return detector


@torch.no_grad()
def _init_like_detr(detector: DetrForObjectDetection) -> None:
    """Re-initialize a random DETR as the original code does (transformers draws everything from N(0, 0.02)).

    Xavier-uniform transformer matrices, PyTorch's default init of the input projection and heads, and
    N(0, 1) query embeddings. With transformers' std 0.02 everywhere, attention starts uniform and
    learns very slowly, and the near-equal queries give every query nearly the same box.
    """
    model = detector.model
    for part in (model.encoder, model.decoder):
        for param in part.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
    for module in (model.input_projection, *detector.bbox_predictor.layers):
        module.reset_parameters()
    nn.init.normal_(model.query_position_embeddings.weight)


class DetrRegionEncoder(nn.Module):
    """DETR regions for GPV-1: boxes, objectness logits and projected region descriptors.

    Args:
        config: DETR sizes or pretrained name, RoI settings.
        hidden_size: Width of the projected region descriptors (768 in the paper).
    """

    def __init__(self, config: DetrEncoderConfig, hidden_size: int) -> None:
        super().__init__()
        self.roi_size = config.roi_size
        self.use_roi_features = config.use_roi_features
        detector = build_detr(config)
        self.detr = detector.model
        self.box_head = detector.bbox_predictor
        d_model = int(self.detr.config.d_model)
        self.num_queries = int(self.detr.config.num_queries)
        self.objectness = nn.Linear(d_model, 2)
        self.roi_channels = int(self.detr.backbone.intermediate_channel_sizes[-1])
        in_dim = d_model + (self.roi_channels if self.use_roi_features else 0)
        self.region_proj = nn.Linear(in_dim, hidden_size)
        for name, param in self.detr.backbone.named_parameters():
            param.requires_grad_(any(part in name for part in _TRAINABLE_BACKBONE_PARTS))
        self._trainable_detr = [n for n, p in self.named_parameters() if p.requires_grad and self._is_detr(n)]
        if config.checkpoint is not None and self.region_proj.weight.device.type != "meta":
            shipped.load_encoder(self, config.checkpoint, skip=FRESH_PARTS)

    @staticmethod
    def _is_detr(name: str) -> bool:
        return name.startswith(("detr.", "box_head."))

    def _parameters_by_name(self) -> dict[str, nn.Parameter]:
        """``named_parameters`` under the names they had at construction: FSDP1 and activation checkpointing
        insert their wrapper modules (``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``) into the
        names of the parameters they wrap."""
        return {_WRAPPER_PREFIX.sub("", name): param for name, param in self.named_parameters()}

    def trainable_detr_parameters(self) -> list[nn.Parameter]:
        """DETR's parameters that train once it is unfrozen (all but the ResNet stem and stage 1)."""
        params = self._parameters_by_name()
        return [params[name] for name in self._trainable_detr]

    def detr_parameters(self) -> list[nn.Parameter]:
        """Parameters that come from DETR (backbone, transformer, box head): frozen in stage 1."""
        return [p for n, p in self.named_parameters() if self._is_detr(n)]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The ResNet's parameters (the paper's 10x lower learning rate)."""
        return list(self.detr.backbone.parameters())

    def set_detr_frozen(self, frozen: bool) -> None:
        """Freeze or unfreeze DETR; the ResNet stem and stage 1 stay frozen either way."""
        params = self._parameters_by_name()
        for name in self._trainable_detr:
            params[name].requires_grad_(not frozen)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> RegionOutput:
        """Encode images into ``R`` regions each.

        Args:
            pixel_values: ``(B, 3, H, W)`` ImageNet-normalized images.
            pixel_mask: ``(B, H, W)``, 1 on real pixels and 0 on padding; all ones when None.
        """
        batch = pixel_values.shape[0]
        if pixel_mask is None:
            pixel_mask = torch.ones(
                pixel_values.shape[:1] + pixel_values.shape[2:], device=pixel_values.device
            )
        feature_map, mask = self.detr.backbone(pixel_values, pixel_mask)[-1]
        pos = self.detr.position_embedding(
            shape=feature_map.shape, device=feature_map.device, dtype=pixel_values.dtype, mask=mask
        )
        # Contiguous (B, HW, d) sequences: a Linear over a transposed 3-D input goes through
        # torch.matmul, which picks one GEMM over a contiguous copy when the weight requires grad and a
        # batched GEMM over the transposed slices when it does not. The two can round differently, so
        # a frozen DETR (stage 1) and a trainable one (e.g. the same weights reloaded) would disagree
        # in the last bits; a contiguous input always takes the single-GEMM path.
        pos = pos.flatten(2).transpose(1, 2).contiguous()
        tokens = self.detr.input_projection(feature_map).flatten(2).transpose(1, 2).contiguous()
        flat_mask = mask.flatten(1)
        memory = self.detr.encoder(
            inputs_embeds=tokens, attention_mask=flat_mask, spatial_position_embeddings=pos
        ).last_hidden_state
        query_pos = self.detr.query_position_embeddings.weight.unsqueeze(0).expand(batch, -1, -1)
        hs = self.detr.decoder(
            inputs_embeds=torch.zeros_like(query_pos),
            encoder_hidden_states=memory,
            encoder_attention_mask=flat_mask,
            spatial_position_embeddings=pos,
            object_queries_position_embeddings=query_pos,
        ).last_hidden_state
        boxes = self.box_head(hs).sigmoid()
        roi = self.roi_features(feature_map, boxes) if self.use_roi_features else None
        parts = [hs] if roi is None else [roi, hs]
        features = self.region_proj(torch.cat(parts, dim=-1))
        return RegionOutput(features, hs, boxes, self.objectness(hs), roi)

    def roi_features(self, feature_map: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """RoI-aligned, averaged, layer-normed (no affine) backbone features of the boxes.

        Args:
            feature_map: ``(B, C, Hf, Wf)`` raw backbone output (before DETR's input projection).
            boxes: ``(B, R, 4)`` normalized ``cxcywh``; detached (no gradient flows into the boxes).

        Returns:
            ``(B, R, C)``.
        """
        b, r, _ = boxes.shape
        h, w = feature_map.shape[-2:]
        scale = boxes.new_tensor([w, h, w, h])
        xyxy = box_convert(boxes.detach(), "cxcywh", "xyxy") * scale
        dtype = feature_map.dtype
        # torchvision's CPU kernel has no bf16/fp16 version: pool in fp32 there (a bf16 model on a laptop).
        pool_dtype = torch.float32 if feature_map.device.type == "cpu" and dtype in _HALF else dtype
        pooled = roi_align(
            feature_map.to(pool_dtype),
            list(xyxy.to(pool_dtype)),
            output_size=self.roi_size,
            spatial_scale=1.0,
            aligned=True,
        )
        pooled = pooled.mean(dim=(-2, -1)).reshape(b, r, -1).to(dtype)
        return F.layer_norm(pooled, pooled.shape[-1:])
