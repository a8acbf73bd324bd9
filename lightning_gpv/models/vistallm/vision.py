"""The image encoder: a timm ``Eva`` trunk (EVA-CLIP through open_clip) or a transformers CLIP or SigLIP
vision tower, read at an intermediate block.

open_clip's ``EVA01-g-14`` vision tower is a ``TimmModel`` around timm's ``eva_giant_patch14_224``; this
module builds the same timm class with explicit dimensions (tiny ones for tests, the giant ones under
``torch.device("meta")`` to count parameters) and takes pretrained weights from open_clip when asked.
CLIP and SigLIP towers are transformers' ``CLIPVisionModel`` / ``SiglipVisionModel``, random from the same
dimensions or ``from_pretrained`` by hub name or local folder. Every encoder returns the tokens of the
block ``VisionConfig.feature_index`` chooses, before any norm: blocks after it, the final norm and the
heads are pruned, as they never influence the output. :func:`build_vision_encoder` builds either kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeAlias

import timm
import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.utils.hub import cached_file

from lightning_gpv.models import shipped
from lightning_gpv.models.vistallm.config import VisionConfig


def build_eva_trunk(
    *,
    timm_name: str,
    image_size: int,
    patch_size: int,
    width: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
) -> nn.Module:
    """A randomly initialised timm ``Eva`` trunk without classification head.

    Args:
        timm_name: timm architecture (``"eva_giant_patch14_224"``); the other arguments override it.
        image_size: Input side in pixels.
        patch_size: Patch side in pixels.
        width: Token width.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width over ``width``.
    """
    return timm.create_model(
        timm_name,
        pretrained=False,
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=width,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        num_classes=0,
    )


def sincos_position_table(grid: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings of a ``grid x grid`` patch grid, unit amplitude.

    A quarter of the channels each hold ``sin(x f)``, ``cos(x f)``, ``sin(y f)``, ``cos(y f)`` with
    frequencies ``f = 100^(-k / (width / 4))``; extra channels (``width`` not divisible by 4) are zero.

    Returns:
        ``(grid * grid, width)`` table, row-major over the grid (the order of timm's patch tokens).
    """
    quarter = width // 4
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    freq = 100.0 ** (-torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    x = xs.reshape(-1, 1).float() * freq
    y = ys.reshape(-1, 1).float() * freq
    table = torch.zeros(grid * grid, width)
    table[:, : 4 * quarter] = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    return table


@torch.no_grad()
def use_sincos_positions(trunk: nn.Module) -> None:
    """Replace a trunk's learned patch position embeddings by :func:`sincos_position_table`.

    Randomly initialised, frozen encoders (tiny configs) need it: timm's learned table starts at std 0.02,
    about 3% of the patch features, and a frozen encoder never makes it larger, so the QFormer gets almost
    no position signal to localise objects with. Prefix (CLS) positions are set to zero.
    """
    pos = trunk.pos_embed
    if pos is None:
        raise ValueError("the trunk has no absolute position embedding")
    grid_h, grid_w = trunk.patch_embed.grid_size
    if grid_h != grid_w:
        raise ValueError(f"sin-cos positions need a square patch grid, got {grid_h} x {grid_w}")
    prefix = pos.shape[1] - grid_h * grid_w
    pos.zero_()
    pos[0, prefix:] = sincos_position_table(grid_h, pos.shape[2]).to(pos.dtype)


def load_open_clip_trunk(model_name: str, pretrained: str) -> nn.Module:
    """The pretrained timm trunk of an open_clip timm-backed vision tower (downloads on first use).

    Args:
        model_name: open_clip model name, e.g. ``"EVA01-g-14"``.
        pretrained: open_clip pretrained tag, e.g. ``"laion400m_s11b_b41k"``.
    """
    import open_clip

    clip = open_clip.create_model(model_name, pretrained=pretrained)
    trunk = getattr(clip.visual, "trunk", None)
    if trunk is None:
        raise ValueError(f"open_clip model {model_name!r} has no timm trunk (not a timm-backed tower)")
    return trunk


class EvaFeatures(nn.Module):
    """Token features of one intermediate block of an ``Eva`` trunk.

    Args:
        trunk: A timm ``Eva`` model (see :func:`build_eva_trunk`, :func:`load_open_clip_trunk`).
        feature_index: 0-based block whose output is returned; later blocks are pruned.
        keep_prefix_tokens: Prepend the CLS token to the patch tokens.
    """

    def __init__(self, trunk: nn.Module, *, feature_index: int, keep_prefix_tokens: bool) -> None:
        super().__init__()
        depth = len(trunk.blocks)
        if not 0 <= feature_index < depth:
            raise ValueError(f"feature_index {feature_index} out of range for {depth} blocks")
        trunk.prune_intermediate_layers([feature_index], prune_norm=True, prune_head=True)
        self.trunk = trunk
        self.feature_index = feature_index
        self.keep_prefix_tokens = keep_prefix_tokens
        self.width = int(trunk.embed_dim)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (only matters when the trunk trains)."""
        self.trunk.set_grad_checkpointing(enable)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            pixel_values: ``(N, 3, S, S)`` normalised images.

        Returns:
            ``(N, P, D_v)`` tokens of block ``feature_index`` before any norm: ``P = (S / patch)^2``, plus 1
            with the CLS token first when ``keep_prefix_tokens``.
        """
        (out,) = self.trunk.forward_intermediates(
            pixel_values,
            indices=[self.feature_index],
            return_prefix_tokens=True,
            norm=False,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        patches, prefix = out
        return torch.cat([prefix, patches], dim=1) if self.keep_prefix_tokens else patches


# ----------------------------------------------------------------------------------------------------
# transformers towers: CLIP and SigLIP

TRANSFORMERS_TOWERS: dict[str, tuple[type[PreTrainedModel], type[PretrainedConfig]]] = {
    "clip": (CLIPVisionModel, CLIPVisionConfig),
    "siglip": (SiglipVisionModel, SiglipVisionConfig),
}
"""``VisionConfig.tower`` -> transformers vision model and config classes."""

_CHECKED_FIELDS: dict[str, str] = {
    "hidden_size": "width",
    "intermediate_size": "mlp_ratio",
    "num_hidden_layers": "depth",
    "num_attention_heads": "num_heads",
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_channels": "(3 channels)",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
}
"""Architecture fields (transformers name -> ``VisionConfig`` field) a pretrained tower must share with the
config's random build: a saved VistaLLM folder loads its weights into that random build, so any difference
would change the features."""


def transformers_tower_config(config: VisionConfig) -> PretrainedConfig:
    """The transformers config of a CLIP or SigLIP tower with ``config``'s dimensions (full depth).

    ``hidden_act`` and ``layer_norm_eps`` keep the transformers defaults of the tower when ``None``
    (CLIP: ``quick_gelu``, 1e-5, as OpenAI's models; SigLIP: ``gelu_pytorch_tanh``, 1e-6). SigLIP's
    attention-pooling head is left out (``vision_use_head=False``): it reads the last block.
    """
    if config.tower not in TRANSFORMERS_TOWERS:
        raise ValueError(f"tower {config.tower!r} is not one of {sorted(TRANSFORMERS_TOWERS)}")
    _, config_cls = TRANSFORMERS_TOWERS[config.tower]
    kwargs: dict[str, object] = {
        "hidden_size": config.width,
        "intermediate_size": round(config.width * config.mlp_ratio),
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
    }
    if config.hidden_act is not None:
        kwargs["hidden_act"] = config.hidden_act
    if config.layer_norm_eps is not None:
        kwargs["layer_norm_eps"] = config.layer_norm_eps
    if config.tower == "siglip":
        kwargs["vision_use_head"] = False
    return config_cls(**kwargs)


def build_transformers_tower(config: VisionConfig) -> PreTrainedModel:
    """A randomly initialised ``CLIPVisionModel`` or ``SiglipVisionModel`` with ``config``'s dimensions
    (works under ``torch.device("meta")``)."""
    model_cls, _ = TRANSFORMERS_TOWERS[config.tower]
    return model_cls(transformers_tower_config(config))


def load_transformers_tower(config: VisionConfig) -> PreTrainedModel:
    """The pretrained tower ``config.hf_name_or_path`` names (a hub name or a local folder, downloaded on
    first use), in fp32. A folder of the whole CLIP or SigLIP model works too (the text half is skipped).

    Raises:
        ValueError: The checkpoint misses weights of the tower, or its architecture differs from the
            config's (:data:`_CHECKED_FIELDS`; the message names the values to set).
    """
    if config.hf_name_or_path is None:
        raise ValueError("load_transformers_tower needs VisionConfig.hf_name_or_path")
    model_cls, _ = TRANSFORMERS_TOWERS[config.tower]
    tower, info = model_cls.from_pretrained(
        config.hf_name_or_path, dtype=torch.float32, output_loading_info=True
    )
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ValueError(f"{config.hf_name_or_path}: no weights for {missing[:5]} ({len(missing)} in all)")
    expected = transformers_tower_config(config)
    wrong = [
        f"{ours}: the tower has {name}={getattr(tower.config, name)!r}, the config builds "
        f"{getattr(expected, name)!r}"
        for name, ours in _CHECKED_FIELDS.items()
        if getattr(tower.config, name) != getattr(expected, name)
    ]
    if wrong:
        raise ValueError(f"{config.hf_name_or_path} does not match the VisionConfig ({'; '.join(wrong)})")
    _check_normalization(config)
    return tower


def read_image_normalization(name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(image_mean, image_std)`` of the image processor saved next to a tower
    (``preprocessor_config.json``), or ``None`` when there is none (or it cannot be reached)."""
    try:
        path = cached_file(
            name_or_path,
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        return None
    if path is None:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "image_mean" not in data or "image_std" not in data:
        return None
    return tuple(float(x) for x in data["image_mean"]), tuple(float(x) for x in data["image_std"])


def _check_normalization(config: VisionConfig) -> None:
    """Raise a ``ValueError`` when the config's mean/std differ from the tower's own image processor."""
    found = read_image_normalization(config.hf_name_or_path) if config.hf_name_or_path else None
    if found is None:
        return
    mean, std = found
    ours = (*config.mean, *config.std)
    theirs = (*mean, *std)
    if len(ours) != len(theirs) or any(abs(a - b) > 1e-4 for a, b in zip(ours, theirs, strict=True)):
        raise ValueError(
            f"VisionConfig mean={config.mean}, std={config.std} differ from the image processor of "
            f"{config.hf_name_or_path} (mean={mean}, std={std}); set them to the tower's"
        )


@torch.no_grad()
def use_sincos_positions_transformers(tower: PreTrainedModel) -> None:
    """:func:`use_sincos_positions` for a CLIP or SigLIP tower: the patch rows of
    ``embeddings.position_embedding`` get :func:`sincos_position_table`, the CLS row (CLIP) zero."""
    weight = tower.embeddings.position_embedding.weight
    grid = tower.config.image_size // tower.config.patch_size
    prefix = weight.shape[0] - grid * grid
    weight.zero_()
    weight[prefix:] = sincos_position_table(grid, weight.shape[1]).to(weight.dtype)


class TransformersVisionFeatures(nn.Module):
    """Token features of one intermediate block of a transformers CLIP or SigLIP vision tower.

    The features are ``hidden_states[feature_index + 1]`` of the tower called with
    ``output_hidden_states=True`` (``hidden_states[0]`` is the embedding output, after CLIP's
    ``pre_layrnorm``; ``hidden_states[i + 1]`` is the output of block ``i``), so ``feature_index = depth - 2``
    is ``hidden_states[-2]`` of the whole tower: the penultimate block, as for EVA. The blocks after it,
    ``post_layernorm`` and SigLIP's pooling head are pruned: they never influence the output.

    Args:
        tower: A ``CLIPVisionModel`` or ``SiglipVisionModel`` (see :func:`build_transformers_tower`,
            :func:`load_transformers_tower`); it is pruned in place.
        feature_index: 0-based block whose output is returned.
        keep_prefix_tokens: Keep CLIP's CLS token in front of the patch tokens (SigLIP has none).
    """

    def __init__(self, tower: PreTrainedModel, *, feature_index: int, keep_prefix_tokens: bool) -> None:
        super().__init__()
        layers = tower.encoder.layers
        depth = len(layers)
        if not 0 <= feature_index < depth:
            raise ValueError(f"feature_index {feature_index} out of range for {depth} blocks")
        del layers[feature_index + 1 :]
        tower.config.num_hidden_layers = feature_index + 1
        tower.post_layernorm = nn.Identity()  # CLIP: normalises the pooled CLS only; SigLIP: the last block
        if getattr(tower, "use_head", False):
            del tower.head
            tower.use_head = False
        self.tower = tower
        self.feature_index = feature_index
        self.keep_prefix_tokens = keep_prefix_tokens
        self.num_prefix_tokens = int(getattr(tower.embeddings, "class_embedding", None) is not None)
        self.width = int(tower.config.hidden_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (only matters when the tower trains)."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.tower, "activation_checkpointing_enable"):  # newer transformers' name
            if enable:
                self.tower.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.tower.activation_checkpointing_disable()
        elif enable:
            self.tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            self.tower.gradient_checkpointing_disable()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            pixel_values: ``(N, 3, S, S)`` normalised images.

        Returns:
            ``(N, P, D_v)`` tokens of block ``feature_index`` before any norm: ``P = (S / patch)^2``, plus 1
            with CLIP's CLS token first when ``keep_prefix_tokens``.
        """
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True)
        features = out.hidden_states[-1]  # the pruned tower's last block is block feature_index
        if self.num_prefix_tokens and not self.keep_prefix_tokens:
            features = features[:, self.num_prefix_tokens :]
        return features


VisionEncoder: TypeAlias = EvaFeatures | TransformersVisionFeatures
"""What :func:`build_vision_encoder` returns: a module mapping ``(N, 3, S, S)`` images to ``(N, P, D_v)``
tokens, with ``width`` (``D_v``) and ``set_grad_checkpointing``."""


def build_vision_encoder(config: VisionConfig, *, load_weights: bool = True) -> VisionEncoder:
    """The image encoder ``config`` describes, read at ``config.feature_index``.

    ``tower="eva"``: the open_clip EVA trunk with pretrained weights when ``load_weights`` and
    ``open_clip_name``/``open_clip_pretrained`` name them, else a random timm ``Eva``. ``"clip"`` and
    ``"siglip"``: ``from_pretrained(hf_name_or_path)`` when ``load_weights`` and it is set, else a random
    tower from the dimensions. ``config.checkpoint`` (weights of the whole encoder) is loaded over a random
    build when ``load_weights``. A random encoder gets the ``"sincos"`` position table when asked (not on the
    meta device).

    Raises:
        ValueError: Pretrained weights do not match the configured dimensions (or normalisation).
    """
    if config.tower == "eva":
        if load_weights and config.open_clip_name and config.open_clip_pretrained:
            trunk = load_open_clip_trunk(config.open_clip_name, config.open_clip_pretrained)
            if int(trunk.embed_dim) != config.width or len(trunk.blocks) != config.depth:
                raise ValueError(f"{config.open_clip_name} does not match the configured width/depth")
        else:
            trunk = build_eva_trunk(
                timm_name=config.timm_name,
                image_size=config.image_size,
                patch_size=config.patch_size,
                width=config.width,
                depth=config.depth,
                num_heads=config.num_heads,
                mlp_ratio=config.mlp_ratio,
            )
            if config.position_embedding == "sincos" and trunk.pos_embed.device.type != "meta":
                use_sincos_positions(trunk)
        encoder: VisionEncoder = EvaFeatures(
            trunk, feature_index=config.feature_index, keep_prefix_tokens=config.keep_prefix_tokens
        )
    else:
        if load_weights and config.hf_name_or_path:
            tower = load_transformers_tower(config)
        else:
            tower = build_transformers_tower(config)
            weight = tower.embeddings.position_embedding.weight
            if config.position_embedding == "sincos" and weight.device.type != "meta":
                use_sincos_positions_transformers(tower)
        encoder = TransformersVisionFeatures(
            tower, feature_index=config.feature_index, keep_prefix_tokens=config.keep_prefix_tokens
        )
    on_meta = next(encoder.parameters()).device.type == "meta"
    if load_weights and config.checkpoint is not None and not on_meta:
        shipped.load_encoder(encoder, config.checkpoint)
    return encoder
