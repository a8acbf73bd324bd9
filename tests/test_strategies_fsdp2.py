"""FSDP2 presets: construction, mixed precision, LightningCLI YAML, the groups on the tiny models, sharding in
one process, and two-process CPU (gloo) fits with checkpoints and the losses of the FSDP1 preset / DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from torch import nn

from lightning_gpv.fsdp2 import plan_groups, shard_module
from lightning_gpv.fsdp_units import LayerWrapPolicy, describe_units
from lightning_gpv.models.gpv1.build import FSDP_LAYER_CLASSES as GPV1_LAYER_CLASSES
from lightning_gpv.models.vistallm.build import FSDP_LAYER_CLASSES as VISTALLM_LAYER_CLASSES
from lightning_gpv.models.vistallm.vision import EvaFeatures
from lightning_gpv.strategies_fsdp2 import (
    GPV1FSDP2Strategy,
    GPVFSDP2Strategy,
    VistaLLMFSDP2Strategy,
    _BatchCastingHalfPrecision,
)

REPO = Path(__file__).resolve().parents[1]


class _Holder(nn.Module):
    """Stands for a LightningModule: the model is its child, the root group."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


def _vistallm(stage: int = 1) -> nn.Module:
    from lightning_gpv.models.vistallm.config import VistaLLMConfig
    from lightning_gpv.models.vistallm.model import VistaLLM

    torch.manual_seed(0)
    model = VistaLLM.from_config(VistaLLMConfig.tiny(), load_weights=False)
    model.set_stage(stage)
    return model


def _gpv1() -> nn.Module:
    from lightning_gpv.models.gpv1.config import GPV1Config
    from lightning_gpv.models.gpv1.model import GPV1

    torch.manual_seed(0)
    return GPV1(GPV1Config.tiny()).eval()


def _check_groups(holder: _Holder, policy: LayerWrapPolicy) -> tuple[list[str], dict[str, Any]]:
    """The FSDP2 groups of ``holder``: the FSDP1 units of its model (same policy), descendants first.
    Returns the unit names (in the model) and the FSDP1 description of every group by that name."""
    units, roots = plan_groups(holder, policy)
    assert [name for name, _ in roots] == ["model"]
    names = [name.removeprefix("model.") for name, _ in units]
    for i, earlier in enumerate(names):  # bottom-up: no group comes after one of its descendants
        assert not any(later.startswith(f"{earlier}.") for later in names[i + 1 :]), earlier
    described = {unit.name: unit for unit in describe_units(holder.model, policy)}
    assert set(described) == {*names, ""}  # "" is the root group
    return names, described


# ----------------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize("cls", [VistaLLMFSDP2Strategy, GPV1FSDP2Strategy])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "activation_checkpointing": False,
            "reshard_after_forward": False,
            "save_distributed_checkpoint": True,
        },
        {"shard_size": 8, "param_dtype": "fp32", "reduce_dtype": "bf16", "cpu_offload": True},
    ],
)
def test_presets_build(cls: type[GPVFSDP2Strategy], kwargs: dict) -> None:
    strategy = cls(**kwargs)
    vistallm = cls is VistaLLMFSDP2Strategy
    assert strategy.wrap_policy.layer_classes == (VISTALLM_LAYER_CLASSES if vistallm else GPV1_LAYER_CLASSES)
    assert (strategy.checkpoint_policy is not None) is kwargs.get("activation_checkpointing", vistallm)
    assert strategy._save_distributed_checkpoint is kwargs.get("save_distributed_checkpoint", vistallm)
    assert strategy.forward_methods == (("generate",) if vistallm else ("encode", "generate"))
    assert strategy.reshard_after_forward is kwargs.get("reshard_after_forward", True)
    assert strategy.shard_size == kwargs.get("shard_size")
    assert (strategy.param_dtype, strategy.reduce_dtype) == (
        kwargs.get("param_dtype"),
        kwargs.get("reduce_dtype", "fp32"),
    )


@pytest.mark.parametrize(
    "kwargs", [{"param_dtype": "fp16"}, {"reduce_dtype": "fp16"}, {"shard_size": 0}, {"shard_size": "auto"}]
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VistaLLMFSDP2Strategy(**kwargs)


@pytest.mark.parametrize(
    ("precision", "kwargs", "expected"),
    [
        ("bf16-mixed", {}, (torch.bfloat16, torch.float32)),
        ("bf16-mixed", {"reduce_dtype": "bf16"}, (torch.bfloat16, torch.bfloat16)),
        ("bf16-mixed", {"param_dtype": "fp32"}, (None, None)),  # DDP under autocast
        ("bf16-true", {}, (None, torch.float32)),  # the weights are bf16 already
        ("32-true", {}, (None, None)),
    ],
)
def test_mixed_precision_policy(precision: str, kwargs: dict, expected: tuple) -> None:
    strategy = VistaLLMFSDP2Strategy(**kwargs)
    trainer = Trainer(strategy=strategy, accelerator="cpu", devices=1, precision=precision, logger=False)
    assert trainer.strategy is strategy
    policy = strategy.mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype) == expected
    assert policy.output_dtype is None and not policy.cast_forward_inputs  # autocast casts, not FSDP
    assert isinstance(strategy.precision_plugin, _BatchCastingHalfPrecision) is (precision == "bf16-true")


@pytest.mark.parametrize(("precision", "param_dtype"), [("32-true", "bf16"), ("bf16-true", "fp32")])
def test_gathering_in_another_dtype_needs_autocast(precision: str, param_dtype: str) -> None:
    with pytest.raises(ValueError, match="needs precision 'bf16-mixed'"):
        Trainer(strategy=VistaLLMFSDP2Strategy(param_dtype=param_dtype), accelerator="cpu", devices=1,
                precision=precision, logger=False)  # fmt: skip


def test_bf16_true_casts_the_real_batches() -> None:
    """The batches carry ``Mask``/``Target`` dataclasses, which Lightning's own conversion would deep-copy
    every step: only the floating-point tensors are cast."""
    import numpy as np

    from lightning_gpv.geometry import Mask
    from lightning_gpv.models.vistallm.build import build_vistallm
    from lightning_gpv.models.vistallm.config import VistaLLMConfig
    from lightning_gpv.tasks import Target, Task, TaskSample

    _, processor = build_vistallm(VistaLLMConfig.tiny(), load_weights=False)
    area = np.zeros((40, 50), dtype=bool)
    area[10:30, 5:25] = True
    sample = TaskSample(Task.RES, [np.zeros((40, 50, 3), dtype=np.uint8)],
                        Target(masks=[Mask.from_array(area)]), expression="the square")  # fmt: skip
    batch = processor.collate([processor.encode(sample, train=True)])
    plugin = Trainer(strategy=VistaLLMFSDP2Strategy(), accelerator="cpu", devices=1, precision="bf16-true",
                     logger=False).strategy.precision_plugin  # fmt: skip
    converted = plugin.convert_input(batch)
    assert converted.pixel_values.dtype == torch.bfloat16 and converted.input_ids.dtype == torch.long
    assert converted.targets is batch.targets


@pytest.mark.parametrize("cls", [VistaLLMFSDP2Strategy, GPV1FSDP2Strategy])
def test_lightning_cli_yaml(tmp_path: Path, cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-gpv"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""\
            trainer:
              accelerator: cpu
              devices: 1
              precision: bf16-mixed
              logger: false
              strategy:
                class_path: lightning_gpv.strategies_fsdp2.{cls.__name__}
                init_args:
                  shard_size: 8
                  activation_checkpointing: true
                  reshard_after_forward: false
                  param_dtype: bf16
                  reduce_dtype: bf16
                  save_distributed_checkpoint: false
                  unit_classes: [lightning_gpv.models.vistallm.vision.EvaFeatures]
            """
        )
    )
    cli = LightningCLI(BoringModel, BoringDataModule, run=False, args=["-c", str(recipe)])
    strategy = cli.trainer.strategy
    assert type(strategy) is cls
    assert (strategy.shard_size, strategy.reshard_after_forward, strategy.reduce_dtype) == (8, False, "bf16")
    assert strategy.checkpoint_policy is not None and not strategy._save_distributed_checkpoint
    assert strategy.wrap_policy.unit_classes == (EvaFeatures,)  # the import path became the class
    assert strategy.mixed_precision_policy.reduce_dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------
# Groups


@pytest.mark.parametrize("stage", [1, 2])
def test_vistallm_groups_separate_frozen_and_trainable(stage: int) -> None:
    holder = _Holder(_vistallm(stage))
    names, described = _check_groups(holder, VistaLLMFSDP2Strategy().wrap_policy)
    kinds = [described[name].class_name for name in names]
    assert sorted(kinds) == sorted(
        ["EvaFeatures", "InstructionGuidedTokenizer", *["EvaBlock"] * 2, *["InstructBlipQFormerLayer"] * 2,
         *["LlamaDecoderLayer"] * 2]
    )  # fmt: skip
    assert not any(unit.mixed for unit in described.values())
    assert described["vision"].trainable_numel == 0 and described["tokenizer"].frozen_numel == 0
    layers = [described[n] for n in names if described[n].class_name == "LlamaDecoderLayer"]
    assert all((unit.frozen_numel == 0) is (stage == 1) for unit in layers)
    assert (described[""].trainable_numel > 0) is (stage == 1)  # LLM embeddings, final norm, head


def test_gpv1_groups() -> None:
    holder = _Holder(_gpv1())
    policy = GPV1FSDP2Strategy().wrap_policy
    names, described = _check_groups(holder, policy)
    assert not any(unit.mixed for unit in described.values())
    kinds = {described[name].class_name for name in names}
    assert {"BertModel", "BertLayer", "ResNetEmbeddings", "DetrEncoderLayer", "DetrDecoderLayer",
            "CoAttentionLayer", "TransformerDecoderLayer"} <= kinds  # fmt: skip
    assert described["query_encoder.bert"].trainable_numel == 0  # the frozen BERT is a group of its own


def test_lora_adapters_are_groups() -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4)  # fmt: skip
    llm = LlamaForCausalLM(config)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    names, described = _check_groups(_Holder(get_peft_model(llm, lora)), VistaLLMFSDP2Strategy().wrap_policy)
    adapters = [name for name in names if name.endswith(("lora_A.default", "lora_B.default"))]
    assert len(adapters) == 8 and all(described[name].frozen_numel == 0 for name in adapters)
    layers = [name for name in names if described[name].class_name == "LlamaDecoderLayer"]
    assert len(layers) == 2 and all(described[name].trainable_numel == 0 for name in layers)
    # An adapter comes before its layer: fully_shard takes what nested groups have not taken.
    assert all(names.index(a) < names.index(next(x for x in layers if a.startswith(x))) for a in adapters)


def test_parameters_outside_the_children_are_refused() -> None:
    holder = _Holder(nn.Linear(2, 2))
    holder.scale = nn.Parameter(torch.ones(()))
    with pytest.raises(ValueError, match="not sharded: \\['scale'\\]"):
        plan_groups(holder, LayerWrapPolicy([nn.Linear]))


# ----------------------------------------------------------------------------------------------------
# Sharding in one process (gloo)


@pytest.fixture
def one_rank(tmp_path: Path) -> Any:
    """A one-process gloo group and its 1-D CPU mesh."""
    from torch.distributed.device_mesh import init_device_mesh

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1
    )
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        torch.distributed.destroy_process_group()


def test_shard_module_keeps_names_and_outputs(one_rank: Any) -> None:
    """GPV-1's ``forward`` calls ``encode``, itself a method that gathers the root's parameters: the inner
    call runs as part of the pass. Names are unchanged (composable checkpointing), outputs too."""
    from torch.distributed.fsdp import FSDPModule

    holder = _Holder(_gpv1())
    before = {name: value.clone() for name, value in holder.state_dict().items()}
    inputs = dict(pixel_values=torch.randn(2, 3, 64, 64), input_ids=torch.randint(4, 100, (2, 7)),
                  attention_mask=torch.ones(2, 7, dtype=torch.long))  # fmt: skip
    answers = torch.randint(4, 30, (2, 4))
    with torch.no_grad():
        reference = holder.model(**inputs, answer_ids=answers).answer_logits
        tokens, _ = holder.model.generate(holder.model.encode(**inputs), max_len=3)
    strategy = GPV1FSDP2Strategy(activation_checkpointing=True)
    plan = shard_module(holder, strategy.wrap_policy, mesh=one_rank,
                        checkpoint_policy=strategy.checkpoint_policy,
                        forward_methods=strategy.forward_methods)  # fmt: skip
    assert sum(isinstance(m, FSDPModule) for m in holder.modules()) == len(plan.groups) == len(plan.units) + 1
    assert plan.roots == ("model",) and plan.forward_methods == ("model.encode", "model.generate")
    assert set(plan.checkpointed) == {f"model.{name}" for name, _ in holder.model.named_modules()
                                      if isinstance(_, GPV1_LAYER_CLASSES)}  # fmt: skip
    assert holder.state_dict().keys() == before.keys()
    logits = holder.model(**inputs, answer_ids=answers).answer_logits
    assert torch.allclose(logits, reference, atol=1e-5)
    logits.float().pow(2).mean().backward()  # through the checkpointed layers
    assert all(p.grad is not None for p in holder.model.answer_decoder.parameters() if p.requires_grad)
    with torch.no_grad():  # called from outside forward: each gathers the root's parameters itself
        again, _ = holder.model.generate(holder.model.encode(**inputs), max_len=3)
    assert torch.equal(again, tokens)


# ----------------------------------------------------------------------------------------------------
# Two processes (gloo on CPU): fits, checkpoints, losses


@pytest.fixture(scope="module", params=["vistallm", "gpv1"])
def two_process_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs ``tests/_fsdp2_fit.py`` as two processes for one family; its reports by rank."""
    family = request.param
    out = tmp_path_factory.mktemp(f"fsdp2_{family}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = REPO / "tests" / "_fsdp2_fit.py"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(rank), "2", str(out / "init"), str(out), family],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]  # fmt: skip
    outputs = []
    try:
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, text) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0 and f"rank {rank} ok" in text, text[-4000:]
    return {"family": family, "ranks": [json.loads((out / f"{r}.json").read_text()) for r in range(2)]}


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_fit_and_checkpoint(two_process_run: dict) -> None:
    """Both presets train with real sharding (bf16-mixed, clipping, activation checkpointing); ``generate``
    (and GPV-1's ``encode``) run outside ``forward``; a checkpoint (VistaLLM: a folder, read back into
    hybrid sharding; GPV-1: one file) restores the same weights into a module of other weights."""
    vistallm = two_process_run["family"] == "vistallm"
    for report in two_process_run["ranks"]:
        assert len(report["fsdp2"]) == 3 and report["restored"]
        assert report["checkpoint"] == ("folder" if vistallm else "file")
        assert report["groups"][-1] == "model" and len(report["groups"]) == (9 if vistallm else 13)
        assert len(report["checkpointed"]) == (6 if vistallm else 10)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_losses_match_the_reference(two_process_run: dict) -> None:
    """VistaLLM: the FSDP1 preset's losses (both gather bf16 weights). GPV-1 (FSDP1 cannot set up
    GPV1Module's optimizer, see the worker): DDP's, exactly with fp32 weights gathered, and within bf16
    rounding with the default bf16 gathering."""
    for report in two_process_run["ranks"]:
        reference, fsdp2 = report["reference"], report["fsdp2"]
        if two_process_run["family"] == "vistallm":
            assert fsdp2[0] == pytest.approx(reference[0], rel=1e-6)  # the same weights, the same batch
            assert fsdp2 == pytest.approx(reference, rel=1e-2)
        else:
            assert report["fsdp2_fp32_params"] == pytest.approx(reference, rel=1e-5)
            assert fsdp2 == pytest.approx(reference, rel=2e-2)
