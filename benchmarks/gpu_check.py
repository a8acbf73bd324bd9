"""The steps of ``benchmarks/gpu_check.sh`` and the comparison of the memory plan with the measured peak.

    python benchmarks/gpu_check.py prepare OUT_DIR [--steps 50] [--preset 7b] [--mode full] [--batch-size 8]
        [--gpu-memory GIB] [--accelerator gpu] [--fsdp2] [--dry-run]
    python benchmarks/gpu_check.py compare OUT_DIR

``prepare`` writes the tiny recipes pointed at ``OUT_DIR/data``, ``OUT_DIR/steps.tsv`` (one step a line: name,
time limit in seconds, shell command) and ``OUT_DIR/plan.json``: the memory plan (:mod:`lightning_gpv.plan`,
``--strategy plain --precision bf16-true``, as ``benchmarks/vistallm_gpu.py`` trains) of the throughput shape,
full width with as many LLM layers as the plan fits in the GPU (``--gpu-memory``, else the memory CUDA
reports, else 80 GiB). With ``--dry-run`` it only validates the arguments and prints the
steps and the plan, so it runs without a GPU. ``compare`` reads ``plan.json`` and the throughput result and
writes ``OUT_DIR/plan_vs_measured.json`` and the summary lines ``OUT_DIR/plan_vs_measured.txt``.

``--accelerator cpu`` (with ``--preset tiny``) runs the same steps on a CPU, to try the script without a GPU.
``--fsdp2`` adds a step: the tiny VistaLLM fit under ``lightning_gpv.strategies_fsdp2.VistaLLMFSDP2Strategy``
(75 s more, beyond the 8 minutes of the default steps).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: ``compare`` needs no torch (it runs under a 30 s limit)
    from lightning_gpv.plan import MemoryPlan

REPO = Path(__file__).resolve().parents[1]
MODES = {"full": "stage1", "lora": "lora", "stage2": "stage2"}
"""``vistallm_gpu.py --mode`` -> the plan's mode."""
PROMPT_LEN, ANSWER_LEN, INSTRUCTION_LEN = 160, 66, 64
"""The synthetic batch of ``vistallm_gpu.py`` (its defaults): 160 prompt tokens (32 visual), a 66-token answer
(a 32-point mask), 64 QFormer instruction tokens."""
FSDP_STRATEGY = """\
# Merged into the tiny VistaLLM recipe (a second -c): the FSDP preset on one GPU.
trainer:
  strategy:
    class_path: lightning_gpv.strategies.VistaLLMFSDPStrategy
    init_args: {sharding_strategy: FULL_SHARD, activation_checkpointing: true}
"""
FSDP2_STRATEGY = """\
# Merged into the tiny VistaLLM recipe with --fsdp2: the FSDP2 preset on one GPU.
trainer:
  strategy:
    class_path: lightning_gpv.strategies_fsdp2.VistaLLMFSDP2Strategy
    init_args: {activation_checkpointing: true}
"""
RESERVE = 0.15
"""Fraction of GPU memory the layer choice leaves free (the plan's 10% plus a margin for its error)."""


@dataclass(frozen=True)
class Step:
    """One time-boxed step: ``name`` (its log: ``OUT_DIR/<name>.log``), ``limit`` in seconds, ``command``."""

    name: str
    limit: int
    command: str


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _memory(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="write the recipes, steps.tsv and plan.json")
    prepare.add_argument("out_dir", type=Path)
    prepare.add_argument("--steps", type=_positive, default=50, help="training steps of each tiny fit")
    prepare.add_argument("--preset", choices=["7b", "13b", "tiny"], default="7b", help="throughput model")
    prepare.add_argument("--mode", choices=sorted(MODES), default="full", help="throughput mode")
    prepare.add_argument("--batch-size", type=_positive, default=8, help="throughput batch")
    prepare.add_argument("--gpu-memory", type=_memory, default=None, help="GiB of the GPU (default: CUDA's)")
    prepare.add_argument("--accelerator", choices=["gpu", "cpu"], default="gpu")
    prepare.add_argument("--dry-run", action="store_true", help="print the steps and the plan; write nothing")
    prepare.add_argument(
        "--fsdp2", action="store_true", help="also fit the tiny VistaLLM under the FSDP2 preset (75 s more)"
    )
    compare = commands.add_parser("compare", help="plan vs measured peak memory")
    compare.add_argument("out_dir", type=Path)
    return parser


def gpu_memory_gib(given: float | None) -> tuple[float, str]:
    """The GPU memory to plan for and where it comes from."""
    if given is not None:
        return given, "--gpu-memory"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 2**30, torch.cuda.get_device_name(0)
    return 80.0, "assumed (no CUDA device)"


def throughput_plan(preset: str, mode: str, batch_size: int, memory: float) -> tuple[int, MemoryPlan]:
    """``(LLM layers, plan)`` of the largest depth (full width) whose plan fits in ``memory`` GiB (1 layer if
    none does)."""
    from lightning_gpv.plan import Setup, config_for, plan_model

    setup = Setup(gpus=1, gpu_memory=memory, batch_size=batch_size, seq_len=PROMPT_LEN + ANSWER_LEN,
                  answer_len=ANSWER_LEN, instruction_len=INSTRUCTION_LEN, checkpointing=True, fsdp=False,
                  precision="bf16-true", reserve=RESERVE)  # fmt: skip

    def plan(layers: int) -> MemoryPlan:
        config = config_for(preset, MODES[mode], layers)
        return plan_model(
            config, 2 if mode == "stage2" else 1, setup, f"{preset} {mode}, {layers} LLM layers"
        )

    low, high = 1, config_for(preset, MODES[mode]).llm.num_layers
    best = plan(high)
    if best.fits:
        return high, best
    while low < high:  # the largest depth that fits, by bisection (memory grows with the depth)
        middle = (low + high + 1) // 2
        if plan(middle).fits:
            low = middle
        else:
            high = middle - 1
    return low, plan(low)


def steps(out: Path, args: argparse.Namespace, llm_layers: int) -> list[Step]:
    """The steps in order; every command runs from the repository root."""
    py = shlex.quote(sys.executable)
    cli = f"{py} -m lightning_gpv.cli"
    q = {name: shlex.quote(str(out / name)) for name in ("data", "vocab", "recipes", "runs")}
    overrides = (
        f"--trainer.accelerator={args.accelerator} --trainer.devices=1 --trainer.precision=bf16-mixed "
        f"--trainer.max_steps={args.steps} --trainer.logger=false --trainer.enable_progress_bar=false"
    )

    def fit(recipe: str, run: str, extra: str = "") -> str:
        # The configs first: later arguments override the recipe's values (accelerator: cpu, max_epochs).
        root = f"--trainer.default_root_dir={q['runs']}/{run}"
        return f"{cli} fit -c {q['recipes']}/{recipe}.yaml{extra} {overrides} {root}"

    device = "cuda" if args.accelerator == "gpu" else "cpu"
    result = shlex.quote(str(out / "throughput.json"))
    fsdp = f" -c {q['recipes']}/fsdp_strategy.yaml"  # a second config merges into the first
    fsdp2 = [Step("fsdp2_vistallm", 75, fit("vistallm_shapes", "fsdp2_vistallm",
                                            f" -c {q['recipes']}/fsdp2_strategy.yaml"))]  # fmt: skip
    return [
        Step("data", 60, f"{cli} make-shapes --root {q['data']} --num-images 120 --seed 0 --max-objects 3 "
                         "--backgrounds plain --sizes medium large --no-progress && "
                         f"{cli} build-vocab --coco-root {q['data']}/coco --vqa-root {q['data']}/vqav2 "
                         f"--out {q['vocab']} --tiny"),
        Step("tiny_vistallm_bf16", 60, fit("vistallm_shapes", "tiny_vistallm")),
        Step("tiny_gpv1_bf16", 60, fit("gpv1_shapes", "tiny_gpv1")),
        Step("fsdp_vistallm", 75, fit("vistallm_shapes", "fsdp_vistallm", fsdp)),
        *(fsdp2 if args.fsdp2 else []),
        Step("throughput", 130, f"{py} benchmarks/vistallm_gpu.py --preset {args.preset} --mode {args.mode} "
                                f"--batch-size {args.batch_size} --llm-layers {llm_layers} --steps 10 "
                                f"--warmup 3 --device {device} --out {result}"),
        Step("compare", 30, f"{py} benchmarks/gpu_check.py compare {shlex.quote(str(out))}"),
    ]  # fmt: skip


def prepare(args: argparse.Namespace) -> int:
    out = args.out_dir.resolve()
    memory, source = gpu_memory_gib(args.gpu_memory)
    layers, plan = throughput_plan(args.preset, args.mode, args.batch_size, memory)
    todo = steps(out, args, layers)
    line = (f"plan: {plan.label}, batch {args.batch_size} x {PROMPT_LEN + ANSWER_LEN} tokens, bf16, no FSDP: "
            f"predicted peak {plan.total / 2**30:.1f} GiB of {memory:.1f} GiB ({source}), "
            f"{'fits' if plan.fits else 'does NOT fit'}")  # fmt: skip
    if args.dry_run:
        for step in todo:
            print(f"[{step.name}, {step.limit} s] {step.command}")
        print(line)
        return 0
    from lightning_gpv.demo import tiny_recipe

    out.mkdir(parents=True, exist_ok=True)
    for name in ("vistallm_shapes", "gpv1_shapes"):
        vocab = out / "vocab" if name.startswith("gpv1") else None
        tiny_recipe(name, out / "data", vocab, out / "recipes" / f"{name}.yaml")
    (out / "recipes" / "fsdp_strategy.yaml").write_text(FSDP_STRATEGY, encoding="utf-8")
    (out / "recipes" / "fsdp2_strategy.yaml").write_text(FSDP2_STRATEGY, encoding="utf-8")
    with open(out / "steps.tsv", "w", encoding="utf-8") as f:
        f.writelines(f"{step.name}\t{step.limit}\t{step.command}\n" for step in todo)
    result = {**plan.to_dict(), "preset": args.preset, "mode": args.mode, "llm_layers": layers,
              "gpu_memory_gib": memory, "gpu_memory_source": source}  # fmt: skip
    (out / "plan.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(line)
    return 0


def compare(out: Path) -> int:
    """Write ``plan_vs_measured.json`` and ``.txt``; 1 when the plan or the measurement is missing."""
    try:
        plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
        measured = json.loads((out / "throughput.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        print(f"compare: no plan or throughput result ({err}); see prepare.log and throughput.log")
        return 1
    peak = measured.get("peak_memory_gib")
    ratio = round(peak / plan["total_gib"], 3) if peak and plan["total_gib"] else None
    parts = ", ".join(f"{name} {plan[f'{name}_gib']:.1f}" for name in
                      ("weights", "gradients", "optimizer", "buffers", "activations"))  # fmt: skip
    mfu = measured.get("mfu")
    lines = [
        f"throughput ({measured.get('device')}, {plan['label']}, batch {measured.get('batch_size')} x "
        f"{measured.get('seq_len')} tokens): {measured.get('tokens_per_s')} tokens/s, "
        f"{measured.get('samples_per_s')} samples/s, MFU {mfu if mfu is not None else 'n/a'}, "
        f"peak {peak} GiB allocated / {measured.get('peak_reserved_gib')} GiB reserved",
        f"plan vs measured: predicted {plan['total_gib']:.1f} GiB ({parts}), measured peak {peak} GiB "
        f"allocated: measured/predicted {ratio}",
    ]
    record = {"predicted_gib": plan["total_gib"], "measured_peak_allocated_gib": peak, "ratio": ratio,
              "measured_peak_reserved_gib": measured.get("peak_reserved_gib"), "plan": plan,
              "throughput": measured}  # fmt: skip
    (out / "plan_vs_measured.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    (out / "plan_vs_measured.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        return prepare(args)
    return compare(args.out_dir.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
