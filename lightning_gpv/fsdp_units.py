"""How GPV-1 and VistaLLM are cut into FSDP units: :class:`LayerWrapPolicy`, resolved on the model at
wrap time, makes these units:

* **Layers**: every transformer block (``LlamaDecoderLayer`` and the ``_no_split_modules`` of any causal LM
  found in the model, timm's ``EvaBlock``, transformers' ``InstructBlipQFormerLayer``; for GPV-1 the DETR
  encoder/decoder layers, ``BertLayer``, the ResNet blocks, ``CoAttentionLayer`` and the answer decoder's
  ``TransformerDecoderLayer``) is one unit. These are also the activation-checkpointing targets.
* **Sub-models** (``unit_classes``): whole parts whose trainability differs from their surroundings and
  which are only ever called through their ``forward`` (VistaLLM's frozen ``EvaFeatures`` or
  ``TransformersVisionFeatures`` and trainable ``InstructionGuidedTokenizer``, GPV-1's frozen ``BertModel``
  and the ResNet stem). The remainder of such a part (patch embedding, position embeddings, ``ln_vision``,
  queries, projection) gets its own unit instead of landing in the root unit next to parameters of the
  other kind.
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
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.distributed.fsdp.wrap import CustomPolicy

_PEFT_SAVED_WRAPPER = "ModulesToSaveWrapper"


def _matches(cls: type, classes: tuple[type, ...], names: frozenset[str] = frozenset()) -> bool:
    """Whether ``cls`` is (a subclass of) one of ``classes``, or it or a base class is named in ``names``
    (the ``_no_split_modules`` class names transformers declares)."""
    if issubclass(cls, classes):
        return True
    return any(klass.__name__ in names for klass in cls.__mro__)


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
    """FSDP / activation-checkpointing policy that selects layers, sub-models and adapters by class.

    The selection is computed on the actual model when FSDP (or ``apply_activation_checkpointing``) runs the
    policy, so the ``requires_grad`` flags of that moment decide the frozen/trainable split. A module is
    selected when it is an instance of one of the classes (subclasses included). Each model family declares
    its classes next to its builder (``FSDP_LAYER_CLASSES``, ``FSDP_UNIT_CLASSES`` in
    ``lightning_gpv.models.<family>.build``).

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
        layer_classes: Iterable[type[nn.Module]],
        unit_classes: Iterable[type[nn.Module]] = (),
        *,
        lm_no_split_modules: bool = True,
        split_mixed_layers: bool = True,
    ) -> None:
        super().__init__(self._is_selected)
        self.layer_classes = tuple(layer_classes)
        self.unit_classes = tuple(unit_classes)
        for cls in (*self.layer_classes, *self.unit_classes):
            if not isinstance(cls, type):
                raise TypeError(f"layer_classes and unit_classes take classes, got {cls!r}")
        self.lm_no_split_modules = lm_no_split_modules
        self.split_mixed_layers = split_mixed_layers
        self._selected: set[int] = set()

    def __repr__(self) -> str:
        layers = [c.__qualname__ for c in self.layer_classes]
        units = [c.__qualname__ for c in self.unit_classes]
        return (
            f"{type(self).__name__}(layer_classes={layers}, unit_classes={units}, "
            f"lm_no_split_modules={self.lm_no_split_modules}, split_mixed_layers={self.split_mixed_layers})"
        )

    def lm_layer_names(self, root: nn.Module) -> frozenset[str]:
        """Class names of the causal LMs' ``_no_split_modules`` in ``root`` (empty when not asked for)."""
        return frozenset(causal_lm_layer_names(root) if self.lm_no_split_modules else ())

    def select(self, root: nn.Module) -> list[nn.Module]:
        """The modules of ``root`` that become units (``root`` itself excluded), in ``modules()`` order."""
        lm_names = self.lm_layer_names(root)
        layers: list[nn.Module] = []
        chosen: dict[int, nn.Module] = {}
        for module in root.modules():
            if module is root or next(module.parameters(), None) is None:
                continue
            if _matches(type(module), self.layer_classes, lm_names):
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


def wrap_and_checkpoint_policies(
    layer_classes: Sequence[type[nn.Module]],
    unit_classes: Sequence[type[nn.Module]],
    *,
    lm_no_split_modules: bool,
    split_mixed_layers: bool,
    activation_checkpointing: bool,
) -> tuple[LayerWrapPolicy, LayerWrapPolicy | None]:
    """The sharding-unit policy of a preset and its activation-checkpointing policy (the layer classes only,
    adapters never split; ``None`` without checkpointing), shared by the FSDP1 and FSDP2 presets."""
    wrap = LayerWrapPolicy(
        layer_classes,
        unit_classes,
        lm_no_split_modules=lm_no_split_modules,
        split_mixed_layers=split_mixed_layers,
    )
    checkpoint = (
        LayerWrapPolicy(layer_classes, lm_no_split_modules=lm_no_split_modules, split_mixed_layers=False)
        if activation_checkpointing
        else None
    )
    return wrap, checkpoint


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
