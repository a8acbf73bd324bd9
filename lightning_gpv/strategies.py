"""FSDP strategy presets for GPV-1 and VistaLLM (bf16 mixed precision, 1 to N GPU nodes).

Recipes pick a preset by class path (see ``docs/distributed.md``)::

    trainer:
      precision: bf16-mixed
      strategy:
        class_path: lightning_gpv.strategies.VistaLLMFSDPStrategy
        init_args: {sharding_strategy: FULL_SHARD, activation_checkpointing: true}

The presets are :class:`~lightning.pytorch.strategies.FSDPStrategy` subclasses with plain typed arguments;
each fills ``auto_wrap_policy``, ``activation_checkpointing_policy``, ``use_orig_params=True`` and the
bf16 reduce/buffer dtypes itself.

The FSDP units and activation-checkpointing targets are chosen by
:class:`~lightning_gpv.fsdp_units.LayerWrapPolicy` (see :mod:`lightning_gpv.fsdp_units`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields, is_dataclass, replace
from datetime import timedelta
from typing import Any, Literal

import torch
from lightning.pytorch.plugins.precision.fsdp import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_gpv.fsdp_units import (
    _uses_own_checkpointing,
    describe_units,
    wrap_and_checkpoint_policies,
)
from lightning_gpv.models.gpv1 import build as gpv1_build
from lightning_gpv.models.vistallm import build as vistallm_build

ShardingName = Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"]


def cast_floating_tensors(data: Any, dtype: torch.dtype) -> Any:
    """``data`` with its floating-point tensors cast to ``dtype``: in mappings, lists, tuples and the
    (non-frozen) dataclass batches, rebuilt shallowly; anything else, frozen dataclasses included, as is."""
    if isinstance(data, torch.Tensor):
        return data.to(dtype) if data.is_floating_point() else data
    if isinstance(data, dict):
        return {key: cast_floating_tensors(value, dtype) for key, value in data.items()}
    if isinstance(data, (list, tuple)) and not hasattr(data, "_fields"):
        return type(data)(cast_floating_tensors(value, dtype) for value in data)
    if is_dataclass(data) and not isinstance(data, type) and not data.__dataclass_params__.frozen:
        changed = {
            f.name: cast_floating_tensors(getattr(data, f.name), dtype)
            for f in fields(data)
            if f.init and isinstance(getattr(data, f.name), torch.Tensor)
        }
        return replace(data, **changed) if changed else data
    return data


class _NormClippingFSDPPrecision(FSDPPrecision):
    """``FSDPPrecision`` whose norm clipping calls the root FSDP module's ``clip_grad_norm_``, with autocast
    on the strategy's device type."""

    def __init__(self, precision: Any, strategy: GPVFSDPStrategy, scaler: Any = None) -> None:
        super().__init__(precision)
        if scaler is not None:
            self.scaler = scaler
        self._strategy = strategy

    def forward_context(self) -> Any:
        """Autocast on the strategy's device type (Lightning's FSDP plugin always names ``"cuda"``)."""
        if "mixed" not in self.precision or self._strategy.parallel_devices is None:
            return super().forward_context()
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
        return torch.autocast(self._strategy.root_device.type, dtype=dtype)

    def convert_input(self, data: Any) -> Any:
        """The batch as the model takes it: unchanged under fp32 and mixed precision (autocast casts inside
        the forward), floating-point tensors cast to the parameter dtype under ``bf16-true``/``16-true``.

        Lightning's own conversion rebuilds every dataclass in the batch with ``apply_to_collection``: a deep
        copy per step of the ``Target`` and ``Mask`` objects of the batches, which the model never reads."""
        if self.precision in ("32-true", "64-true") or "mixed" in self.precision:
            return data
        return cast_floating_tensors(data, self._desired_input_dtype)

    def clip_grad_by_norm(self, optimizer: Any, clip_val: int | float) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        module = self._strategy.model
        if not isinstance(module, FullyShardedDataParallel):
            raise RuntimeError("gradient norm clipping under FSDP needs the model wrapped at its root")
        module.clip_grad_norm_(clip_val)


class GPVFSDPStrategy(FSDPStrategy):
    """FSDP with a :class:`LayerWrapPolicy`, ``use_orig_params=True`` and bf16-friendly mixed precision.

    Use :class:`VistaLLMFSDPStrategy` or :class:`GPV1FSDPStrategy`; this base takes the class lists
    explicitly. Precision comes from ``Trainer(precision=...)``; under ``bf16-mixed``/``bf16-true`` the
    parameters are gathered in bf16, gradients are reduced in ``reduce_dtype`` and buffers keep their own
    dtype (RoPE ``inv_freq`` stays fp32). Norm clipping (``gradient_clip_val``) goes through FSDP's
    ``clip_grad_norm_``, which Lightning's plain FSDP strategy refuses.

    Args:
        layer_classes: Transformer block classes (units and activation-checkpointing targets); a recipe
            names them by import path (``transformers.models.llama.modeling_llama.LlamaDecoderLayer``).
        unit_classes: Sub-model classes wrapped whole (only called through ``forward``).
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2), ``NO_SHARD`` (DDP) or
            ``HYBRID_SHARD`` (full sharding inside a node, replication across nodes).
        activation_checkpointing: Recompute the activations of every layer in the backward pass. Skipped
            with a warning when the model already uses transformers'/timm's own gradient checkpointing.
        cpu_offload: Keep the sharded parameters and gradients in CPU memory (slow; last resort).
        limit_all_gathers: Throttle all-gathers so at most two layers are unsharded at once.
        forward_prefetch: Issue the next layer's all-gather before the current forward computation.
        state_dict_type: ``"sharded"``: every rank writes its shard (a checkpoint folder, fast);
            ``"full"``: rank 0 gathers everything into one file (needs the full state in its CPU memory).
        reduce_dtype: Gradient reduction dtype under bf16 precision; ``"fp32"`` averages exactly, ``"bf16"``
            halves the gradient traffic.
        lm_no_split_modules: Also wrap the ``_no_split_modules`` classes of the model's causal LM.
        split_mixed_layers: Make LoRA adapters (and peft's frozen ``original_module`` copies) their own units.
        timeout_minutes: Timeout of collective operations (model loading on every rank happens before the
            first barrier).
    """

    def __init__(
        self,
        layer_classes: Sequence[type[nn.Module]],
        unit_classes: Sequence[type[nn.Module]] = (),
        sharding_strategy: ShardingName = "FULL_SHARD",
        activation_checkpointing: bool = True,
        cpu_offload: bool = False,
        limit_all_gathers: bool = True,
        forward_prefetch: bool = False,
        state_dict_type: Literal["full", "sharded"] = "sharded",
        reduce_dtype: Literal["fp32", "bf16"] = "fp32",
        lm_no_split_modules: bool = True,
        split_mixed_layers: bool = True,
        timeout_minutes: float = 30.0,
    ) -> None:
        if str(sharding_strategy).upper() not in ShardingName.__args__:
            raise ValueError(
                f"sharding_strategy must be one of {ShardingName.__args__}: {sharding_strategy!r}"
            )
        if state_dict_type not in ("full", "sharded"):
            raise ValueError(f"state_dict_type must be 'full' or 'sharded', got {state_dict_type!r}")
        if reduce_dtype not in ("fp32", "bf16"):
            raise ValueError(f"reduce_dtype must be 'fp32' or 'bf16', got {reduce_dtype!r}")
        self.wrap_policy, self.checkpoint_policy = wrap_and_checkpoint_policies(
            layer_classes,
            unit_classes,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
            activation_checkpointing=activation_checkpointing,
        )
        super().__init__(
            auto_wrap_policy=self.wrap_policy,
            activation_checkpointing_policy=self.checkpoint_policy,
            sharding_strategy=str(sharding_strategy).upper(),
            cpu_offload=cpu_offload,
            state_dict_type=state_dict_type,
            timeout=timedelta(minutes=timeout_minutes),
            use_orig_params=True,
            limit_all_gathers=limit_all_gathers,
            forward_prefetch=forward_prefetch,
        )
        self.reduce_dtype = reduce_dtype

    # ------------------------------------------------------------------------------------------------
    # Precision

    @property
    def mixed_precision_config(self) -> Any:
        """FSDP ``MixedPrecision``: Lightning's for the Trainer precision, with the bf16 adjustments."""
        config = super().mixed_precision_config
        if self.mixed_precision is not None or config is None or config.param_dtype != torch.bfloat16:
            return config
        reduce = torch.float32 if self.reduce_dtype == "fp32" else torch.bfloat16
        return replace(config, reduce_dtype=reduce, buffer_dtype=None)

    @property
    def precision_plugin(self) -> FSDPPrecision:
        plugin = self._precision_plugin
        if plugin is None:
            plugin = self._precision_plugin = _NormClippingFSDPPrecision("32-true", self)
        return plugin

    @precision_plugin.setter
    def precision_plugin(self, precision_plugin: Any) -> None:
        if type(precision_plugin) is FSDPPrecision:
            precision_plugin = _NormClippingFSDPPrecision(
                precision_plugin.precision, self, scaler=precision_plugin.scaler
            )
        FSDPStrategy.precision_plugin.fset(self, precision_plugin)

    # ------------------------------------------------------------------------------------------------
    # Wrapping

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self._activation_checkpointing_kwargs and _uses_own_checkpointing(model):
            rank_zero_warn(
                "The model already uses transformers'/timm's gradient checkpointing; FSDP activation "
                "checkpointing is skipped. Use one of the two (the preset's is the FSDP-aware one)."
            )
            self._activation_checkpointing_kwargs = {}
        already_wrapped = any(isinstance(module, FullyShardedDataParallel) for module in model.modules())
        if not already_wrapped:
            self._report_units(model)
        if self.root_device.type != "cpu" or already_wrapped:
            return super()._setup_model(model)
        # FSDP only finds a CPU compute device when told explicitly (Lightning passes the CUDA index).
        from lightning.fabric.strategies.fsdp import (
            _move_torchmetrics_to_device,
            _setup_activation_checkpointing,
        )

        model = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        )
        _move_torchmetrics_to_device(model, self.root_device)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def _report_units(self, model: nn.Module) -> None:
        units = describe_units(model, self.wrap_policy)
        rank_zero_info(f"{type(self).__name__}: {len(units)} FSDP units")
        mixed = [unit for unit in units if unit.mixed]
        if mixed:
            listing = ", ".join(
                f"{unit.name or '<root>'} ({unit.frozen_numel:,} frozen / {unit.trainable_numel:,} trainable)"
                for unit in mixed
            )
            rank_zero_warn(
                f"FSDP units mixing frozen and trainable parameters (gradient memory is spent on the frozen "
                f"ones): {listing}. Add the enclosing module's class to `unit_classes` to split them."
            )

    # ------------------------------------------------------------------------------------------------
    # Gradient clipping of a parameter subset

    @torch.no_grad()
    def clip_grad_norm_(
        self, parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0
    ) -> torch.Tensor:
        """Clip the gradients of a subset of the (original, sharded) parameters by their global norm.

        ``torch.nn.utils.clip_grad_norm_`` on sharded gradients only sees this rank's shards; this sums the
        shards over the sharding group first. Call it on every rank (it is a collective).

        Args:
            parameters: Parameters of the wrapped model (e.g. the visual ones of GPV-1).
            max_norm: Largest allowed norm.
            norm_type: p of the p-norm (``inf`` allowed).

        Returns:
            The total norm before clipping (a scalar tensor).
        """
        import torch.distributed as dist
        from torch.distributed.fsdp import ShardingStrategy

        grads = [p.grad for p in parameters if p.grad is not None]
        device = self.root_device
        norm_type = float(norm_type)
        if norm_type == float("inf"):
            total = torch.zeros((), device=device)
            for grad in grads:
                if grad.numel():
                    total = torch.maximum(total, grad.detach().abs().max().float().to(device))
            op = dist.ReduceOp.MAX
        else:
            total = torch.zeros((), device=device)
            for grad in grads:
                total += grad.detach().float().norm(norm_type).to(device) ** norm_type
            op = dist.ReduceOp.SUM
        sharded = self.sharding_strategy != ShardingStrategy.NO_SHARD
        if sharded and dist.is_available() and dist.is_initialized():
            dist.all_reduce(total, op=op, group=getattr(self.model, "process_group", None))
        if norm_type != float("inf"):
            total = total ** (1.0 / norm_type)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for grad in grads:
            grad.mul_(coef.to(grad.device, grad.dtype))
        return total


class VistaLLMFSDPStrategy(GPVFSDPStrategy):
    """FSDP preset for VistaLLM: EVA blocks, QFormer layers and LLM decoder layers are units.

    The frozen EVA encoder and the trainable instruction-guided tokenizer are units of their own, so
    stage 1 (frozen EVA, trained tokenizer and LLM) and stage 2 (only the tokenizer trains) give no
    mixed units without LoRA. Arguments: see :class:`GPVFSDPStrategy`.
    """

    def __init__(
        self,
        sharding_strategy: ShardingName = "FULL_SHARD",
        activation_checkpointing: bool = True,
        cpu_offload: bool = False,
        limit_all_gathers: bool = True,
        forward_prefetch: bool = False,
        state_dict_type: Literal["full", "sharded"] = "sharded",
        reduce_dtype: Literal["fp32", "bf16"] = "fp32",
        layer_classes: Sequence[type[nn.Module]] = vistallm_build.FSDP_LAYER_CLASSES,
        unit_classes: Sequence[type[nn.Module]] = vistallm_build.FSDP_UNIT_CLASSES,
        lm_no_split_modules: bool = True,
        split_mixed_layers: bool = True,
        timeout_minutes: float = 30.0,
    ) -> None:
        super().__init__(
            layer_classes=layer_classes,
            unit_classes=unit_classes,
            sharding_strategy=sharding_strategy,
            activation_checkpointing=activation_checkpointing,
            cpu_offload=cpu_offload,
            limit_all_gathers=limit_all_gathers,
            forward_prefetch=forward_prefetch,
            state_dict_type=state_dict_type,
            reduce_dtype=reduce_dtype,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
            timeout_minutes=timeout_minutes,
        )


class GPV1FSDPStrategy(GPVFSDPStrategy):
    """FSDP preset for GPV-1: DETR, BERT, ResNet, co-attention and answer-decoder layers are units.

    GPV-1 (about 200M parameters) fits every GPU with DDP, which stays the default; this preset is for
    larger batches or backbones. The frozen BERT and the frozen ResNet stem are units of their own. DETR
    is frozen and unfrozen during training (``frozen_epochs``): its layers are separate units, so the
    change never mixes frozen and trainable parameters in one unit. Arguments: see
    :class:`GPVFSDPStrategy` (activation checkpointing is off by default, a full state dict on).
    """

    def __init__(
        self,
        sharding_strategy: ShardingName = "FULL_SHARD",
        activation_checkpointing: bool = False,
        cpu_offload: bool = False,
        limit_all_gathers: bool = True,
        forward_prefetch: bool = False,
        state_dict_type: Literal["full", "sharded"] = "full",
        reduce_dtype: Literal["fp32", "bf16"] = "fp32",
        layer_classes: Sequence[type[nn.Module]] = gpv1_build.FSDP_LAYER_CLASSES,
        unit_classes: Sequence[type[nn.Module]] = gpv1_build.FSDP_UNIT_CLASSES,
        lm_no_split_modules: bool = False,
        split_mixed_layers: bool = True,
        timeout_minutes: float = 30.0,
    ) -> None:
        super().__init__(
            layer_classes=layer_classes,
            unit_classes=unit_classes,
            sharding_strategy=sharding_strategy,
            activation_checkpointing=activation_checkpointing,
            cpu_offload=cpu_offload,
            limit_all_gathers=limit_all_gathers,
            forward_prefetch=forward_prefetch,
            state_dict_type=state_dict_type,
            reduce_dtype=reduce_dtype,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
            timeout_minutes=timeout_minutes,
        )
