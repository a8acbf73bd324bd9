"""Memory plan of a VistaLLM training run: what each GPU holds, from the model built on the meta device.

``lightning-gpv plan --preset 7b --mode stage1 --gpus 8 --gpu-memory 80`` prints one plan, ``-c RECIPE.yaml``
reads the model, stage, batch size, GPUs, precision and strategy from a recipe, and ``--table`` prints the
presets x modes x GPU set-ups table of ``docs/distributed.md`` ("Memory plan", which derives the formulas).
Nothing is downloaded; a 7B plan takes a second or two. Sizes are GiB (2**30 bytes) per GPU; of
``--gpu-memory`` GiB, ``--reserve`` (10%) is kept for the CUDA context, NCCL and allocator fragmentation.

With ``N`` the GPUs a flat parameter is sharded over and ``m`` the bytes of the master dtype (4 under
``bf16-mixed``, 2 under ``bf16-true``), a GPU holds the weights ``m P / N`` (all ``P`` parameters, frozen
ones included), gradients ``m G / N`` (``G``: every parameter of an FSDP unit holding a trainable one), AdamW
``2 m T / N`` (``T`` trainable), bf16 buffers (gathered units, unsharded gradients: :func:`state_bytes`) and
activations (:func:`activation_bytes`, :func:`llm_layer_bytes`): the LLM's decoder layers dominate, counted
from the tensors autograd saves in transformers' Llama with SDPA (no ``s^2`` term), about ``45 s h`` bytes per
trained Llama-7B layer and sample against Korthikanti et al.'s ``34 s h + 5 a s^2`` for a GPT layer, and
``2 s h`` under activation checkpointing. Not modelled: the EVA forward's working set (a few MB per image),
CPU offload, sequence packing, and GPV-1 (about 0.22B parameters: it fits any GPU with DDP).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_gpv.models.vistallm.config import LLMConfig, LoraSettings, VistaLLMConfig

Mode = Literal["stage1", "stage2", "lora"]
Sharding = Literal["full", "grad_op", "none"]
Precision = Literal["bf16-mixed", "bf16-true"]
MODES: dict[str, tuple[int, bool]] = {"stage1": (1, False), "stage2": (2, False), "lora": (1, True)}
"""Mode -> (``VistaLLM.set_stage`` stage, LoRA on the LLM)."""
SHARDING_NAMES = dict(FULL_SHARD="full", HYBRID_SHARD="full", SHARD_GRAD_OP="grad_op", NO_SHARD="none")
"""``sharding_strategy`` of the FSDP presets -> the plan's name (``HYBRID_SHARD`` shards inside a node)."""
TABLE_GPUS: tuple[tuple[int, float], ...] = ((8, 80.0), (8, 40.0), (1, 24.0))
"""(GPUs, GiB each) of the ``--table`` rows: an 8 x H100/A100-80GB node, 8 x A100-40GB, one 24 GB card."""
GIB = 2**30
DROPOUT_MASK_BYTES = 1
"""Bytes per element of a dropout mask on CUDA (``native_dropout`` keeps a bool mask; CPU keeps the input
dtype)."""


@dataclass(frozen=True)
class Setup:
    """One training set-up on identical GPUs.

    Attributes:
        gpus: GPUs in the sharding group (``devices x num_nodes``; for ``HYBRID_SHARD`` the GPUs of a node).
        gpu_memory: Memory of one GPU in GiB.
        batch_size: Samples per GPU and step.
        seq_len: Padded LLM sequence length in tokens (prompt, 32 visual tokens per image and answer); the
            config's ``max_length`` (2048 for the paper presets) is the worst case.
        answer_len: Positions the LM head runs on (a 32-point mask answer is 66 tokens).
        instruction_len: QFormer instruction tokens (``qformer.max_text_length`` at most).
        images_per_sample: Images per sample (2 for NLVR2 in stage 2).
        checkpointing: Activation checkpointing of every transformer block (the presets' default).
        sharding: ``full`` (``FULL_SHARD``), ``grad_op`` (``SHARD_GRAD_OP``) or ``none`` (``NO_SHARD``).
        precision: Trainer precision: ``bf16-mixed`` (fp32 master weights) or ``bf16-true``.
        fsdp: Whether FSDP wraps the model; ``False``: a plain module per GPU (DDP on several GPUs).
        reserve: Fraction of each GPU's memory left out of the budget (context, NCCL, fragmentation).
    """

    gpus: int = 8
    gpu_memory: float = 80.0
    batch_size: int = 4
    seq_len: int = 1024
    answer_len: int = 66
    instruction_len: int = 128
    images_per_sample: int = 1
    checkpointing: bool = True
    sharding: Sharding = "full"
    precision: Precision = "bf16-mixed"
    fsdp: bool = True
    reserve: float = 0.1

    def __post_init__(self) -> None:
        for name in ("gpus", "batch_size", "seq_len", "answer_len", "instruction_len", "images_per_sample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gpu_memory <= 0:
            raise ValueError(f"gpu_memory must be positive, got {self.gpu_memory}")
        if not 0 <= self.reserve < 1:
            raise ValueError(f"reserve must be in [0, 1), got {self.reserve}")
        choices = {"sharding": ("full", "grad_op", "none"), "precision": ("bf16-mixed", "bf16-true")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def shards(self) -> int:
        """GPUs each flat parameter, its gradient and its AdamW state are split over."""
        return self.gpus if self.fsdp and self.sharding != "none" and self.gpus > 1 else 1

    @property
    def master_bytes(self) -> int:
        """Bytes of a stored weight, gradient and AdamW moment."""
        return 4 if self.precision == "bf16-mixed" else 2


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model and of its FSDP units (``VistaLLMFSDPStrategy``'s wrap policy).

    Attributes:
        total: All parameters.
        trainable: Parameters with ``requires_grad``.
        with_grad: Parameters of the units holding a trainable one (their whole flat gradient exists).
        root: Parameters left in the root unit (LLM embeddings, final norm, head).
        root_with_grad: ``root`` when the root unit holds a trainable parameter, else 0.
        largest_unit: Parameters of the largest non-root unit.
        largest_grad_unit: Parameters of the largest non-root unit holding a trainable one.
    """

    total: int
    trainable: int
    with_grad: int
    root: int
    root_with_grad: int
    largest_unit: int
    largest_grad_unit: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ParamCounts:
        """Counts of ``model`` (a meta-device model is enough) with its current ``requires_grad`` flags."""
        from lightning_gpv.fsdp_units import LayerWrapPolicy, describe_units
        from lightning_gpv.models.vistallm.build import FSDP_LAYER_CLASSES, FSDP_UNIT_CLASSES

        units = describe_units(model, LayerWrapPolicy(FSDP_LAYER_CLASSES, FSDP_UNIT_CLASSES))
        sizes = [(u.frozen_numel + u.trainable_numel, u.trainable_numel > 0, u.name == "") for u in units]
        root = sum(size for size, _, is_root in sizes if is_root)
        return cls(
            total=sum(size for size, _, _ in sizes),
            trainable=sum(u.trainable_numel for u in units),
            with_grad=sum(size for size, grad, _ in sizes if grad),
            root=root,
            root_with_grad=sum(size for size, grad, is_root in sizes if grad and is_root),
            largest_unit=max((size for size, _, is_root in sizes if not is_root), default=0),
            largest_grad_unit=max((size for size, grad, is_root in sizes if grad and not is_root), default=0),
        )


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of one set-up (``total`` against ``usable``).

    Attributes:
        label: What was planned (``"7b stage1"``).
        setup: The set-up.
        counts: Parameter counts.
        weights, gradients, optimizer, buffers, activations: Bytes per GPU (see the module docstring).
        activations_per_sample: Activation bytes of one sample (saved for the backward, batch-free parts
            left out).
    """

    label: str
    setup: Setup
    counts: ParamCounts
    weights: float
    gradients: float
    optimizer: float
    buffers: float
    activations: float
    activations_per_sample: float

    @property
    def total(self) -> float:
        """Bytes per GPU at the peak."""
        return self.weights + self.gradients + self.optimizer + self.buffers + self.activations

    @property
    def usable(self) -> float:
        """Bytes per GPU available to the run (memory less the reserve)."""
        return self.setup.gpu_memory * GIB * (1 - self.setup.reserve)

    @property
    def headroom(self) -> float:
        """``usable - total`` in bytes (negative: does not fit)."""
        return self.usable - self.total

    @property
    def fits(self) -> bool:
        """Whether the plan fits in the usable memory."""
        return self.headroom >= 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data with the sizes in GiB (``total_gib``, ``headroom_gib``, ...)."""
        sizes = ("weights", "gradients", "optimizer", "buffers", "activations", "total", "usable", "headroom")
        gib = {f"{name}_gib": round(getattr(self, name) / GIB, 3) for name in sizes}
        per_sample = round(self.activations_per_sample / GIB, 4)
        return dict(label=self.label, setup=asdict(self.setup), counts=asdict(self.counts), fits=self.fits,
                    activations_per_sample_gib=per_sample, **gib)  # fmt: skip


def config_for(preset: str, mode: Mode, llm_layers: int | None = None) -> VistaLLMConfig:
    """``VistaLLMConfig.from_name(preset)`` with LoRA (default settings) for ``mode="lora"`` and none
    otherwise, and ``llm_layers`` decoder layers when given."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    config = VistaLLMConfig.from_name(preset)
    llm = replace(config.llm, lora=LoraSettings() if MODES[mode][1] else None)
    if llm_layers is not None:
        if llm_layers < 1:
            raise ValueError(f"llm_layers must be at least 1, got {llm_layers}")
        llm = replace(llm, num_layers=llm_layers)
    return replace(config, llm=llm)


def meta_model(config: VistaLLMConfig, stage: int) -> torch.nn.Module:
    """VistaLLM on the meta device (no weights, no download) with ``set_stage(stage)`` applied."""
    from lightning_gpv.models.vistallm.model import VistaLLM

    with torch.device("meta"):
        model = VistaLLM.from_config(config, load_weights=False)
    model.set_stage(stage)
    return model


def state_bytes(counts: ParamCounts, setup: Setup) -> dict[str, float]:
    """Weights, gradients, AdamW state and buffers in bytes per GPU.

    FSDP buffers, bf16: ``FULL_SHARD`` keeps the root unit gathered for the whole step and at most two other
    units in flight (``limit_all_gathers``); ``SHARD_GRAD_OP`` and ``NO_SHARD`` keep every unit gathered from
    its forward to its backward (``NO_SHARD`` under ``bf16-true`` computes on the stored weights). Plus the
    unsharded bf16 gradients: the root's, alive through the backward, and the unit being reduced with its
    fp32 copy for the fp32 reduce-scatter (``6`` bytes per value). Without FSDP: gradients and AdamW for the
    trainable parameters only, autocast's cached bf16 copies of the trainable weights under ``bf16-mixed``
    and DDP's gradient buckets on several GPUs.
    """
    n, m = setup.shards, setup.master_bytes
    if not setup.fsdp:
        buffers = 2.0 * counts.trainable if setup.precision == "bf16-mixed" else 0.0
        buffers += m * counts.trainable if setup.gpus > 1 else 0.0
        return {"weights": m * counts.total, "gradients": m * counts.trainable,
                "optimizer": 2.0 * m * counts.trainable, "buffers": buffers}  # fmt: skip
    if setup.sharding == "full" and n > 1:
        gathered = 2.0 * (counts.root + 2 * counts.largest_unit)
    elif n > 1 or setup.precision == "bf16-mixed":
        gathered = 2.0 * counts.total
    else:
        gathered = 0.0
    unsharded_grads = 2.0 * counts.root_with_grad + 6.0 * counts.largest_grad_unit
    return {
        "weights": m * counts.total / n,
        "gradients": m * counts.with_grad / n,
        "optimizer": 2.0 * m * counts.trainable / n,
        "buffers": gathered + unsharded_grads,
    }


def llm_layer_bytes(
    seq_len: int,
    llm: LLMConfig,
    kind: Literal["trained", "frozen", "lora"],
    mask_bytes: int = DROPOUT_MASK_BYTES,
) -> float:
    """Bytes one Llama decoder layer saves for the backward, per sample, bf16 compute with SDPA.

    ``s`` tokens, width ``h``, key/value width ``h_kv``, MLP width ``i``, ``a`` heads: a trained layer keeps
    ``20sh + 4s h_kv + 8si + 8s + 4as`` (each RMSNorm its fp32 input and bf16 output, SDPA its q, k, v, output
    and fp32 log-sum-exp, the SwiGLU its gate, SiLU, up and product, every linear its input); a frozen layer
    that gradients pass through ``12sh + 4s h_kv + 6si + 8s + 4as`` (no linear keeps its input); LoRA adds,
    per adapted linear of input width ``d``, the dropout output and mask and the rank-``r`` product,
    ``(2 + mask) sd + 2sr``.

    Args:
        seq_len: Tokens ``s``.
        llm: Widths of the LLM (and its LoRA settings for ``kind="lora"``).
        kind: ``"trained"``: all weights train; ``"frozen"``: no weight trains but gradients pass through;
            ``"lora"``: frozen with trained adapters.
        mask_bytes: Bytes per element of a dropout mask (1 on CUDA, the input's dtype size on CPU).
    """
    s, h, i, a = seq_len, llm.hidden_size, llm.intermediate_size, llm.num_heads
    h_kv = llm.num_kv_heads * (h // a)
    if kind == "trained":
        return 20 * s * h + 4 * s * h_kv + 8 * s * i + 8 * s + 4 * a * s
    frozen = 12 * s * h + 4 * s * h_kv + 6 * s * i + 8 * s + 4 * a * s
    if kind == "frozen":
        return frozen
    lora = llm.lora if llm.lora is not None else LoraSettings()
    widths = [i if target == "down_proj" else h for target in lora.target_modules]
    per_mask = mask_bytes if lora.dropout > 0 else 0
    return frozen + sum((2 + per_mask) * s * d + 2 * s * lora.r for d in widths)


def _qformer_bytes(config: VistaLLMConfig, setup: Setup) -> tuple[float, float]:
    """(saved, recomputed layer) bytes of the trainable QFormer and ``ln_vision`` per image: Korthikanti's
    ``34 s_q h_q`` per BERT layer over ``s_q`` queries and instruction tokens (SDPA: no ``s_q^2``),
    ``11 L h_q + 4 P h_q + 2 P D_v`` per cross-attention of the ``L`` queries to ``P`` image tokens of width
    ``D_v``, and ``ln_vision``'s fp32 input and output ``8 P D_v``; ``2 s_q h_q`` per checkpointed layer."""
    q, v = config.qformer, config.vision
    s_q, h_q, p = q.num_queries + min(setup.instruction_len, q.max_text_length), q.hidden_size, v.num_tokens
    cross = 11 * q.num_queries * h_q + 4 * p * h_q + 2 * p * v.width
    n_cross = math.ceil(q.num_layers / q.cross_attention_frequency)
    ln_vision = 8 * p * v.width
    layer = 34 * s_q * h_q
    if setup.checkpointing:
        return q.num_layers * 2 * s_q * h_q + ln_vision, layer + cross
    return q.num_layers * layer + n_cross * cross + ln_vision, 0.0


def activation_bytes(config: VistaLLMConfig, stage: int, setup: Setup) -> tuple[float, float]:
    """(bytes per GPU, saved bytes per sample) of the activations at the peak, the start of the backward.

    The peak is the saved activations of the batch plus the largest transient of the backward plus
    batch-free tensors. Per sample: the decoder layers (:func:`llm_layer_bytes`, or ``2sh`` each under
    checkpointing), the final RMSNorm, the head on the ``t`` answer positions only (bf16 logits and fp32
    log-probabilities ``6tV``; its gradients, ``10tV``, are the transient unless a recomputed layer is
    larger), a 1-byte ``s x s`` attention mask and the QFormer per image (:func:`_qformer_bytes`). Batch-free:
    peft's merged head for LoRA's added rows (``2Vh``). The frozen EVA runs under ``torch.no_grad()``.
    """
    from lightning_gpv.models.vistallm.tokenization import added_tokens

    lc, s, t = config.llm, setup.seq_len, setup.answer_len
    vocab = lc.vocab_size + len(added_tokens(config.codec))
    lora = lc.lora is not None
    kind = "frozen" if stage == 2 else ("lora" if lora else "trained")
    full_layer = llm_layer_bytes(s, lc, kind)
    trained_ends = stage == 1 and not lora  # the final norm and the head train
    saved = lc.num_layers * (2 * s * lc.hidden_size if setup.checkpointing else full_layer)
    saved += 4 * s * lc.hidden_size + 4 * s + (2 * s * lc.hidden_size if trained_ends else 0)  # final norm
    saved += 6 * t * vocab + (2 * t * lc.hidden_size if stage == 1 else 0) + s * s  # head, mask
    qformer_saved, qformer_layer = _qformer_bytes(config, setup)
    saved += setup.images_per_sample * qformer_saved
    transient = max(10 * t * vocab, full_layer if setup.checkpointing else 0.0, qformer_layer)
    shared = 2 * vocab * lc.hidden_size if lora and stage == 1 and lc.lora.train_added_tokens else 0.0
    return setup.batch_size * (saved + transient) + shared, saved


def plan_model(
    config: VistaLLMConfig, stage: int, setup: Setup, label: str = "", counts: ParamCounts | None = None
) -> MemoryPlan:
    """The memory plan of ``config`` trained in ``stage`` under ``setup`` (``counts``: of the model, ``None``
    builds it on the meta device)."""
    counts = counts or ParamCounts.of(meta_model(config, stage))
    activations, per_sample = activation_bytes(config, stage, setup)
    return MemoryPlan(label=label, setup=setup, counts=counts, activations=activations,
                      activations_per_sample=per_sample, **state_bytes(counts, setup))  # fmt: skip


def plan_preset(preset: str, mode: Mode, setup: Setup, llm_layers: int | None = None) -> MemoryPlan:
    """The memory plan of a preset (``"7b"``, ``"13b"``, ``"smollm2"``, ``"tiny"``) in a mode."""
    layers = f" ({llm_layers} LLM layers)" if llm_layers is not None else ""
    config = config_for(preset, mode, llm_layers)
    return plan_model(config, MODES[mode][0], setup, label=f"{preset} {mode}{layers}")


def _gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def format_plan(plan: MemoryPlan) -> str:
    """A few lines: the set-up, the parameter counts and the GiB per GPU of each part."""
    s, c = plan.setup, plan.counts
    strategy = f"FSDP {s.sharding}, {s.shards}-way" if s.fsdp else "no FSDP"
    verdict = "fits" if plan.fits else "does NOT fit"
    return "\n".join([
        f"{plan.label}: {s.gpus} x {s.gpu_memory:g} GiB, {strategy}, {s.precision}, "
        f"batch {s.batch_size} x {s.seq_len} tokens, checkpointing {'on' if s.checkpointing else 'off'}",
        f"  parameters {c.total / 1e9:.3f}B, trainable {c.trainable / 1e9:.3f}B, with gradients "
        f"{c.with_grad / 1e9:.3f}B",
        f"  GiB per GPU: weights {_gib(plan.weights)}, gradients {_gib(plan.gradients)}, AdamW "
        f"{_gib(plan.optimizer)}, buffers {_gib(plan.buffers)}, activations {_gib(plan.activations)} "
        f"({plan.activations_per_sample / GIB:.3f} per sample)",
        f"  total {_gib(plan.total)} of {_gib(plan.usable)} usable: {verdict} "
        f"(headroom {_gib(plan.headroom)})",
    ])  # fmt: skip


def table(
    presets: Sequence[str] = ("7b", "13b"),
    modes: Sequence[Mode] = ("stage1", "stage2", "lora"),
    gpu_setups: Sequence[tuple[int, float]] = TABLE_GPUS,
    **setup: Any,
) -> str:
    """A markdown table of the plans of ``presets`` x ``modes`` x ``gpu_setups`` (other ``Setup`` fields from
    ``setup``); each model is built once."""
    lines = [
        "| model | mode | GPUs | trainable | weights | grads | AdamW | buffers | activations | total "
        "| fits |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for preset in presets:
        for mode in modes:
            config = config_for(preset, mode)
            counts = ParamCounts.of(meta_model(config, MODES[mode][0]))
            for gpus, memory in gpu_setups:
                p = plan_model(
                    config, MODES[mode][0], Setup(gpus=gpus, gpu_memory=memory, **setup), counts=counts
                )
                verdict = f"yes (+{_gib(p.headroom)})" if p.fits else f"no ({_gib(p.headroom)})"
                lines.append(
                    f"| {preset} | {mode} | {gpus} x {memory:g} | {counts.trainable / 1e9:.2f}B | "
                    f"{_gib(p.weights)} | {_gib(p.gradients)} | {_gib(p.optimizer)} | {_gib(p.buffers)} | "
                    f"{_gib(p.activations)} | {_gib(p.total)} | {verdict} |"
                )
    return "\n".join(lines)


def recipe_setup(path: str | Path) -> tuple[VistaLLMConfig, int, str, dict[str, Any]]:
    """What a VistaLLM recipe fixes: ``(config, stage, mode, Setup fields)``.

    Reads ``model.init_args.config`` and ``stage``, ``data.init_args.batch_size``, ``trainer.devices x
    num_nodes`` (the devices of one node under ``HYBRID_SHARD``), ``trainer.precision`` and the strategy's
    ``sharding_strategy`` and ``activation_checkpointing`` (a non-FSDP strategy plans a plain module).

    Raises:
        ValueError: Not a VistaLLM recipe, or a field the plan cannot use.
    """
    import yaml

    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    model = recipe.get("model") or {}
    if not str(model.get("class_path", "")).endswith("VistaLLMModule"):
        raise ValueError(f"{path}: the plan reads VistaLLM recipes (model.class_path ...VistaLLMModule)")
    init = model.get("init_args") or {}
    config = VistaLLMConfig.resolve(init.get("config"))
    stage = int(init.get("stage", 1))
    mode = "stage2" if stage == 2 else ("lora" if config.llm.lora is not None else "stage1")
    trainer = recipe.get("trainer") or {}
    fields: dict[str, Any] = {}
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1))
    devices = len(devices) if isinstance(devices, list) else devices
    if not isinstance(devices, int):
        raise ValueError(f"{path}: trainer.devices must be a number or a list to plan, got {devices!r}")
    strategy = trainer.get("strategy")
    if isinstance(strategy, dict) and "FSDP" in str(strategy.get("class_path", "")):
        args = strategy.get("init_args") or {}
        name = str(args.get("sharding_strategy", "FULL_SHARD")).upper()
        if name not in SHARDING_NAMES:
            raise ValueError(f"{path}: unknown sharding_strategy {name!r}")
        fields["sharding"] = SHARDING_NAMES[name]
        fields["checkpointing"] = bool(args.get("activation_checkpointing", True))
        fields["gpus"] = devices if name == "HYBRID_SHARD" else devices * nodes
    else:
        fields.update(fsdp=False, gpus=devices * nodes, checkpointing=config.llm.gradient_checkpointing)
    precision = str(trainer.get("precision", "bf16-mixed"))
    if precision in ("bf16-mixed", "bf16-true"):
        fields["precision"] = precision
    batch = ((recipe.get("data") or {}).get("init_args") or {}).get("batch_size")
    if batch is not None:
        fields["batch_size"] = int(batch)
    return config, stage, mode, fields


def recipe_assumptions(path: str | Path, given: Sequence[str]) -> list[str]:
    """What the plan of a recipe assumes beyond the recipe: one line each for a CPU recipe (planned as on
    GPUs), a precision the plan does not model (bf16-mixed planned), and the sequence length (``Setup``'s
    default unless ``--seq-len`` is in ``given``, the options set on the command line)."""
    import yaml

    trainer = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("trainer") or {}
    notes = []
    if str(trainer.get("accelerator", "")).lower() == "cpu" and "gpu_memory" not in given:
        notes.append("the recipe runs on the CPU (trainer.accelerator: cpu): planned as on GPUs of 80 GiB")
    precision = trainer.get("precision")
    if str(precision) not in ("bf16-mixed", "bf16-true") and "precision" not in given:
        what = "no trainer.precision (32-true)" if precision is None else f"precision {precision!r}"
        notes.append(f"the recipe sets {what}, not planned: bf16-mixed assumed (--precision)")
    if "seq_len" not in given:
        notes.append(f"{Setup.seq_len} tokens per sample assumed (--seq-len: prompt, 32 per image, answer)")
    return notes


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-gpv plan`` arguments (every option defaults to ``None``: the recipe's value or
    ``Setup``'s default)."""
    parser = argparse.ArgumentParser(
        prog="lightning-gpv plan",
        description="Memory per GPU of a VistaLLM training run (formulas: pydoc lightning_gpv.plan).",
    )
    add = parser.add_argument
    add("-c", "--config", metavar="RECIPE", help="a VistaLLM recipe: model, stage, batch, GPUs, strategy")
    add("--preset", choices=sorted(VistaLLMConfig.presets()), help="model preset (default 7b)")
    add("--mode", choices=sorted(MODES), help="stage1, stage2 or lora (stage 1 with LoRA); default stage1")
    add("--llm-layers", type=int, help="LLM decoder layers instead of the preset's")
    add("--gpus", type=int, help="GPUs sharded over (default 8)")
    add("--gpu-memory", type=float, help="memory of one GPU in GiB (default 80)")
    add("--batch-size", type=int, help="samples per GPU (default 4)")
    add("--seq-len", type=int, help="padded LLM tokens per sample (default 1024)")
    add("--answer-len", type=int, help="answer tokens per sample (default 66)")
    add("--instruction-len", type=int, help="QFormer instruction tokens (default 128)")
    add("--images-per-sample", type=int, help="images per sample (default 1)")
    add("--checkpointing", action=argparse.BooleanOptionalAction, help="checkpoint activations (default on)")
    add("--sharding", choices=["full", "grad_op", "none"], help="FSDP sharding (default full)")
    add("--precision", choices=["bf16-mixed", "bf16-true"], help="Trainer precision (default bf16-mixed)")
    add("--strategy", choices=["fsdp", "plain"], help="FSDP (default) or a plain module per GPU")
    add("--reserve", type=float, help="fraction of GPU memory kept free (default 0.1)")
    add("--table", action="store_true", help="print the 7B/13B x modes x GPU set-ups table (markdown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-gpv plan``: print a plan or ``--table``.

    Returns:
        The exit code: 0 (fits, or the table), 1 (does not fit); bad arguments exit with 2 (argparse).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [field.name for field in dataclasses.fields(Setup) if field.name != "fsdp"]
    fields = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.strategy is not None:
        fields["fsdp"] = args.strategy == "fsdp"
    if args.table and (args.config or args.preset or args.mode or args.llm_layers):
        parser.error("argument --table: prints the 7b and 13b presets in every mode; drop -c/--preset/--mode")
    if args.config and (args.preset or args.mode or args.llm_layers):
        parser.error("argument -c/--config: the recipe fixes the model and stage; drop --preset/--mode")
    if args.config:
        try:
            config, stage, mode, recipe_fields = recipe_setup(args.config)
        except (OSError, ValueError) as err:
            parser.error(f"argument -c/--config: {err}")
        fields = {**recipe_fields, **fields}
    try:
        if args.table:
            fields = {k: v for k, v in fields.items() if k not in ("gpus", "gpu_memory")}
            Setup(**fields)  # validates the values before any model is built
            print(table(**fields))
            return 0
        if args.config:
            plan = plan_model(config, stage, Setup(**fields), f"{args.config} ({mode})")
        else:
            plan = plan_preset(args.preset or "7b", args.mode or "stage1", Setup(**fields), args.llm_layers)
    except ValueError as err:  # Setup's and config_for's messages start with the field's name
        parser.error(f"argument --{str(err).split(' ', 1)[0].replace('_', '-')}: {err}")
    if args.config:
        given = [name for name in names if getattr(args, name) is not None]
        for note in recipe_assumptions(args.config, given):
            print(f"note: {note}")
    print(format_plan(plan))
    return 0 if plan.fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
