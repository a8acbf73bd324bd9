"""The memory plan (``lightning_gpv.plan``): its arithmetic against counts taken independently from the model
on the meta device, its activation count against the tensors autograd saves on CPU, and its command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_gpv.models.vistallm.config import LLMConfig, LoraSettings
from lightning_gpv.models.vistallm.llm import apply_lora, build_llama
from lightning_gpv.plan import (
    ParamCounts,
    Setup,
    activation_bytes,
    config_for,
    llm_layer_bytes,
    main,
    meta_model,
    plan_preset,
    recipe_setup,
    state_bytes,
)

ROOT = Path(__file__).resolve().parents[1]


def _numel(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def test_tiny_stage1_states_by_hand() -> None:
    model = meta_model(config_for("tiny", "stage1"), stage=1)
    lm = model.llm.model
    counts = ParamCounts.of(model)
    assert counts.total == _numel(model)
    assert counts.trainable == _numel(model, trainable_only=True) == _numel(model) - _numel(model.vision)
    # The root unit holds what no layer or sub-model unit does: the LLM's embeddings, final norm and head.
    assert counts.root == _numel(lm.embed_tokens) + _numel(lm.norm) + _numel(model.llm.lm_head)
    assert counts.root == 2 * (1024 + 67) * 128 + 128  # 1024 words + 64 bins, <bsep>, <msep>, <image>
    # The largest unit is a decoder layer: q, k, v, o (128 x 128), gate, up, down (128 x 256), two norms.
    assert counts.largest_unit == _numel(lm.layers[0]) == 4 * 128 * 128 + 3 * 128 * 256 + 2 * 128
    assert counts.with_grad == counts.trainable  # stage 1 without LoRA mixes no unit
    states = state_bytes(counts, Setup(gpus=4))
    assert states["weights"] == 4 * counts.total / 4
    assert states["gradients"] == 4 * counts.trainable / 4
    assert states["optimizer"] == 2 * 4 * counts.trainable / 4
    gathered = 2 * (counts.root + 2 * counts.largest_unit)  # the root and two layers in flight, bf16
    assert states["buffers"] == gathered + 2 * counts.root + 6 * counts.largest_unit


def test_sharding_divides_by_gpus() -> None:
    counts = ParamCounts.of(meta_model(config_for("tiny", "stage1"), stage=1))
    two, eight = state_bytes(counts, Setup(gpus=2)), state_bytes(counts, Setup(gpus=8))
    for part in ("weights", "gradients", "optimizer"):
        assert two[part] == 4 * eight[part]
    # One GPU: FSDP falls back to NO_SHARD; grad_op shards the states but keeps every unit gathered.
    assert state_bytes(counts, Setup(gpus=1)) == state_bytes(counts, Setup(gpus=1, sharding="none"))
    assert state_bytes(counts, Setup(gpus=8, sharding="none"))["weights"] == 4 * counts.total
    grad_op = state_bytes(counts, Setup(gpus=8, sharding="grad_op"))
    assert grad_op["weights"] == eight["weights"] and grad_op["buffers"] > eight["buffers"]
    # Without FSDP in bf16 (benchmarks/vistallm_gpu.py): 2 bytes a weight, gradients only where trained.
    plain = state_bytes(counts, Setup(gpus=1, fsdp=False, precision="bf16-true"))
    assert plain == {"weights": 2 * counts.total, "gradients": 2 * counts.trainable,
                     "optimizer": 4 * counts.trainable, "buffers": 0.0}  # fmt: skip


def test_7b_stage2_trains_the_qformer_and_projection() -> None:
    model = meta_model(config_for("7b", "stage2"), stage=2)
    counts = ParamCounts.of(model)
    assert counts.trainable == _numel(model.tokenizer) == pytest.approx(0.189e9, rel=0.01)
    assert counts.with_grad == counts.trainable and counts.root_with_grad == 0  # the frozen root: no gradient
    plan = plan_preset("7b", "stage2", Setup(gpus=8))
    assert plan.gradients == 4 * counts.trainable / 8 and plan.fits


def test_lora_counts_every_trainable_parameter_and_the_mixed_root() -> None:
    model = meta_model(config_for("7b", "lora"), stage=1)
    counts = ParamCounts.of(model)
    assert counts.trainable == _numel(model, trainable_only=True)
    # The root mixes peft's added rows with the frozen embedding, head and norm: its whole gradient exists.
    frozen_root = 2 * (32000 + 1003) * 4096 + 4096
    assert counts.with_grad == counts.trainable + frozen_root
    assert counts.root_with_grad == frozen_root + 2 * 1003 * 4096


def _saved_bytes(llm: LLMConfig, kind: str, seq_len: int, batch: int) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in a bf16 forward of a random Llama."""
    model = build_llama(vocab_size=64, hidden_size=llm.hidden_size, intermediate_size=llm.intermediate_size,
                        num_layers=llm.num_layers, num_heads=llm.num_heads, num_kv_heads=llm.num_kv_heads,
                        max_position_embeddings=seq_len, rms_norm_eps=1e-6, rope_theta=1e4,
                        tie_word_embeddings=False)  # fmt: skip
    if kind == "lora":
        model = apply_lora(model, LoraSettings(), added_ids=[])
    model = model.to(torch.bfloat16).train()
    for name, param in model.named_parameters():
        param.requires_grad_(kind == "trained" or (kind == "lora" and "lora_" in name))
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    embeds = torch.randn(batch, seq_len, llm.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1)
    return sum(saved.values())


@pytest.mark.parametrize("kind", ["trained", "frozen", "lora"])
def test_llm_layer_bytes_match_the_tensors_autograd_saves(kind: str) -> None:
    # One decoder layer is the difference between a 2-layer and a 1-layer model; CPU dropout keeps a bf16
    # mask (CUDA a bool one), hence mask_bytes=2.
    torch.manual_seed(0)
    seq_len, batch = 128, 2
    one = LLMConfig(hidden_size=256, intermediate_size=688, num_layers=1, num_heads=4, num_kv_heads=4)
    two = LLMConfig(hidden_size=256, intermediate_size=688, num_layers=2, num_heads=4, num_kv_heads=4)
    measured = (_saved_bytes(two, kind, seq_len, batch) - _saved_bytes(one, kind, seq_len, batch)) / batch
    assert llm_layer_bytes(seq_len, two, kind, mask_bytes=2) == pytest.approx(measured, rel=0.02)


def test_checkpointing_keeps_one_input_per_layer() -> None:
    config = config_for("7b", "stage1")
    on = activation_bytes(config, 1, Setup(checkpointing=True, seq_len=1024))[1]
    off = activation_bytes(config, 1, Setup(checkpointing=False, seq_len=1024))[1]
    layers = 32 * 2 * 1024 * 4096  # bf16 input of each decoder layer
    assert layers < on < 1.2 * layers
    assert off == pytest.approx(32 * llm_layer_bytes(1024, config.llm, "trained"), rel=0.1)
    # batch scales the activations, not the batch-free parts (none without LoRA)
    total_1 = activation_bytes(config, 1, Setup(batch_size=1))[0]
    assert activation_bytes(config, 1, Setup(batch_size=4))[0] == pytest.approx(4 * total_1)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--gpus", "0"], "--gpus"),
        (["--batch-size", "x"], "--batch-size"),
        (["--gpu-memory", "0"], "--gpu-memory"),
        (["--reserve", "1.5"], "--reserve"),
        (["--sharding", "zero3"], "--sharding"),
        (["--preset", "tiny", "--llm-layers", "0"], "--llm-layers"),
        (["-c", "missing.yaml"], "-c/--config"),
        (["-c", str(ROOT / "recipes/gpv1/coco_original.yaml")], "-c/--config"),
        (["--table", "--preset", "7b"], "--table"),
    ],
)
def test_argument_errors_name_the_argument(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err


def test_main_prints_a_plan_and_says_whether_it_fits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--preset", "tiny", "--gpus", "2", "--gpu-memory", "1"]) == 0
    out = capsys.readouterr().out
    assert "tiny stage1: 2 x 1 GiB, FSDP full, 2-way" in out and ": fits" in out
    assert main(["--preset", "7b", "--gpus", "1", "--gpu-memory", "24"]) == 1
    assert "does NOT fit" in capsys.readouterr().out


def test_recipes_give_model_stage_batch_and_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    config, stage, mode, fields = recipe_setup(ROOT / "recipes/vistallm/stage2_multi_image.yaml")
    assert (stage, mode, config.llm.hidden_size) == (2, "stage2", 4096)
    assert fields == {"sharding": "full", "checkpointing": True, "gpus": 8, "precision": "bf16-mixed",
                      "batch_size": 4}  # fmt: skip
    _, _, mode, fields = recipe_setup(ROOT / "recipes/tiny/vistallm_shapes.yaml")
    assert mode == "stage1" and fields["fsdp"] is False and fields["batch_size"] == 16
    assert main(["-c", str(ROOT / "recipes/vistallm/stage1_single_image.yaml"), "--gpu-memory", "40"]) == 0
    out = capsys.readouterr().out
    assert "(stage1): 8 x 40 GiB, FSDP full, 8-way, bf16-mixed, batch 4 x 1024 tokens" in out
    assert "note: 1024 tokens per sample assumed" in out and "CPU" not in out and "not planned" not in out


def test_a_cpu_recipe_says_what_the_plan_assumes(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = str(ROOT / "recipes/tiny/vistallm_shapes.yaml")
    assert main(["-c", recipe]) == 0
    out = capsys.readouterr().out
    assert "note: the recipe runs on the CPU (trainer.accelerator: cpu)" in out
    assert "note: the recipe sets no trainer.precision (32-true), not planned: bf16-mixed assumed" in out
    assert main(["-c", recipe, "--seq-len", "128", "--precision", "bf16-true", "--gpu-memory", "16"]) == 0
    assert "note:" not in capsys.readouterr().out


@pytest.mark.slow
def test_table_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--table"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 7b |", "| 13b |"))]
    assert len(rows) == 2 * 3 * 3
    assert any(row.startswith("| 7b | stage1 | 8 x 80 |") and "yes" in row for row in rows)
    assert all("no (" in row for row in rows if "1 x 24" in row)  # fp32 weights of 7B alone exceed 24 GiB
