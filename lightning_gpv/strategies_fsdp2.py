"""FSDP2 presets for GPV-1 and VistaLLM: per-parameter sharding with ``torch.distributed.fsdp.fully_shard``.

Recipes pick a preset by class path (see ``docs/distributed.md``, "FSDP2 presets")::

    trainer:
      precision: bf16-mixed
      strategy:
        class_path: lightning_gpv.strategies_fsdp2.VistaLLMFSDP2Strategy
        init_args: {activation_checkpointing: true, reduce_dtype: fp32}

The presets are :class:`~lightning.pytorch.strategies.ModelParallelStrategy` subclasses. That strategy
expects the LightningModule to shard itself in ``configure_model``; these presets shard the module in
:meth:`GPVFSDP2Strategy.setup` instead (after ``configure_model``, before the optimizers are built), so the
systems need no FSDP code. The groups are the FSDP1 presets' units, chosen by the same
:class:`~lightning_gpv.fsdp_units.LayerWrapPolicy`: every selected layer, sub-model and LoRA adapter gets its
own ``fully_shard`` call, bottom-up, then each child of the LightningModule that holds parameters (the
model) becomes a root group (:func:`lightning_gpv.fsdp2.shard_module`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.strategies.model_parallel import _load_checkpoint
from lightning.fabric.utilities.init import _materialize_distributed_module
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.plugins.precision import HalfPrecision
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_gpv.fsdp2 import ShardPlan, load_optimizer_states, shard_module
from lightning_gpv.fsdp_units import _uses_own_checkpointing, wrap_and_checkpoint_policies
from lightning_gpv.models.gpv1 import build as gpv1_build
from lightning_gpv.models.vistallm import build as vistallm_build
from lightning_gpv.strategies import cast_floating_tensors

DtypeName = Literal["bf16", "fp32"]
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _stored_dtype(precision: str) -> torch.dtype:
    """Dtype of the (sharded) weights under a Trainer precision."""
    return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(precision, torch.float32)


class _BatchCastingHalfPrecision(HalfPrecision):
    """``HalfPrecision`` that casts the floating-point tensors of a batch without rebuilding its dataclasses
    (Lightning's own conversion deep-copies the ``Target`` and ``Mask`` objects of the batches every step)."""

    def convert_input(self, data: Any) -> Any:
        return cast_floating_tensors(data, self._desired_input_dtype)


class GPVFSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) with a :class:`LayerWrapPolicy` and bf16-friendly mixed precision.

    Use :class:`VistaLLMFSDP2Strategy` or :class:`GPV1FSDP2Strategy`; this base takes the class lists
    explicitly. Precision comes from ``Trainer(precision=...)``: under ``bf16-mixed`` the fp32 master
    weights are gathered in ``param_dtype`` (bf16 by default) and the forward runs under autocast; gradients
    are reduced in ``reduce_dtype``; buffers are never cast. Gradients are DTensors, so Lightning's norm
    clipping (``gradient_clip_val``) and ``torch.nn.utils.clip_grad_norm_`` compute the global norm.

    Args:
        layer_classes: Transformer block classes (groups and activation-checkpointing targets).
        unit_classes: Sub-model classes sharded whole (only called through ``forward``).
        forward_methods: Methods of the model called from outside its ``forward`` that use the root
            group's parameters (``generate``); they gather them as ``forward`` does.
        shard_size: Ranks a parameter is sharded over; ``None``: all ranks. A divisor of the world size
            gives hybrid sharding: full sharding inside groups of ``shard_size`` consecutive ranks (the
            GPUs of a node), replicas across groups.
        activation_checkpointing: Recompute the activations of every layer in the backward pass. Skipped
            with a warning when the model already uses transformers'/timm's own gradient checkpointing.
        reshard_after_forward: Free each layer's gathered parameters after its forward (ZeRO-3); ``False``
            keeps them until its backward (ZeRO-2: fewer all-gathers, more memory).
        param_dtype: Dtype the fp32 weights are gathered in under ``bf16-mixed``: ``"bf16"`` (``None``,
            the default) or ``"fp32"`` (the numbers of DDP under autocast, twice the all-gather traffic).
            Other precisions compute in the weights' own dtype and refuse another.
        reduce_dtype: Gradient reduction dtype when the gradients are computed in bf16; ``"fp32"``
            averages exactly, ``"bf16"`` halves the gradient traffic.
        cpu_offload: Keep the sharded parameters, gradients and the optimizer step in CPU memory (slow).
        save_distributed_checkpoint: ``True``: every rank writes its shard (a checkpoint folder);
            ``False``: rank 0 gathers everything into one file.
        lm_no_split_modules: Also shard the ``_no_split_modules`` classes of the model's causal LM.
        split_mixed_layers: Make LoRA adapters (and peft's frozen ``original_module`` copies) their own
            groups.
        timeout_minutes: Timeout of collective operations.
    """

    def __init__(
        self,
        layer_classes: Sequence[type[nn.Module]],
        unit_classes: Sequence[type[nn.Module]] = (),
        forward_methods: Sequence[str] = ("generate",),
        shard_size: int | None = None,
        activation_checkpointing: bool = True,
        reshard_after_forward: bool = True,
        param_dtype: DtypeName | None = None,
        reduce_dtype: DtypeName = "fp32",
        cpu_offload: bool = False,
        save_distributed_checkpoint: bool = True,
        lm_no_split_modules: bool = True,
        split_mixed_layers: bool = True,
        timeout_minutes: float = 30.0,
    ) -> None:
        if param_dtype is not None and param_dtype not in _DTYPES:
            raise ValueError(f"param_dtype must be 'bf16', 'fp32' or None, got {param_dtype!r}")
        if reduce_dtype not in _DTYPES:
            raise ValueError(f"reduce_dtype must be 'fp32' or 'bf16', got {reduce_dtype!r}")
        if shard_size is not None and (not isinstance(shard_size, int) or shard_size < 1):
            raise ValueError(f"shard_size must be a positive integer or None, got {shard_size!r}")
        self.param_dtype = param_dtype  # before the parent's constructor, which sets the precision plugin
        super().__init__(
            save_distributed_checkpoint=save_distributed_checkpoint,
            timeout=timedelta(minutes=timeout_minutes),
        )
        self.wrap_policy, self.checkpoint_policy = wrap_and_checkpoint_policies(
            layer_classes,
            unit_classes,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
            activation_checkpointing=activation_checkpointing,
        )
        self.forward_methods = tuple(forward_methods)
        self.shard_size = shard_size
        self.reshard_after_forward = reshard_after_forward
        self.reduce_dtype = reduce_dtype
        self.cpu_offload = cpu_offload
        self.plan: ShardPlan | None = None
        self._shard_mesh: Any = None

    # ------------------------------------------------------------------------------------------------
    # Precision

    @property
    def mixed_precision_policy(self) -> Any:
        """FSDP2 ``MixedPrecisionPolicy`` for the Trainer precision and the preset's dtypes."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        precision = self.precision_plugin.precision
        stored = _stored_dtype(precision)
        if self.param_dtype is not None:
            compute = _DTYPES[self.param_dtype]
        else:
            compute = torch.bfloat16 if precision == "bf16-mixed" else stored
        return MixedPrecisionPolicy(
            param_dtype=compute if compute != stored else None,
            reduce_dtype=_DTYPES[self.reduce_dtype] if compute != torch.float32 else None,
            # Autocast casts inside the ops (gathering in another dtype needs it, see the setter below).
            cast_forward_inputs=False,
        )

    @property
    def precision_plugin(self) -> Any:
        return super().precision_plugin

    @precision_plugin.setter
    def precision_plugin(self, precision_plugin: Any) -> None:
        if type(precision_plugin) is HalfPrecision:
            precision_plugin = _BatchCastingHalfPrecision(precision_plugin.precision)
        precision = getattr(precision_plugin, "precision", None)  # None: the parent's constructor
        stored = _stored_dtype(precision or "32-true")
        if (
            precision
            and "mixed" not in precision
            and self.param_dtype
            and _DTYPES[self.param_dtype] != stored
        ):
            # Without autocast, tensors made inside the forward (biases, masks, RoPE) keep the stored dtype
            # and meet weights of another: timm's EVA fails with a dtype mismatch.
            raise ValueError(
                f"param_dtype={self.param_dtype!r} needs precision 'bf16-mixed' (autocast); under "
                f"{precision!r} the weights compute in {stored}: leave param_dtype unset"
            )
        ModelParallelStrategy.precision_plugin.fset(self, precision_plugin)

    # ------------------------------------------------------------------------------------------------
    # Mesh and sharding

    def setup_environment(self) -> None:
        # Data parallelism only: a data-parallel mesh dimension over all ranks, no tensor parallelism (the
        # parent's "auto" puts the GPUs of a node on the tensor-parallel dimension).
        world = self.num_nodes * self.num_processes
        self._data_parallel_size = world
        self._tensor_parallel_size = 1
        super().setup_environment()
        if self.shard_size is None or self.shard_size == world:
            self._shard_mesh = self.device_mesh["data_parallel"]
            return
        if world % self.shard_size:
            raise ValueError(f"shard_size {self.shard_size} does not divide the world size {world}")
        from torch.distributed.device_mesh import init_device_mesh

        self._shard_mesh = init_device_mesh(
            self.root_device.type,
            (world // self.shard_size, self.shard_size),
            mesh_dim_names=("replicate", "shard"),
        )

    @property
    def shard_mesh(self) -> Any:
        """The mesh ``fully_shard`` uses (1-D, or 2-D ``(replicate, shard)`` with ``shard_size``)."""
        if self._shard_mesh is None:
            raise RuntimeError("the mesh exists once the processes are set up")
        return self._shard_mesh

    def setup(self, trainer: Any) -> None:
        """Shard the LightningModule (unless it is sharded already: a second ``fit``/``validate``, or a
        ``configure_model`` of its own), move the rest to the device, then set up the optimizers."""
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, FullyShardedDataParallel

        assert self.model is not None and self.accelerator is not None
        self.accelerator.setup(trainer)
        if any(isinstance(m, FullyShardedDataParallel) for m in self.model.modules()):
            raise TypeError(f"{type(self).__name__} takes a module without FSDP1 wrappers")
        if not any(isinstance(m, FSDPModule) for m in self.model.modules()):
            self.model = self.precision_plugin.convert_module(self.model)
            checkpoint_policy = self.checkpoint_policy
            if checkpoint_policy is not None and _uses_own_checkpointing(self.model):
                rank_zero_warn(
                    "The model already uses transformers'/timm's gradient checkpointing; the preset's "
                    "activation checkpointing is skipped. Use one of the two."
                )
                checkpoint_policy = None
            offload = None
            if self.cpu_offload:
                offload = CPUOffloadPolicy(pin_memory=self.root_device.type == "cuda")
            self.plan = shard_module(
                self.model,
                self.wrap_policy,
                mesh=self.shard_mesh,
                checkpoint_policy=checkpoint_policy,
                mp_policy=self.mixed_precision_policy,
                offload_policy=offload,
                reshard_after_forward=self.reshard_after_forward,
                forward_methods=self.forward_methods,
            )
            rank_zero_info(
                f"{type(self).__name__}: {len(self.plan.groups)} fully_shard groups "
                f"({len(self.plan.roots)} root), {len(self.plan.checkpointed)} checkpointed layers"
            )
        _materialize_distributed_module(self.model, self.root_device)
        self._move_to_device()
        self.barrier()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING and not self.cpu_offload:
            _optimizers_to_device(self.optimizers, self.root_device)

    def _move_to_device(self) -> None:
        """Move what is not sharded to the device; ``fully_shard`` placed the sharded groups already, and
        with CPU offload their parameters must stay in CPU memory."""
        assert self.model is not None
        if not self.cpu_offload:
            self.model_to_device()
            return
        from torch.distributed.fsdp import FSDPModule

        device = self.root_device
        for child in self.model.children():
            if not isinstance(child, FSDPModule):
                child.to(device)
        for name, buffer in self.model.named_buffers(recurse=False):
            self.model._buffers[name] = buffer.to(device)
        self.model._device = device  # what LightningModule.device reports (its `.to` would move the shards)

    # ------------------------------------------------------------------------------------------------
    # Checkpoints

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Load the weights (strictly, per the module's ``strict_loading``), then the optimizer states with
        :func:`~lightning_gpv.fsdp2.load_optimizer_states` (a parameter without saved state starts fresh);
        returns the rest of the checkpoint."""
        path = Path(self.broadcast(checkpoint_path))
        assert self.lightning_module is not None and self.model is not None
        checkpoint = _load_checkpoint(
            path,
            {"state_dict": self.model},
            strict=self.lightning_module.strict_loading,
            optimizer_states_from_list=True,
            weights_only=weights_only,
        )
        load_optimizer_states(self.model, self.optimizers, path, checkpoint)
        return checkpoint

    # ------------------------------------------------------------------------------------------------
    # Gradient clipping of a parameter subset

    @torch.no_grad()
    def clip_grad_norm_(
        self, parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0
    ) -> torch.Tensor:
        """Clip the gradients of a subset of the (sharded) parameters by their global norm; a collective,
        call it on every rank. Returns the total norm before clipping (a plain scalar tensor)."""
        params = list(parameters)
        grads = [p.grad for p in params if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads, norm_type)
        if hasattr(total, "full_tensor"):  # a DTensor: the norm of the local shards, reduced on demand
            total = total.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return total


class VistaLLMFSDP2Strategy(GPVFSDP2Strategy):
    """FSDP2 preset for VistaLLM: EVA blocks, QFormer layers and LLM decoder layers are groups, the frozen
    image encoder and the trainable instruction-guided tokenizer are groups of their own, ``generate``
    gathers the root's parameters (embeddings, head). Arguments: see :class:`GPVFSDP2Strategy`.
    """

    def __init__(
        self,
        shard_size: int | None = None,
        activation_checkpointing: bool = True,
        reshard_after_forward: bool = True,
        param_dtype: DtypeName | None = None,
        reduce_dtype: DtypeName = "fp32",
        cpu_offload: bool = False,
        save_distributed_checkpoint: bool = True,
        layer_classes: Sequence[type[nn.Module]] = vistallm_build.FSDP_LAYER_CLASSES,
        unit_classes: Sequence[type[nn.Module]] = vistallm_build.FSDP_UNIT_CLASSES,
        forward_methods: Sequence[str] = ("generate",),
        lm_no_split_modules: bool = True,
        split_mixed_layers: bool = True,
        timeout_minutes: float = 30.0,
    ) -> None:
        super().__init__(
            layer_classes=layer_classes,
            unit_classes=unit_classes,
            forward_methods=forward_methods,
            shard_size=shard_size,
            activation_checkpointing=activation_checkpointing,
            reshard_after_forward=reshard_after_forward,
            param_dtype=param_dtype,
            reduce_dtype=reduce_dtype,
            cpu_offload=cpu_offload,
            save_distributed_checkpoint=save_distributed_checkpoint,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
            timeout_minutes=timeout_minutes,
        )


class GPV1FSDP2Strategy(GPVFSDP2Strategy):
    """FSDP2 preset for GPV-1: DETR, BERT, ResNet, co-attention and answer-decoder layers are groups, the
    frozen BERT and ResNet stem are groups of their own, ``encode`` and ``generate`` gather the root's
    parameters. Activation checkpointing is off and a single-file checkpoint on by default, as in
    :class:`~lightning_gpv.strategies.GPV1FSDPStrategy`. Arguments: see :class:`GPVFSDP2Strategy`.
    """

    def __init__(
        self,
        shard_size: int | None = None,
        activation_checkpointing: bool = False,
        reshard_after_forward: bool = True,
        param_dtype: DtypeName | None = None,
        reduce_dtype: DtypeName = "fp32",
        cpu_offload: bool = False,
        save_distributed_checkpoint: bool = False,
        layer_classes: Sequence[type[nn.Module]] = gpv1_build.FSDP_LAYER_CLASSES,
        unit_classes: Sequence[type[nn.Module]] = gpv1_build.FSDP_UNIT_CLASSES,
        forward_methods: Sequence[str] = ("encode", "generate"),
        lm_no_split_modules: bool = False,
        split_mixed_layers: bool = True,
        timeout_minutes: float = 30.0,
    ) -> None:
        super().__init__(
            layer_classes=layer_classes,
            unit_classes=unit_classes,
            forward_methods=forward_methods,
            shard_size=shard_size,
            activation_checkpointing=activation_checkpointing,
            reshard_after_forward=reshard_after_forward,
            param_dtype=param_dtype,
            reduce_dtype=reduce_dtype,
            cpu_offload=cpu_offload,
            save_distributed_checkpoint=save_distributed_checkpoint,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
            timeout_minutes=timeout_minutes,
        )
