"""FSDP presets: construction, the wrap policy on tiny models, LightningCLI YAML, CPU (gloo) training."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from timm.models.eva import Eva, EvaBlock
from torch import nn
from torch.distributed.fsdp import ShardingStrategy
from torch.utils.data import DataLoader

from lightning_gpv.fsdp_units import LayerWrapPolicy, describe_units
from lightning_gpv.models.gpv1.build import FSDP_LAYER_CLASSES as GPV1_LAYER_CLASSES
from lightning_gpv.models.vistallm.build import FSDP_LAYER_CLASSES as VISTALLM_LAYER_CLASSES
from lightning_gpv.models.vistallm.vision import EvaFeatures
from lightning_gpv.strategies import (
    GPV1FSDPStrategy,
    GPVFSDPStrategy,
    VistaLLMFSDPStrategy,
    _NormClippingFSDPPrecision,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------
# Tiny models


def _tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config)


class _TinyVLM(nn.Module):
    """Library classes only: a frozen timm EVA, a trainable QFormer and a trainable Llama."""

    def __init__(self) -> None:
        super().__init__()
        import timm
        from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

        self.vision = timm.create_model(
            "eva_giant_patch14_224", pretrained=False, depth=2, embed_dim=48, num_heads=2, img_size=28,
            num_classes=0,
        )  # fmt: skip
        self.vision.requires_grad_(False)
        qformer = InstructBlipQFormerConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            encoder_hidden_size=48,
        )  # fmt: skip
        self.qformer = InstructBlipQFormerModel(qformer)
        self.llm = _tiny_llama()


def _layers(model: nn.Module, names: tuple[str, ...]) -> set[int]:
    return {id(m) for m in model.modules() if type(m).__name__ in names}


@pytest.fixture(scope="module")
def tiny_vlm() -> _TinyVLM:
    torch.manual_seed(0)
    return _TinyVLM()


# ----------------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize("cls", [VistaLLMFSDPStrategy, GPV1FSDPStrategy])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sharding_strategy": "SHARD_GRAD_OP", "activation_checkpointing": False, "state_dict_type": "full"},
        {"sharding_strategy": "HYBRID_SHARD", "cpu_offload": True, "limit_all_gathers": False},
        {"sharding_strategy": "NO_SHARD", "activation_checkpointing": True, "reduce_dtype": "bf16"},
    ],
)
def test_presets_build(cls: type[GPVFSDPStrategy], kwargs: dict) -> None:
    strategy = cls(**kwargs)
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.kwargs["auto_wrap_policy"] is strategy.wrap_policy
    assert strategy.kwargs["limit_all_gathers"] is kwargs.get("limit_all_gathers", True)
    assert strategy.sharding_strategy == ShardingStrategy[kwargs.get("sharding_strategy", "FULL_SHARD")]
    assert strategy.cpu_offload.offload_params is kwargs.get("cpu_offload", False)
    default_state = "sharded" if cls is VistaLLMFSDPStrategy else "full"
    assert strategy._state_dict_type == kwargs.get("state_dict_type", default_state)
    checkpointing = kwargs.get("activation_checkpointing", cls is VistaLLMFSDPStrategy)
    assert bool(strategy._activation_checkpointing_kwargs) is checkpointing
    if checkpointing:
        assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"] is strategy.checkpoint_policy
    expected = VISTALLM_LAYER_CLASSES if cls is VistaLLMFSDPStrategy else GPV1_LAYER_CLASSES
    assert strategy.wrap_policy.layer_classes == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"sharding_strategy": "ZERO3"}, {"state_dict_type": "local"}, {"reduce_dtype": "fp16"}],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VistaLLMFSDPStrategy(**kwargs)


@pytest.mark.parametrize(
    ("precision", "reduce_dtype", "expected"),
    [
        ("bf16-mixed", "fp32", (torch.bfloat16, torch.float32, None)),
        ("bf16-mixed", "bf16", (torch.bfloat16, torch.bfloat16, None)),
        ("bf16-true", "fp32", (torch.bfloat16, torch.float32, None)),
        ("32-true", "fp32", (torch.float32, torch.float32, torch.float32)),
    ],
)
def test_trainer_builds_on_cpu_with_bf16_policy(precision: str, reduce_dtype: str, expected: tuple) -> None:
    strategy = VistaLLMFSDPStrategy(reduce_dtype=reduce_dtype)
    trainer = Trainer(strategy=strategy, accelerator="cpu", devices=1, precision=precision, logger=False)
    assert trainer.strategy is strategy
    assert isinstance(strategy.precision_plugin, _NormClippingFSDPPrecision)
    assert strategy.precision_plugin.precision == precision
    config = strategy.mixed_precision_config
    assert (config.param_dtype, config.reduce_dtype, config.buffer_dtype) == expected


@pytest.mark.parametrize("cls", [VistaLLMFSDPStrategy, GPV1FSDPStrategy])
def test_lightning_cli_yaml(tmp_path: Path, cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-gpv"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""\
            trainer:
              accelerator: cpu
              devices: 1
              num_nodes: 1
              precision: bf16-mixed
              logger: false
              strategy:
                class_path: lightning_gpv.strategies.{cls.__name__}
                init_args:
                  sharding_strategy: HYBRID_SHARD
                  activation_checkpointing: true
                  state_dict_type: sharded
                  reduce_dtype: bf16
                  unit_classes: [lightning_gpv.models.vistallm.vision.EvaFeatures]
            """
        )
    )
    cli = LightningCLI(BoringModel, BoringDataModule, run=False, args=["-c", str(recipe)])
    strategy = cli.trainer.strategy
    assert type(strategy) is cls
    assert strategy.sharding_strategy == ShardingStrategy.HYBRID_SHARD
    assert strategy._state_dict_type == "sharded"
    assert strategy.reduce_dtype == "bf16"
    assert strategy.wrap_policy.unit_classes == (EvaFeatures,)  # the import path became the class
    assert strategy.mixed_precision_config.reduce_dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------
# Wrap policy


def test_policy_selects_exactly_the_layers(tiny_vlm: _TinyVLM) -> None:
    layers = _layers(tiny_vlm, ("EvaBlock", "InstructBlipQFormerLayer", "LlamaDecoderLayer"))
    assert len(layers) == 6
    policy = LayerWrapPolicy(VISTALLM_LAYER_CLASSES)
    assert {id(m) for m in policy.select(tiny_vlm)} == layers
    # FSDP's entry point (also what apply_activation_checkpointing calls) selects the same modules.
    targets = policy._run_policy(tiny_vlm, ignored_modules=set(), root_kwargs={"x": 1})
    assert {id(m) for m in targets} == layers
    assert all(kwargs == {"x": 1} for kwargs in targets.values())
    assert not policy._lambda_fn(tiny_vlm.llm.model.layers[0])  # no state left behind after the run
    # The LLM's layers come from its _no_split_modules even when not listed.
    no_llama = LayerWrapPolicy([EvaBlock])
    assert {id(m) for m in no_llama.select(tiny_vlm)} == _layers(tiny_vlm, ("EvaBlock", "LlamaDecoderLayer"))
    off = LayerWrapPolicy([EvaBlock], lm_no_split_modules=False)
    assert {id(m) for m in off.select(tiny_vlm)} == _layers(tiny_vlm, ("EvaBlock",))
    # The activation-checkpointing policy of the preset selects the layers only.
    strategy = VistaLLMFSDPStrategy()
    assert {id(m) for m in strategy.checkpoint_policy.select(tiny_vlm)} == layers


def test_policy_selects_classes_and_their_subclasses() -> None:
    class MyLayer(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(2, 2), MyLayer(2, 2), nn.ReLU())
    assert LayerWrapPolicy([MyLayer]).select(model) == [model[1]]
    assert LayerWrapPolicy([nn.Linear]).select(model) == [model[0], model[1]]
    assert LayerWrapPolicy([nn.ReLU]).select(model) == []  # modules without parameters are never units
    with pytest.raises(TypeError, match="take classes, got 'Linear'"):
        LayerWrapPolicy(["Linear"])  # type: ignore[list-item]


def test_frozen_remainder_needs_its_own_unit(tiny_vlm: _TinyVLM) -> None:
    plain = describe_units(tiny_vlm, LayerWrapPolicy(VISTALLM_LAYER_CLASSES))
    root = plain[0]
    assert root.name == "" and root.mixed  # EVA's patch/position embeddings sit next to trainable weights
    split = describe_units(tiny_vlm, LayerWrapPolicy(VISTALLM_LAYER_CLASSES, [Eva]))
    assert not any(unit.mixed for unit in split)
    by_name = {unit.name: unit for unit in split}
    assert by_name["vision"].trainable_numel == 0 and by_name["vision"].frozen_numel > 0
    total = sum(p.numel() for p in tiny_vlm.parameters())
    assert sum(u.frozen_numel + u.trainable_numel for u in split) == total


@pytest.mark.parametrize("stage", [1, 2])
def test_vistallm_preset_separates_frozen_and_trainable(stage: int) -> None:
    from lightning_gpv.models.vistallm.config import VistaLLMConfig
    from lightning_gpv.models.vistallm.model import VistaLLM

    model = VistaLLM.from_config(VistaLLMConfig.tiny(), load_weights=False)
    model.set_stage(stage)
    units = describe_units(model, VistaLLMFSDPStrategy().wrap_policy)
    assert not [unit for unit in units if unit.mixed]
    kinds = {unit.class_name for unit in units}
    assert {"EvaFeatures", "InstructionGuidedTokenizer", "EvaBlock", "InstructBlipQFormerLayer"} <= kinds
    assert "LlamaDecoderLayer" in kinds
    by_name = {unit.name: unit for unit in units}
    assert by_name["vision"].trainable_numel == 0
    assert by_name["tokenizer"].frozen_numel == 0
    assert (by_name[""].trainable_numel > 0) is (stage == 1)  # embeddings, final norm and head of the LLM


def test_lora_adapters_become_units() -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = LoraConfig(
        r=4,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["embed_tokens", "lm_head"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(_tiny_llama(), lora)
    policy = VistaLLMFSDPStrategy().wrap_policy
    units = describe_units(model, policy)
    # Only the root mixes: the frozen final norm next to the trained copies of the embeddings and head.
    assert [(unit.name, unit.frozen_numel) for unit in units if unit.mixed] == [("", 32)]
    names = [unit.name for unit in units]
    assert sum(name.endswith(("lora_A.default", "lora_B.default")) for name in names) == 8
    assert sum(name.endswith("original_module") for name in names) == 2
    layers = [unit for unit in units if unit.class_name == "LlamaDecoderLayer"]
    assert len(layers) == 2 and all(unit.trainable_numel == 0 for unit in layers)
    unsplit = LayerWrapPolicy(VISTALLM_LAYER_CLASSES, split_mixed_layers=False)
    assert any(unit.mixed for unit in describe_units(model, unsplit))


def test_gpv1_preset_units() -> None:
    from lightning_gpv.models.gpv1.config import GPV1Config
    from lightning_gpv.models.gpv1.model import GPV1

    model = GPV1(GPV1Config.tiny())
    policy = GPV1FSDPStrategy().wrap_policy
    units = describe_units(model, policy)
    assert not [unit for unit in units if unit.mixed]
    kinds = {unit.class_name for unit in units}
    expected = {
        "DetrEncoderLayer", "DetrDecoderLayer", "BertLayer", "BertModel", "CoAttentionLayer",
        "TransformerDecoderLayer", "ResNetBasicLayer", "ResNetEmbeddings",
    }  # fmt: skip
    assert expected <= kinds
    # Freezing DETR later (the first epochs) keeps every layer unit uniform.
    model.visual.set_detr_frozen(True)
    frozen = describe_units(model, policy)
    assert [unit.name for unit in frozen if unit.mixed] == [""]


# ----------------------------------------------------------------------------------------------------
# Training on CPU (gloo, one process; FSDP falls back to NO_SHARD)


class _TinyVistaSystem(LightningModule):
    def __init__(self, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        from lightning_gpv.models.vistallm.config import VistaLLMConfig
        from lightning_gpv.models.vistallm.model import VistaLLM

        torch.manual_seed(0)
        self.model = VistaLLM.from_config(VistaLLMConfig.tiny(), load_weights=False)
        self.model.set_stage(1)
        if gradient_checkpointing:
            self.model.llm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.model(**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=1e-3)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        length = self.model.num_queries
        ids = torch.cat(
            [
                torch.full((2, length), self.model.image_token_id),
                torch.randint(4, 500, (2, 6), generator=generator),
            ],
            1,
        )
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(2, 3, 64, 64, generator=generator),
            "instruction_ids": torch.randint(4, 500, (2, 5), generator=generator),
            "instruction_mask": torch.ones(2, 5, dtype=torch.long),
            "image_counts": torch.tensor([1, 1]),
            "labels": ids.masked_fill(ids == self.model.image_token_id, -100),
        }
        return DataLoader([batch, batch], batch_size=None)


@pytest.fixture
def clean_distributed():
    """Restore the environment and tear down the process group a 1-process fit leaves behind."""
    environ = dict(os.environ)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)


def _clean(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


def _fit(system: LightningModule, strategy: GPVFSDPStrategy, accelerator: str = "cpu", **kwargs) -> Trainer:
    quiet = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer = Trainer(strategy=strategy, accelerator=accelerator, devices=1, max_steps=2, **quiet, **kwargs)
    trainer.fit(system)
    return trainer


_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, _GPU])])
def test_fit_one_process(clean_distributed: None, tmp_path: Path, accelerator: str) -> None:
    """bf16-mixed, activation checkpointing, norm clipping and a sharded checkpoint on one device."""
    from lightning.fabric.utilities.load import _load_distributed_checkpoint
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp import FullyShardedDataParallel

    system = _TinyVistaSystem()
    frozen = {n: p.detach().clone() for n, p in system.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in system.named_parameters() if p.requires_grad}
    strategy = VistaLLMFSDPStrategy(state_dict_type="sharded")
    trainer = _fit(system, strategy, accelerator, precision="bf16-mixed", gradient_clip_val=1.0)
    assert trainer.global_step == 2
    wrapped = trainer.strategy.model
    assert isinstance(wrapped, FullyShardedDataParallel)
    units = [m for m in wrapped.modules() if isinstance(m, FullyShardedDataParallel)]
    # root, EvaFeatures, tokenizer, 2 EVA blocks, 2 QFormer layers, 2 Llama layers
    assert len(units) == 1 + 2 + 2 + 2 + 2
    assert sum(isinstance(m, CheckpointWrapper) for m in wrapped.modules()) == 6
    with FullyShardedDataParallel.summon_full_params(wrapped):
        params = {_clean(n): p.detach().cpu().clone() for n, p in system.named_parameters()}
    assert all(torch.equal(params[n], value) for n, value in frozen.items())
    assert any(not torch.equal(params[n], value) for n, value in trainable.items())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert system.model.llm.model.rotary_emb.inv_freq.dtype == torch.float32  # buffers are not cast

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").is_dir() and any((tmp_path / "last.ckpt").glob("*.distcp"))
    consolidated = _load_distributed_checkpoint(tmp_path / "last.ckpt")
    assert any(key.endswith("tokenizer.query_tokens") for key in consolidated["model"])


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_own_gradient_checkpointing_skips_fsdp_checkpointing(clean_distributed: None) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    system = _TinyVistaSystem(gradient_checkpointing=True)
    with pytest.warns(UserWarning, match="FSDP activation checkpointing is skipped"):
        trainer = _fit(system, VistaLLMFSDPStrategy(), precision="32-true")
    assert trainer.global_step == 2
    assert not any(isinstance(m, CheckpointWrapper) for m in trainer.strategy.model.modules())


# ----------------------------------------------------------------------------------------------------
# Two processes, FULL_SHARD (gloo on CPU)

_WORKER = r'''
import os, sys, torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.model import GPV1
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.strategies import GPV1FSDPStrategy, VistaLLMFSDPStrategy

rank, world, init = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)


class Root(nn.Module):
    """Calls the model inside the root forward, as Lightning's forward redirection does."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, method, *args, **kwargs):
        return getattr(self.model, method)(*args, **kwargs)


def shard(model, preset):
    root = FSDP(Root(model), auto_wrap_policy=preset.wrap_policy, device_id=torch.device("cpu"),
                use_orig_params=True, sharding_strategy=preset.sharding_strategy)
    apply_activation_checkpointing(root, checkpoint_wrapper_fn=checkpoint_wrapper,
                                   auto_wrap_policy=preset.checkpoint_policy)
    return root


torch.manual_seed(0)
vista = VistaLLM.from_config(VistaLLMConfig.tiny(), load_weights=False).eval()
vista.set_stage(1)
L = vista.num_queries
ids = torch.cat([torch.full((2, L), vista.image_token_id), torch.randint(4, 500, (2, 6))], 1)
batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(2, 3, 64, 64),
             instruction_ids=torch.randint(4, 500, (2, 5)),
             instruction_mask=torch.ones(2, 5, dtype=torch.long), image_counts=torch.tensor([1, 1]),
             labels=ids.masked_fill(ids == vista.image_token_id, -100))
reference = vista(**batch).loss.item()
preset = VistaLLMFSDPStrategy()
root = shard(vista, preset)
out = root("forward", **batch)
out.loss.backward()
assert abs(out.loss.item() - reference) < 1e-4, (out.loss.item(), reference)
preset.model = root
preset.parallel_devices = [torch.device("cpu")]
trainable = [p for p in root.parameters() if p.requires_grad]
subset_norm = preset.clip_grad_norm_(trainable, max_norm=1e9)
fsdp_norm = root.clip_grad_norm_(1e9)
assert torch.allclose(subset_norm, fsdp_norm, rtol=1e-4), (subset_norm, fsdp_norm)
with torch.no_grad():
    generated = root("generate", ids, torch.ones_like(ids), batch["pixel_values"], batch["instruction_ids"],
                     batch["instruction_mask"], batch["image_counts"], max_new_tokens=3, eos_token_id=-1,
                     pad_token_id=0)
assert generated.shape == (2, 3)

gpv1 = GPV1(GPV1Config.tiny()).eval()
inputs = dict(pixel_values=torch.randn(2, 3, 64, 64), input_ids=torch.randint(4, 100, (2, 7)),
              attention_mask=torch.ones(2, 7, dtype=torch.long), answer_ids=torch.randint(4, 30, (2, 4)))
reference = gpv1(**inputs).answer_logits
groot = shard(gpv1, GPV1FSDPStrategy(activation_checkpointing=True))
logits = groot("forward", **inputs).answer_logits
assert torch.allclose(logits, reference, atol=1e-4)
logits.float().pow(2).mean().backward()
dist.barrier()
print(f"rank {rank} ok", flush=True)
dist.destroy_process_group()
# Skip the interpreter's teardown: a gloo worker thread still being destroyed there can abort the process
# ("terminate called without an active exception") after everything above has passed.
os._exit(0)
'''


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_full_shard(tmp_path: Path, run_ranks: Callable[..., list[str]]) -> None:
    """With real sharding, every unit is only entered through its forward (else a sharded weight is hit)."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    run_ranks(script, 2, tmp_path / "init")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_precision_hands_the_real_batches_to_the_model(precision: str) -> None:
    """A VistaLLM batch carries Mask targets, which Lightning's own input conversion deep-copies every step;
    fp32 and mixed precision pass the batch as is, bf16-true casts only its floating-point tensors."""
    import numpy as np

    from lightning_gpv.geometry import Mask
    from lightning_gpv.models.vistallm.build import build_vistallm
    from lightning_gpv.models.vistallm.config import VistaLLMConfig
    from lightning_gpv.tasks import Target, Task, TaskSample

    _, processor = build_vistallm(VistaLLMConfig.tiny(), load_weights=False)
    area = np.zeros((40, 50), dtype=bool)
    area[10:30, 5:25] = True
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    sample = TaskSample(Task.RES, [image], Target(masks=[Mask.from_array(area)]), expression="the square")
    batch = processor.collate([processor.encode(sample, train=True)])
    from lightning.pytorch.plugins.precision.fsdp import FSDPPrecision

    copied = FSDPPrecision(precision).convert_input(batch)  # what the strategy would do without the override
    assert copied.targets[0].masks[0] is not batch.targets[0].masks[0]
    plugin = Trainer(strategy=VistaLLMFSDPStrategy(), accelerator="cpu", devices=1, precision=precision,
                     logger=False).strategy.precision_plugin  # fmt: skip
    converted = plugin.convert_input(batch)
    if precision == "bf16-true":
        assert converted.pixel_values.dtype == torch.bfloat16 and converted.input_ids.dtype == torch.long
        assert converted.targets is batch.targets  # the targets stay as they were
    else:
        assert converted is batch
