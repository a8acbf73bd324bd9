"""FSDP2 sharding of a LightningModule (``torch.distributed.fsdp.fully_shard``), used by the presets of
:mod:`lightning_gpv.strategies_fsdp2`.

* :func:`plan_groups` / :func:`shard_module`: the groups are the FSDP1 presets' units, selected by
  :class:`~lightning_gpv.fsdp_units.LayerWrapPolicy` inside each child of the LightningModule that holds
  parameters (the model); every unit gets its own ``fully_shard`` call, descendants first, then each such
  child becomes a root group. Activation checkpointing uses the composable ``checkpoint``, which keeps the
  parameter names.
* Methods of a root called from outside its ``forward`` (``generate``, GPV-1's ``encode``) gather the
  root's parameters as ``forward`` does.
* :func:`load_optimizer_states`: optimizer states from a checkpoint, where a parameter without saved state
  (it had no gradient yet) starts fresh, as under DDP.

Unlike FSDP1's flat parameters, FSDP2 keeps every parameter a separate ``DTensor`` and allocates gradients
for the trainable ones only, so a group mixing frozen and trainable parameters costs no gradient memory for
the frozen ones; the groups still keep frozen sub-models (image encoder, BERT, LoRA base weights) apart
from trainable ones, so that each group's all-gather and reduce-scatter carry one kind.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lightning_gpv.fsdp_units import LayerWrapPolicy


@dataclass(frozen=True)
class ShardPlan:
    """What :func:`shard_module` did, as module paths in the sharded module.

    Attributes:
        units: Modules that got their own ``fully_shard`` group, in the order it was applied (bottom-up).
        roots: Children of the sharded module that became root groups (after the units).
        checkpointed: Modules whose activations are recomputed in the backward pass.
        forward_methods: ``root.method`` names that gather the root's parameters like ``forward``.
    """

    units: tuple[str, ...]
    roots: tuple[str, ...]
    checkpointed: tuple[str, ...]
    forward_methods: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """Every ``fully_shard`` group: the units, then the roots."""
        return self.units + self.roots


def plan_groups(
    module: nn.Module, policy: LayerWrapPolicy
) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Module]]]:
    """``(units, roots)`` of ``module`` (a LightningModule): the roots are its children that hold
    parameters; the units are what ``policy`` selects inside each root, descendants before ancestors (the
    order ``fully_shard`` needs: a group takes every parameter not already taken by a nested group).

    Raises:
        ValueError: ``module`` holds parameters of its own (they would be in no group: neither sharded nor
            synchronised).
    """
    own = [name for name, _ in module.named_parameters(recurse=False)]
    if own:
        raise ValueError(f"parameters directly on {type(module).__name__} are not sharded: {own}")
    units: list[tuple[str, nn.Module]] = []
    roots: list[tuple[str, nn.Module]] = []
    for root_name, root in module.named_children():
        if next(root.parameters(), None) is None:
            continue
        selected = {id(unit) for unit in policy.select(root)}
        inside = [(f"{root_name}.{name}", sub) for name, sub in root.named_modules() if id(sub) in selected]
        units.extend(reversed(inside))  # reversed pre-order: every descendant before its ancestors
        roots.append((root_name, root))
    return units, roots


def shard_module(
    module: nn.Module,
    policy: LayerWrapPolicy,
    *,
    mesh: Any,
    checkpoint_policy: LayerWrapPolicy | None = None,
    mp_policy: Any = None,
    offload_policy: Any = None,
    reshard_after_forward: bool = True,
    forward_methods: Sequence[str] = (),
) -> ShardPlan:
    """Apply activation checkpointing and ``fully_shard`` to ``module`` (a LightningModule) in place.

    Args:
        module: The module to shard; its children holding parameters become the root groups.
        policy: Selects the unit groups (:func:`plan_groups`).
        mesh: Device mesh of the sharding (1-D: sharded over all its ranks; 2-D ``(replicate, shard)``:
            hybrid sharding).
        checkpoint_policy: Selects the modules whose activations are recomputed (``None``: none).
        mp_policy: ``MixedPrecisionPolicy`` of every group (``None``: FSDP2's default, no casting).
        offload_policy: ``CPUOffloadPolicy`` or ``None``.
        reshard_after_forward: Free the gathered parameters of each unit after its forward (ZeRO-3) or keep
            them until the backward (ZeRO-2). The roots keep theirs (FSDP2's own rule for root groups).
        forward_methods: Methods of the roots that are called from outside ``forward`` and use the root's
            parameters (``generate``); each gathers them as ``forward`` does.
    """
    from torch.distributed._composable import checkpoint
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard

    units, roots = plan_groups(module, policy)
    checkpointed: list[str] = []
    if checkpoint_policy is not None:
        for root_name, root in roots:
            targets = {id(target) for target in checkpoint_policy.select(root)}
            for name, sub in root.named_modules():
                if id(sub) in targets:
                    # The composable checkpoint works through module hooks and keeps the parameter names
                    # (checkpoint_wrapper inserts `_checkpoint_wrapped_module.`, which full-state loading
                    # of ModelParallelStrategy does not strip).
                    checkpoint(sub)
                    checkpointed.append(f"{root_name}.{name}")
    kwargs: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": mp_policy if mp_policy is not None else MixedPrecisionPolicy(),
        "offload_policy": offload_policy if offload_policy is not None else OffloadPolicy(),
    }
    for _, unit in units:
        fully_shard(unit, reshard_after_forward=reshard_after_forward, **kwargs)
    registered: list[str] = []
    for root_name, root in roots:
        fully_shard(root, **kwargs)
        for method in forward_methods:
            if callable(getattr(root, method, None)):
                _register_forward_method(root, method)
                registered.append(f"{root_name}.{method}")
    return ShardPlan(
        units=tuple(name for name, _ in units),
        roots=tuple(name for name, _ in roots),
        checkpointed=tuple(checkpointed),
        forward_methods=tuple(registered),
    )


def _register_forward_method(root: nn.Module, name: str) -> None:
    """Make ``root.<name>()`` gather the root group's parameters as ``forward`` does, except when it runs
    inside ``forward`` or another such method (GPV-1's ``forward`` calls ``encode``): there it is part of
    the running pass, whereas FSDP's own wrapper would run the pre- and post-forward hooks again inside it
    and close the pass on the inner call's return."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    plain = getattr(root, name)
    register_fsdp_forward_method(root, name)
    gathering = getattr(root, name)
    depth = root.__dict__.get("_fsdp2_call_depth")
    if depth is None:
        depth = root.__dict__["_fsdp2_call_depth"] = [0]

        def enter(*_: Any) -> None:
            depth[0] += 1

        def leave(*_: Any) -> None:
            depth[0] -= 1

        root.register_forward_pre_hook(enter)
        root.register_forward_hook(leave, always_call=True)

    @functools.wraps(plain)
    def call(*args: Any, **kwargs: Any) -> Any:
        if depth[0]:
            return plain(*args, **kwargs)
        depth[0] += 1
        try:
            return gathering(*args, **kwargs)
        finally:
            depth[0] -= 1

    setattr(root, name, call)


def load_optimizer_states(
    module: nn.Module, optimizers: Sequence[Any], path: Path, checkpoint: dict[str, Any]
) -> None:
    """Load the optimizer states of a checkpoint written by ``ModelParallelStrategy`` into ``optimizers``.

    Loading is not strict: a trainable parameter without saved state (GPV-1's DETR during its frozen
    epochs, a head that no batch has used yet) gets none, and its state starts at its first gradient, as
    with a plain ``torch.optim.Optimizer.load_state_dict``. Distributed checkpoint's strict loading refuses
    such a checkpoint.

    Args:
        module: The sharded module.
        optimizers: The optimizers, in the checkpoint's order.
        path: A checkpoint folder (``optimizer_<i>`` entries) or file (``optimizer_states`` list).
        checkpoint: What was read from a checkpoint file besides the weights (unused for a folder).
    """
    from lightning.fabric.strategies.model_parallel import _is_sharded_checkpoint
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    sharded = _is_sharded_checkpoint(path)
    for index, optimizer in enumerate(optimizers):
        if sharded:
            state = _read_sharded_optimizer_state(module, optimizer, path, f"optimizer_{index}")
            options = StateDictOptions(cpu_offload=True, strict=False)
        else:
            saved = checkpoint.get("optimizer_states") or []
            if index >= len(saved):
                continue
            state = _parameter_name_keys(saved[index], module)
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=options)


def _read_sharded_optimizer_state(module: nn.Module, optimizer: Any, path: Path, key: str) -> dict[str, Any]:
    """The optimizer state saved under ``key`` in a checkpoint folder, for the parameters it has state for."""
    from torch.distributed.checkpoint import FileSystemReader, load
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # The template has an entry for every trainable parameter; reading one the folder lacks would fail.
    template = get_optimizer_state_dict(module, optimizer)
    saved = FileSystemReader(path).read_metadata().state_dict_metadata
    template["state"] = {
        name: values
        for name, values in template["state"].items()
        if all(f"{key}.state.{name}.{field}" in saved for field in values)
    }
    load({key: template}, checkpoint_id=path)
    return template


def _parameter_name_keys(state: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """An optimizer state keyed by parameter names (a single-file checkpoint may key it by position)."""
    from lightning.fabric.strategies.model_parallel import _rekey_optimizer_state_if_needed

    groups = state.get("param_groups") or [{}]
    by_position = any(isinstance(name, int) for name in groups[0].get("params", ()))
    return _rekey_optimizer_state_if_needed(state, module) if by_position and state.get("state") else state
