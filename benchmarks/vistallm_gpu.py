"""GPU training throughput of the paper-sized VistaLLM: tokens/s, samples/s, MFU and peak memory.

The model is the 7B (or 13B) preset with random weights (same shapes and FLOPs as the pretrained one; no
download), in bf16, with gradient checkpointing, trained on synthetic batches shaped like stage-1 data:
one 224 px image (32 visual tokens), a ``--prompt-len`` token prompt around them and a ``--answer-len``
token answer (a 32-point mask is 66 tokens). Modes:

* ``full``: stage 1, the whole LLM, QFormer and projection train. Pure bf16 weights and AdamW states (one
  GPU cannot hold fp32 master weights of 7B: 16 bytes x 6.9B parameters); the paper shards with FSDP.
* ``lora``: stage 1 with LoRA (r=64 on q/k/v/o) plus the added tokens' embedding and head rows.
* ``stage2``: only the instruction-guided tokenizer trains.

MFU counts model FLOPs (no recomputation): frozen parts forward only (2 per multiply-add), trained weights
6 per multiply-add and token, and frozen LLM weights that gradients pass through 4. Public anchor:
LLaVA-1.5-7B full fine-tuning runs at about 2.3 samples/s per A100 (ZeRO-3, 8 GPUs, 2048 tokens max).

    python benchmarks/vistallm_gpu.py --mode full --batch-size 8
    python benchmarks/vistallm_gpu.py --mode lora --batch-size 16
    python benchmarks/vistallm_gpu.py --preset tiny --device cpu --steps 2   # smoke test
    python benchmarks/vistallm_gpu.py --preset 13b --mode full --llm-layers 20   # full width, fewer layers

``peak_memory_gib`` is the largest ``torch.cuda.max_memory_allocated`` of the timed steps (weights, gradients
and AdamW state included); ``lightning_gpv.plan`` predicts it (``--strategy plain --precision bf16-true``,
``benchmarks/gpu_check.py`` puts the two side by side).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence

import torch

from lightning_gpv.models.vistallm.config import LoraSettings, VistaLLMConfig
from lightning_gpv.models.vistallm.model import IGNORE_INDEX, VistaLLM

PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}
"""Dense bf16 tensor-core peaks (NVIDIA datasheets; SXM parts)."""


def build_config(
    preset: str, mode: str, checkpointing: bool, llm_layers: int | None = None
) -> VistaLLMConfig:
    """The preset with LoRA in ``lora`` mode, gradient checkpointing as asked and ``llm_layers`` decoder
    layers when given (full width: the per-layer cost and memory of the preset)."""
    cfg = {"7b": VistaLLMConfig.vistallm_7b, "13b": VistaLLMConfig.vistallm_13b, "tiny": VistaLLMConfig.tiny}[
        preset
    ]()
    lora = LoraSettings() if mode == "lora" else None
    layers = cfg.llm.num_layers if llm_layers is None else llm_layers
    llm = dataclasses.replace(cfg.llm, lora=lora, gradient_checkpointing=checkpointing, num_layers=layers)
    return dataclasses.replace(cfg, llm=llm)


def flops_per_sample(
    cfg: VistaLLMConfig, mode: str, seq_len: int, answer_len: int, instruction_len: int
) -> float:
    """Model FLOPs of one training sample (one image) with the multiply-add counts of each part."""
    v, q, lc = cfg.vision, cfg.qformer, cfg.llm
    tokens = v.num_tokens
    mlp = v.mlp_ratio * v.width
    eva_mac = (v.feature_index + 1) * tokens * (4 * v.width**2 + 2 * v.width * mlp + 2 * tokens * v.width)
    q_tokens = q.num_queries + instruction_len
    q_layer = 4 * q.hidden_size**2 + 2 * q.hidden_size * q.intermediate_size
    n_cross = -(-q.num_layers // q.cross_attention_frequency)
    q_mac = q.num_layers * q_tokens * q_layer
    q_mac += n_cross * (2 * tokens * v.width * q.hidden_size + q.num_queries * 2 * q.hidden_size**2)
    q_mac += q.num_queries * q.hidden_size * lc.hidden_size  # projection
    head_dim = lc.hidden_size // lc.num_heads
    llm_layer = (
        2 * lc.hidden_size**2
        + 2 * lc.hidden_size * lc.num_kv_heads * head_dim
        + 3 * lc.hidden_size * lc.intermediate_size
    )
    llm_mac = lc.num_layers * seq_len * (llm_layer + seq_len * lc.hidden_size)  # causal: half of 2 T d
    head_mac = answer_len * lc.hidden_size * (lc.vocab_size + 1003)
    llm_factor = {"full": 6, "lora": 4, "stage2": 4}[mode]
    return 2 * eva_mac + 6 * q_mac + llm_factor * (llm_mac + head_mac)


def synthetic_batch(
    cfg: VistaLLMConfig, model: VistaLLM, batch: int, prompt_len: int, answer_len: int, instruction_len: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Random ids shaped like a stage-1 batch: 40 prefix tokens, 32 image tokens, prompt, answer."""
    vocab = cfg.llm.vocab_size
    seq = prompt_len + answer_len
    ids = torch.randint(3, vocab, (batch, seq), device=device)
    ids[:, 40 : 40 + model.num_queries] = model.image_token_id
    labels = ids.clone()
    labels[:, :prompt_len] = IGNORE_INDEX
    side = cfg.vision.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 3, side, side, device=device, dtype=torch.bfloat16),
        "instruction_ids": torch.randint(
            1, min(cfg.qformer.vocab_size, 1000), (batch, instruction_len), device=device
        ),
        "instruction_mask": torch.ones(batch, instruction_len, dtype=torch.long, device=device),
        "image_counts": torch.ones(batch, dtype=torch.long, device=device),
        "labels": labels,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=["7b", "13b", "tiny"], default="7b")
    parser.add_argument("--mode", choices=["full", "lora", "stage2"], default="lora")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--prompt-len", type=int, default=160, help="prompt tokens, 32 visual tokens included"
    )
    parser.add_argument("--answer-len", type=int, default=66, help="answer tokens (a 32-point mask: 66)")
    parser.add_argument("--instruction-len", type=int, default=64, help="QFormer instruction tokens")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument(
        "--llm-layers", type=int, default=None, help="LLM decoder layers (default: the preset's)"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if args.llm_layers is not None and args.llm_layers < 1:
        parser.error(f"argument --llm-layers: must be at least 1, got {args.llm_layers}")

    device = torch.device(args.device)
    cfg = build_config(args.preset, args.mode, not args.no_checkpointing, args.llm_layers)
    torch.manual_seed(0)
    start = time.perf_counter()
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            model = VistaLLM.from_config(cfg, load_weights=False)
    finally:
        torch.set_default_dtype(default_dtype)
    model.set_stage(2 if args.mode == "stage2" else 1)
    model.train()
    build_s = time.perf_counter() - start
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0, fused=fused)
    batch = synthetic_batch(
        cfg, model, args.batch_size, args.prompt_len, args.answer_len, args.instruction_len, device
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> float:
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - start

    samples_s = args.batch_size * args.steps / elapsed
    seq = args.prompt_len + args.answer_len
    flops = flops_per_sample(cfg, args.mode, seq, args.answer_len, args.instruction_len)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    result = {
        "device": name,
        "preset": args.preset,
        "mode": args.mode,
        "batch_size": args.batch_size,
        "seq_len": seq,
        "gradient_checkpointing": not args.no_checkpointing,
        "llm_layers": cfg.llm.num_layers,
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trained": sum(p.numel() for p in params),
        "build_s": round(build_s, 1),
        "step_s": round(elapsed / args.steps, 4),
        "samples_per_s": round(samples_s, 2),
        "tokens_per_s": round(samples_s * seq, 1),
        "model_tflops_per_sample": round(flops / 1e12, 3),
        "mfu": round(flops * samples_s / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        "final_loss": round(loss, 3),
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
