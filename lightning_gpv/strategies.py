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

How the model is cut into FSDP units (:class:`LayerWrapPolicy`, resolved on the model at wrap time):

* **Layers**: every transformer block (``LlamaDecoderLayer`` and the ``_no_split_modules`` of any causal LM
  found in the model, timm's ``EvaBlock``, open_clip's ``ResidualAttentionBlock``, transformers'
  ``InstructBlipQFormerLayer``; for GPV-1 the DETR encoder/decoder layers, ``BertLayer``, the ResNet blocks,
  ``CoAttentionLayer`` and the answer decoder's ``TransformerDecoderLayer``) is one unit. These are also
  the activation-checkpointing targets.
* **Sub-models** (``unit_classes``): whole parts whose trainability differs from their surroundings and
  which are only ever called through their ``forward`` (VistaLLM's frozen ``EvaFeatures`` and trainable
  ``InstructionGuidedTokenizer``, GPV-1's frozen ``BertModel`` and the ResNet stem). The remainder of such
  a part (patch embedding, position embeddings, ``ln_vision``, queries, projection) gets its own unit
  instead of landing in the root unit next to parameters of the other kind.
* **Adapters**: inside a layer that holds frozen and trainable parameters (LoRA), each largest fully
  trainable sub-module (``lora_A.default``, ``lora_B.default``) is a unit, so the layer's unit keeps only
  frozen weights; peft's frozen ``ModulesToSaveWrapper.original_module`` copies are units too.

A unit whose parameters all have ``requires_grad=False`` gets no gradient buffer at all; a unit that mixes
both kinds (allowed with ``use_orig_params=True``) allocates and reduce-scatters gradients for its whole
flat parameter, frozen part included. :func:`describe_units` lists the units with their frozen and
trainable parameter counts; the strategy warns at setup about every mixed unit.

Only modules called through their own ``forward`` may be units: a unit's parameters are sharded outside
its forward, so a direct ``.weight`` access or a call to another method (``trunk.forward_intermediates``,
``llm.get_input_embeddings()(ids)`` from outside the LLM) must hit a parameter of an enclosing unit. This
is why the LLM itself, the timm trunk and ``DetrModel`` are never units.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

import torch
from lightning.pytorch.plugins.precision.fsdp import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from torch.distributed.fsdp.wrap import CustomPolicy

ShardingName = Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"]

VISTALLM_LAYER_CLASSES: tuple[str, ...] = (
    "LlamaDecoderLayer",
    "EvaBlock",
    "EvaBlockPostNorm",
    "timm.models.vision_transformer.Block",
    "ResidualAttentionBlock",
    "CustomResidualAttentionBlock",
    "InstructBlipQFormerLayer",
)
"""Transformer blocks of VistaLLM: LLM decoder layers, EVA (timm or open_clip) blocks, QFormer layers."""

VISTALLM_UNIT_CLASSES: tuple[str, ...] = ("EvaFeatures", "InstructionGuidedTokenizer")
"""VistaLLM parts wrapped whole: the frozen image encoder and the trainable instruction-guided tokenizer."""

GPV1_LAYER_CLASSES: tuple[str, ...] = (
    "DetrEncoderLayer",
    "DetrDecoderLayer",
    "BertLayer",
    "CoAttentionLayer",
    "torch.nn.modules.transformer.TransformerDecoderLayer",
    "ResNetBasicLayer",
    "ResNetBottleNeckLayer",
    "timm.models.resnet.BasicBlock",
    "timm.models.resnet.Bottleneck",
)
"""GPV-1 blocks: DETR encoder/decoder, BERT, ResNet, co-attention and answer-decoder layers."""

GPV1_UNIT_CLASSES: tuple[str, ...] = ("BertModel", "ResNetEmbeddings")
"""GPV-1 parts wrapped whole: the (frozen) BERT query encoder and the frozen ResNet stem."""

_PEFT_SAVED_WRAPPER = "ModulesToSaveWrapper"


def _matches(cls: type, names: frozenset[str]) -> bool:
    """Whether ``cls`` or a base class is named in ``names`` (bare ``__name__`` or ``module.qualname``)."""
    for klass in cls.__mro__:
        if klass.__name__ in names or f"{klass.__module__}.{klass.__qualname__}" in names:
            return True
    return False


def _grad_kinds(module: nn.Module) -> tuple[bool, bool]:
    """``(has frozen parameters, has trainable parameters)`` of ``module`` and its descendants."""
    frozen = trainable = False
    for param in module.parameters():
        if param.requires_grad:
            trainable = True
        else:
            frozen = True
        if frozen and trainable:
            break
    return frozen, trainable


def causal_lm_layer_names(model: nn.Module) -> set[str]:
    """Class names in ``_no_split_modules`` of the transformers causal LMs (``GenerationMixin``) in ``model``.

    transformers is only consulted when already imported (a model without it has no such module).
    """
    if "transformers" not in sys.modules:
        return set()
    from transformers import GenerationMixin

    names: set[str] = set()
    for module in model.modules():
        if isinstance(module, GenerationMixin):
            names.update(getattr(module, "_no_split_modules", None) or ())
    return names


class LayerWrapPolicy(CustomPolicy):
    """FSDP / activation-checkpointing policy that selects layers, sub-models and adapters by class name.

    The selection is computed on the actual model when FSDP (or ``apply_activation_checkpointing``) runs the
    policy, so no model class is imported here and the ``requires_grad`` flags of that moment decide the
    frozen/trainable split. Class names are matched against the class and its bases, either bare
    (``"LlamaDecoderLayer"``) or qualified (``"timm.models.vision_transformer.Block"``).

    Args:
        layer_classes: Transformer blocks; each instance is one unit.
        unit_classes: Sub-models wrapped whole; they must only be called through ``forward``.
        lm_no_split_modules: Also treat the ``_no_split_modules`` classes of every causal LM in the model
            as layers (``LlamaDecoderLayer``, ``MistralDecoderLayer``, ...).
        split_mixed_layers: Inside a layer holding frozen and trainable parameters, make every largest fully
            trainable sub-module a unit (LoRA adapters), and make peft's frozen
            ``ModulesToSaveWrapper.original_module`` copies units.
    """

    def __init__(
        self,
        layer_classes: Iterable[str],
        unit_classes: Iterable[str] = (),
        *,
        lm_no_split_modules: bool = True,
        split_mixed_layers: bool = True,
    ) -> None:
        super().__init__(self._is_selected)
        self.layer_classes = frozenset(layer_classes)
        self.unit_classes = frozenset(unit_classes)
        self.lm_no_split_modules = lm_no_split_modules
        self.split_mixed_layers = split_mixed_layers
        self._selected: set[int] = set()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer_classes={sorted(self.layer_classes)}, "
            f"unit_classes={sorted(self.unit_classes)}, lm_no_split_modules={self.lm_no_split_modules}, "
            f"split_mixed_layers={self.split_mixed_layers})"
        )

    def layer_names(self, root: nn.Module) -> frozenset[str]:
        """The layer class names in effect for ``root`` (``layer_classes`` plus resolved LM layers)."""
        extra = causal_lm_layer_names(root) if self.lm_no_split_modules else set()
        return self.layer_classes | extra

    def select(self, root: nn.Module) -> list[nn.Module]:
        """The modules of ``root`` that become units (``root`` itself excluded), in ``modules()`` order."""
        layer_names = self.layer_names(root)
        layers: list[nn.Module] = []
        chosen: dict[int, nn.Module] = {}
        for module in root.modules():
            if module is root or next(module.parameters(), None) is None:
                continue
            if _matches(type(module), layer_names):
                layers.append(module)
                chosen[id(module)] = module
            elif _matches(type(module), self.unit_classes):
                chosen[id(module)] = module
            elif self.split_mixed_layers and type(module).__name__ == _PEFT_SAVED_WRAPPER:
                original = getattr(module, "original_module", None)
                if isinstance(original, nn.Module) and _grad_kinds(original) == (True, False):
                    chosen[id(original)] = original
        if self.split_mixed_layers:
            for layer in layers:
                if _grad_kinds(layer) == (True, True):
                    for adapter in _largest_trainable_parts(layer):
                        chosen[id(adapter)] = adapter
        return [module for module in root.modules() if id(module) in chosen]

    def _run_policy(
        self,
        root_module: nn.Module,
        ignored_modules: set[nn.Module],
        root_kwargs: dict[str, Any],
    ) -> dict[nn.Module, dict[str, Any]]:
        selected = self.select(root_module)
        self._selected = {id(module) for module in selected}
        try:
            return super()._run_policy(root_module, ignored_modules, root_kwargs)
        finally:
            self._selected = set()

    def _is_selected(self, module: nn.Module) -> bool:
        return id(module) in self._selected


_CONTAINERS = (nn.ModuleDict, nn.ModuleList, nn.Sequential)
"""Containers are indexed or iterated, not called, so they are never units (their children can be)."""


def _largest_trainable_parts(layer: nn.Module) -> list[nn.Module]:
    """Largest non-container sub-modules of ``layer`` with only trainable parameters (``layer`` excluded)."""
    parts: list[nn.Module] = []
    stack = list(layer.children())
    while stack:
        module = stack.pop()
        frozen, trainable = _grad_kinds(module)
        if trainable and not frozen and not isinstance(module, _CONTAINERS):
            parts.append(module)
        elif trainable:
            stack.extend(module.children())
    return parts


@dataclass(frozen=True)
class WrapUnit:
    """One FSDP unit: the module path (``""`` for the root) and the parameters it owns.

    Attributes:
        name: Module path in the root (``""`` is the root unit).
        class_name: Class of the wrapped module.
        frozen_numel: Elements of owned parameters with ``requires_grad=False``.
        trainable_numel: Elements of owned parameters with ``requires_grad=True``.
    """

    name: str
    class_name: str
    frozen_numel: int
    trainable_numel: int

    @property
    def mixed(self) -> bool:
        """Whether the unit holds both frozen and trainable parameters."""
        return self.frozen_numel > 0 and self.trainable_numel > 0


def describe_units(model: nn.Module, policy: LayerWrapPolicy) -> list[WrapUnit]:
    """The units FSDP would build from ``model`` with ``policy``, root first, empty units left out.

    Each parameter belongs to the unit of its nearest selected ancestor (the root when none); a parameter
    shared by several modules counts once, for the first module that holds it.
    """
    selected = {id(module) for module in policy.select(model)}
    counts: dict[str, list[int]] = {}
    classes: dict[str, str] = {}
    seen: set[int] = set()
    stack: list[tuple[str, nn.Module, str]] = [("", model, "")]
    while stack:
        name, module, unit = stack.pop()
        if id(module) in selected or module is model:
            unit = name
            classes[unit] = type(module).__name__
            counts.setdefault(unit, [0, 0])
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            counts[unit][int(param.requires_grad)] += param.numel()
        for child_name, child in reversed(list(module.named_children())):
            stack.append((f"{name}.{child_name}" if name else child_name, child, unit))
    return [
        WrapUnit(name, classes[name], frozen, trainable)
        for name, (frozen, trainable) in counts.items()
        if frozen or trainable
    ]


def _uses_own_checkpointing(model: nn.Module) -> bool:
    """Whether transformers' or timm's own gradient checkpointing is switched on somewhere in ``model``."""
    return any(
        getattr(module, "gradient_checkpointing", False) is True
        or getattr(module, "grad_checkpointing", False) is True
        for module in model.modules()
    )


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
        layer_classes: Transformer block class names (units and activation-checkpointing targets).
        unit_classes: Sub-model class names wrapped whole (only called through ``forward``).
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
        layer_classes: Sequence[str],
        unit_classes: Sequence[str] = (),
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
        self.wrap_policy = LayerWrapPolicy(
            layer_classes,
            unit_classes,
            lm_no_split_modules=lm_no_split_modules,
            split_mixed_layers=split_mixed_layers,
        )
        self.checkpoint_policy = (
            LayerWrapPolicy(layer_classes, lm_no_split_modules=lm_no_split_modules, split_mixed_layers=False)
            if activation_checkpointing
            else None
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
        layer_classes: Sequence[str] = VISTALLM_LAYER_CLASSES,
        unit_classes: Sequence[str] = VISTALLM_UNIT_CLASSES,
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
        layer_classes: Sequence[str] = GPV1_LAYER_CLASSES,
        unit_classes: Sequence[str] = GPV1_UNIT_CLASSES,
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
