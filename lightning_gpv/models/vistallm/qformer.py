"""The instruction-guided image tokenizer: transformers' ``InstructBlipQFormerModel`` with learned queries.

Each image is tokenized on its own, with its sample's instruction: the ``L`` learned queries and the
instruction tokens attend to each other, and the queries cross-attend to the image's encoder tokens
(after a LayerNorm, InstructBLIP's ``ln_vision``). The ``L`` query outputs are projected to the LLM width;
k images give ``k x L`` visual tokens.

Pretrained weights come from an InstructBLIP checkpoint (e.g. ``Salesforce/instructblip-vicuna-7b``) by
name or path: only the safetensors shards that hold the QFormer, the queries, the vision LayerNorm and
the projection are read (no 7B download).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

_PREFIXES = {
    "qformer.": "qformer.",
    "query_tokens": "query_tokens",
    "vision_model.post_layernorm.": "ln_vision.",
    "language_projection.": "projection.",
}
"""InstructBLIP checkpoint key prefix -> prefix in :class:`InstructionGuidedTokenizer`."""


class InstructionGuidedTokenizer(nn.Module):
    """QFormer with ``num_queries`` learned queries, conditioned on the instruction, and a projection.

    Args:
        vision_width: Width ``D_v`` of the image encoder tokens.
        llm_width: Width ``D`` of the LLM embeddings.
        num_queries: Learned queries ``L`` (visual tokens per image).
        hidden_size: QFormer width ``H``.
        num_layers: QFormer layers.
        num_heads: QFormer attention heads.
        intermediate_size: QFormer MLP width.
        vocab_size: QFormer word-embedding rows (the instruction tokenizer's vocabulary).
        max_position_embeddings: Longest instruction the QFormer embeds.
        cross_attention_frequency: Cross-attention to the image every this many layers.
        initializer_range: Std of the normal init of the QFormer weights and the queries.
    """

    def __init__(
        self,
        *,
        vision_width: int,
        llm_width: int,
        num_queries: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        vocab_size: int,
        max_position_embeddings: int,
        cross_attention_frequency: int,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        config = InstructBlipQFormerConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_position_embeddings,
            cross_attention_frequency=cross_attention_frequency,
            encoder_hidden_size=vision_width,
            initializer_range=initializer_range,
        )
        self.num_queries = num_queries
        self.ln_vision = nn.LayerNorm(vision_width, eps=1e-6)
        self.qformer = InstructBlipQFormerModel(config)
        self.query_tokens = nn.Parameter(torch.empty(1, num_queries, hidden_size))
        self.projection = nn.Linear(hidden_size, llm_width)
        if self.query_tokens.device.type != "meta":
            nn.init.normal_(self.query_tokens, std=initializer_range)

    def forward(
        self,
        image_features: torch.Tensor,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Tokenize images, one instruction per image.

        Args:
            image_features: ``(N, P, D_v)`` encoder tokens of ``N`` images.
            instruction_ids: ``(N, T)`` instruction token ids (of each image's sample).
            instruction_mask: ``(N, T)`` 1 on real instruction tokens, 0 on padding.

        Returns:
            ``(N, L, D)`` visual tokens in the LLM's embedding space.
        """
        n = image_features.shape[0]
        image_embeds = self.ln_vision(image_features)
        image_mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        queries = self.query_tokens.expand(n, -1, -1)
        query_mask = torch.ones(n, self.num_queries, dtype=instruction_mask.dtype, device=queries.device)
        out = self.qformer(
            input_ids=instruction_ids,
            attention_mask=torch.cat([query_mask, instruction_mask], dim=1),
            query_embeds=queries,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        )
        return self.projection(out.last_hidden_state[:, : self.num_queries])

    def load_instructblip(self, checkpoint: str | Path) -> list[str]:
        """Copy QFormer, queries, vision LayerNorm and projection from an InstructBLIP checkpoint.

        The projection (``language_projection``) is copied only when its shape matches this module's
        (same LLM width); otherwise it keeps its random init.

        Args:
            checkpoint: Hub name or local folder of an ``InstructBlipForConditionalGeneration`` checkpoint
                saved as safetensors (single file or sharded with an index).

        Returns:
            The keys of this module that kept their initial values.

        Raises:
            ValueError: The checkpoint holds no QFormer weights, or a QFormer shape disagrees.
        """
        state = _read_instructblip_state(checkpoint, tuple(_PREFIXES))
        own = self.state_dict()
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            src = next(p for p in _PREFIXES if key.startswith(p))
            name = _PREFIXES[src] + key[len(src) :]
            if name.startswith("projection.") and own[name].shape != value.shape:
                continue
            if name not in own or own[name].shape != value.shape:
                raise ValueError(f"InstructBLIP key {key} {tuple(value.shape)} does not fit {name}")
            renamed[name] = value
        if not any(k.startswith("qformer.") for k in renamed):
            raise ValueError(f"no QFormer weights found in InstructBLIP checkpoint {checkpoint}")
        missing, _ = self.load_state_dict(renamed, strict=False)
        return list(missing)


def _resolve_files(checkpoint: str | Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Local safetensors files holding keys that start (after an optional ``model.``) with ``prefixes``."""
    local = Path(checkpoint)
    index_name, single_name = "model.safetensors.index.json", "model.safetensors"

    def fetch(name: str) -> Path | None:
        if local.is_dir():
            return local / name if (local / name).is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(hf_hub_download(str(checkpoint), name))
        except EntryNotFoundError:
            return None

    index = fetch(index_name)
    if index is None:
        single = fetch(single_name)
        if single is None:
            raise FileNotFoundError(f"{checkpoint}: neither {index_name} nor {single_name} found")
        return [single]
    weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    shards = sorted({f for k, f in weight_map.items() if k.removeprefix("model.").startswith(prefixes)})
    files = [fetch(s) for s in shards]
    return [f for f in files if f is not None]


def _read_instructblip_state(checkpoint: str | Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of an InstructBLIP checkpoint whose keys start with ``prefixes`` (``model.`` dropped)."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in _resolve_files(checkpoint, prefixes):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                short = key.removeprefix("model.")
                if short.startswith(prefixes):
                    state[short] = f.get_tensor(key)
    return state
