"""The causal language model: loading by name or path, added token rows, LoRA.

Any causal LM of transformers loads by hub name or local folder (GGUF files included); without weights a
Llama is built from explicit dimensions (random init, or parameter counting under ``torch.device("meta")``).
Added tokens get new embedding rows set to the mean of the existing rows, in the input embedding and,
when untied, in the output head (as Shikra/VistaLLM do).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from lightning_gpv.models.vistallm.config import LoraSettings


def build_llama(
    *,
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    max_position_embeddings: int,
    rms_norm_eps: float,
    rope_theta: float,
    tie_word_embeddings: bool,
    initializer_range: float = 0.02,
) -> LlamaForCausalLM:
    """A randomly initialised Llama (Vicuna-7B: 32000, 4096, 11008, 32, 32, 32, 2048, 1e-6, 1e4, False).

    ``initializer_range`` is the std of the normal init of the linear and embedding weights.
    """
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
    )
    return LlamaForCausalLM(config)


def load_causal_lm(
    name_or_path: str, *, gguf_file: str | None = None, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """Pretrained causal LM by hub name or folder; GGUF weights are dequantized to ``dtype``."""
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    if gguf_file and hasattr(model.config, "quantization_config"):
        # The GGUF tensors are dequantized on load; the marker only stops save_pretrained.
        delattr(model.config, "quantization_config")
        model.hf_quantizer = None
        model.is_quantized = False
    return model


@torch.no_grad()
def resize_with_mean(model: PreTrainedModel, new_size: int, new_ids: Sequence[int]) -> None:
    """Grow the vocabulary to ``new_size`` rows and set rows ``new_ids`` to the mean of all other rows.

    Args:
        model: A causal LM.
        new_size: Rows after resizing (never shrinks).
        new_ids: Ids of the added tokens; their input rows (and output rows, when untied) become the mean
            of the rows of the other tokens.
    """
    old_size = model.get_input_embeddings().weight.shape[0]
    if new_size > old_size:
        model.resize_token_embeddings(new_size, mean_resizing=False)
    new = torch.as_tensor(sorted(set(new_ids)), dtype=torch.long)
    if new.numel() == 0:
        return
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not matrices[0]:
        matrices.append(out.weight)
    for weight in matrices:
        keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
        keep[new.to(weight.device)] = False
        # Rows past the old vocabulary that are not added tokens (padding rows) stay out of the mean.
        keep[old_size:] = False
        mean = weight[keep].float().mean(0).to(weight.dtype) if weight.device.type != "meta" else None
        if mean is not None:
            weight[new.to(weight.device)] = mean


ADAPTER_PARTS = ("lora_", ".modules_to_save.", ".trainable_tokens_delta.")
"""Name parts of the parameters peft adds (adapters, full copies, added-token rows): what LoRA trains."""


def is_adapter_weight(name: str) -> bool:
    """Whether the LLM parameter (or state-dict key) ``name`` belongs to peft's adapters."""
    return any(part in name for part in ADAPTER_PARTS)


def apply_lora(model: PreTrainedModel, settings: LoraSettings, added_ids: Sequence[int]) -> PreTrainedModel:
    """Wrap the LLM in peft LoRA adapters.

    Args:
        model: A causal LM whose vocabulary already holds the added tokens.
        settings: Rank, targets, and what else trains: the rows ``added_ids`` of the input embedding and
            of an untied output head (``settings.train_added_tokens``; a tied head follows the embedding),
            and the ``modules_to_save`` in full.
        added_ids: Ids of the added tokens.

    Returns:
        A ``peft.PeftModel`` whose trainable parameters are the adapters, the added rows
        (``...token_adapter.trainable_tokens_delta.default``, ``(len(added_ids), D)``) and the
        ``modules_to_save`` copies.
    """
    from peft import LoraConfig, get_peft_model

    token_rows: dict[str, list[int]] = {}
    if settings.train_added_tokens and added_ids:
        names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
        embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
        matrices = [embedding] if head is None or head.weight is embedding.weight else [embedding, head]
        for module in matrices:
            if names[module] not in settings.modules_to_save:
                token_rows[names[module]] = sorted(set(added_ids))
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=list(settings.modules_to_save) or None,
        trainable_token_indices=token_rows or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
