"""``lightning-gpv export --ckpt_path CKPT --out DIR [--merge-lora | --adapter]``: a Lightning checkpoint of
either family to a self-contained model folder (``save_pretrained``), loadable offline without the base
models, or, for a VistaLLM trained with LoRA, to an adapter folder that holds only what training changed
and loads over the base models.

The checkpoint is read with ``torch.load(weights_only=True)``; an FSDP checkpoint saved sharded (a folder of
``.distcp`` files) is consolidated first. The model is rebuilt as training built it, so the base models
its config names (the LLM and its tokenizer, BERT, DETR, EVA) must be reachable here, on disk or in the hub
cache; their weights are then replaced by the checkpoint's (GPV-1's vocabulary comes from the checkpoint
too). The folder written here needs none of them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule

from lightning_gpv.helptext import first_paragraph
from lightning_gpv.systems import SYSTEMS


def checkpoint_family(hparams: Mapping[str, Any], path: Path) -> str:
    """The family of a checkpoint's system, from the class path the CLI records, else from its
    hyper-parameters (GPV-1 has a ``vocab_path``, VistaLLM a ``stage``)."""
    class_path = str(hparams.get("_class_path", ""))
    for family, system in SYSTEMS.items():
        if class_path.endswith(f".{system.__name__}"):
            return family
    if "vocab_path" in hparams:
        return "gpv1"
    if "stage" in hparams:
        return "vistallm"
    raise ValueError(f"{path}: a checkpoint of neither GPV1Module nor VistaLLMModule")


def _consolidated(path: Path, workdir: Path) -> Path:
    """A single-file copy of an FSDP checkpoint saved sharded (a folder), or ``path`` itself."""
    if not path.is_dir():
        return path
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{path}: a folder, but not a sharded checkpoint (no .metadata)")
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    single = workdir / "consolidated.ckpt"
    dcp_to_torch_save(path, single)
    meta = path / "meta.pt"  # Lightning keeps the non-tensor state (hyper-parameters, loops) there
    checkpoint = torch.load(single, map_location="cpu", weights_only=True)
    if meta.is_file():
        checkpoint.update(torch.load(meta, map_location="cpu", weights_only=True))
    if "state_dict" not in checkpoint and "model" in checkpoint:
        checkpoint["state_dict"] = checkpoint.pop("model")
    torch.save(checkpoint, single)
    return single


def load_system(ckpt_path: str | Path) -> LightningModule:
    """The system a checkpoint holds, weights restored (no pretrained weights are downloaded)."""
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path: {path} does not exist")
    from lightning_gpv.cli import read_checkpoint  # the CLI module is heavy; export needs only this

    with tempfile.TemporaryDirectory() as workdir:
        single = _consolidated(path, Path(workdir))
        checkpoint = read_checkpoint(single, "--ckpt_path")  # single is path unless it was sharded
        hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
        if not isinstance(hparams, dict):
            raise ValueError(f"{path}: no hyper_parameters; not a checkpoint of a lightning-gpv system")
        family = checkpoint_family(hparams, path)
        # Built as in training (the base models give each sub-model its exact architecture), then the
        # checkpoint's weights, and GPV-1's vocabulary words and vectors, replace theirs.
        overrides = {"vocab_path": None} if family == "gpv1" else {}
        return SYSTEMS[family].load_from_checkpoint(
            single, map_location="cpu", weights_only=True, **overrides
        )


def export(
    ckpt_path: str | Path, out: str | Path, *, merge_lora: bool = False, adapter: bool = False
) -> Path:
    """Write the model folder of a checkpoint (``adapter``: a LoRA adapter folder); returns the folder."""
    if merge_lora and adapter:
        raise ValueError("--merge-lora and --adapter exclude each other")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out: {out} is a file; give a new folder")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out: {out} exists and is not empty; choose a new folder")
    system = load_system(ckpt_path)
    if not (merge_lora or adapter):
        return system.save_pretrained(out)
    flag = "--merge-lora" if merge_lora else "--adapter"
    if not isinstance(system, SYSTEMS["vistallm"]):
        raise ValueError(f"{flag}: only VistaLLM checkpoints have LoRA adapters")
    if system.config.llm.lora is None:
        raise ValueError(f"{flag}: {ckpt_path} was trained without LoRA; export the whole model (no flag)")
    return system.save_pretrained(out, merge_lora=merge_lora, adapter=adapter)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-gpv export``; returns the exit code (2 on bad input, with the reason)."""
    parser = argparse.ArgumentParser(prog="lightning-gpv export", description=first_paragraph(__doc__))
    parser.add_argument("--ckpt_path", required=True, help="Lightning checkpoint file or sharded FSDP folder")
    parser.add_argument("--out", required=True, help="new folder for the model (must not hold files)")
    parser.add_argument(
        "--merge-lora", action="store_true", help="fold VistaLLM's LoRA adapters into the LLM weights"
    )
    parser.add_argument(
        "--adapter",
        action="store_true",
        help="VistaLLM with LoRA: save only the trained weights (loads over the base models)",
    )
    args = parser.parse_args(argv)
    try:
        folder = export(args.ckpt_path, args.out, merge_lora=args.merge_lora, adapter=args.adapter)
    except (OSError, ValueError) as err:
        print(f"lightning-gpv export: error: {err}", file=sys.stderr)
        return 2
    print(f"lightning-gpv export: wrote {folder}")
    return 0
