"""``lightning-gpv pretrain-encoder``: pretrain a tiny model's image side on ShapesWorld and write its weight
file and card.

    cd lightning_gpv/pretrained
    lightning-gpv pretrain-encoder --part vision --out shapes_eva_tiny.safetensors
    lightning-gpv pretrain-encoder --part tokenizer --out shapes_qformer_tiny.safetensors
    lightning-gpv pretrain-encoder --part detr --out shapes_detr_tiny.safetensors

``--part vision``: the tiny VistaLLM image encoder (:mod:`.encoder`); ``tokenizer``: the tiny VistaLLM
instruction-guided tokenizer over the shipped (or ``--vision``) encoder (:mod:`.tokenizer`); ``detr``: the
tiny GPV-1 DETR (:mod:`.detr`). Each writes ``OUT`` (``encoder.*`` and ``heads.*`` tensors, safetensors) and
its card beside it (``.json``: command, seed, settings, SHA-256 and the quality on a held-out sample; see
:mod:`lightning_gpv.models.shipped`). An existing ``OUT`` is kept unless ``--overwrite``; the files are
written under temporary names and renamed, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lightning_gpv.models import shipped
from lightning_gpv.models.hub import shareable
from lightning_gpv.models.vistallm.config import TINY_VISION_WEIGHTS, VisionConfig, VistaLLMConfig
from lightning_gpv.pretraining.targets import PatchTargets, make_pool
from lightning_gpv.shapesworld.files import sha256
from lightning_gpv.shapesworld.sample import SPARSE_STYLE, SceneStyle
from lightning_gpv.shapesworld.scene import GENERATOR_VERSION

STYLES: dict[str, SceneStyle] = {"sparse": SPARSE_STYLE, "full": SceneStyle()}
"""Worlds the pool may mix (``--styles``): the demo's sparse one and ShapesWorld's default."""
HELD_OUT_START = 10_000_000
"""First image index of the held-out pool: far past any training pool, so the two never overlap."""
DEFAULTS: dict[str, dict[str, Any]] = {
    "vision": {"num_images": 24000, "steps": 12000, "batch_size": 64, "lr": 2e-3, "held_out": 1000},
    "tokenizer": {"num_images": 6000, "steps": 12000, "batch_size": 32, "lr": 2e-3, "held_out": 300},
    "detr": {"num_images": 16000, "steps": 6000, "batch_size": 32, "lr": 2e-3, "held_out": 1000},
}
"""Per ``--part``: the settings the shipped files were trained with."""
DETR_IMAGE_SIZE = (96, 96)
"""The tiny GPV-1 recipe's image size, which the DETR is pretrained at."""


def held_out_pool(config: VisionConfig, seed: int, num_images: int, styles: Sequence[str]) -> PatchTargets:
    """The held-out sample the vision card's quality is measured on (images from :data:`HELD_OUT_START`)."""
    return make_pool(num_images, seed=seed, styles=[STYLES[s] for s in styles], image_size=config.image_size,
                     patch_size=config.patch_size, start=HELD_OUT_START)  # fmt: skip


def save(path: Path, tensors: dict[str, torch.Tensor], card: dict[str, object]) -> None:
    """Write the tensors and the card (with the file's SHA-256) under temporary names, then rename them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary))
    shareable(temporary)
    card = {**card, "sha256": sha256(temporary), "bytes": temporary.stat().st_size}
    card_temporary = path.with_name(f".{path.stem}.json.partial")
    card_temporary.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    os.replace(card_temporary, shipped.card_path(path))


def prefixed(encoder: torch.nn.Module, heads: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The file layout: ``encoder.`` + the kept module's state dict, ``heads.`` + the read-outs'."""
    tensors = {shipped.ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
    return tensors | {shipped.HEADS_PREFIX + k: v for k, v in heads.state_dict().items()}


Log = Callable[[int, dict[str, float]], None]
Trained = tuple[dict[str, torch.Tensor], dict[str, float], dict[str, Any]]
"""What a part returns: the tensors to save, the held-out quality, and what else goes into the card."""


def run_vision(args: argparse.Namespace, log: Log) -> Trained:
    """Pretrain the tiny VistaLLM image encoder (:mod:`lightning_gpv.pretraining.encoder`)."""
    from lightning_gpv.pretraining.encoder import PretrainSettings, evaluate, pretrain

    config = VistaLLMConfig.tiny(pretrained=False).vision
    settings = PretrainSettings(args.steps, args.batch_size, args.lr, seed=args.seed)
    pool = make_pool(args.num_images, seed=args.seed, styles=[STYLES[s] for s in args.styles],
                     image_size=config.image_size, patch_size=config.patch_size)  # fmt: skip
    encoder, heads = pretrain(config, pool, settings, log=log, log_every=max(1, min(200, args.steps // 10)))
    quality = evaluate(encoder, heads, held_out_pool(config, args.seed, args.held_out, args.styles), config)
    extra = {
        "settings": asdict(settings),
        "vision": {k: v for k, v in asdict(config).items() if k != "checkpoint"},
    }
    return prefixed(encoder, heads), quality, extra


def run_tokenizer(args: argparse.Namespace, log: Log) -> Trained:
    """Pretrain the tiny VistaLLM tokenizer over a frozen encoder (:mod:`.tokenizer`)."""
    from lightning_gpv.models.vistallm.build import build_vistallm
    from lightning_gpv.pretraining.tokenizer import (
        TokenizerSettings,
        evaluate_tokenizer,
        make_referring_pool,
        pretrain_tokenizer,
    )

    tiny = VistaLLMConfig.tiny(pretrained=False)
    # BERT's 0.02 init: over a pretrained encoder the tiny preset's wide init (kept for a random encoder)
    # learns to select the referred object several times slower.
    qformer = replace(tiny.qformer, initializer_range=0.02)
    config = replace(tiny, vision=replace(tiny.vision, checkpoint=args.vision), qformer=qformer)
    torch.manual_seed(args.seed)
    model, processor = build_vistallm(config, load_weights=True)
    pad_id = int(processor.qformer_tokenizer.pad_token_id)
    style = STYLES[args.styles[0]]
    pool = make_referring_pool(processor, args.num_images, seed=args.seed, style=style)
    held = make_referring_pool(processor, args.held_out, seed=args.seed, style=style, start=HELD_OUT_START)
    settings = TokenizerSettings(args.steps, args.batch_size, args.lr, seed=args.seed)
    head = pretrain_tokenizer(
        model, pool, pad_id, settings, log=log, log_every=max(1, min(250, args.steps // 10))
    )
    quality = evaluate_tokenizer(model, head, held, pad_id)
    extra = {
        "settings": asdict(settings),
        "expressions": {"train": len(pool), "held_out": len(held)},
        "vision_weights": {
            "file": Path(args.vision).name,
            "sha256": sha256(shipped.resolve(args.vision)),
        },
        "qformer": asdict(qformer),
    }
    return prefixed(model.tokenizer, head), quality, extra


def run_detr(args: argparse.Namespace, log: Log) -> Trained:
    """Pretrain the tiny GPV-1 DETR (:mod:`lightning_gpv.pretraining.detr`)."""
    from lightning_gpv.models.gpv1.config import GPV1Config
    from lightning_gpv.pretraining.detr import (
        DetrPretrainSettings,
        detr_tensors,
        evaluate_detr,
        make_detr_pool,
        pretrain_detr,
    )

    config = GPV1Config.tiny(image_size=list(DETR_IMAGE_SIZE))
    styles = [STYLES[s] for s in args.styles]
    pool = make_detr_pool(args.num_images, seed=args.seed, styles=styles, image_size=DETR_IMAGE_SIZE)
    held = make_detr_pool(args.held_out, seed=args.seed, styles=styles, image_size=DETR_IMAGE_SIZE,
                          start=HELD_OUT_START)  # fmt: skip
    settings = DetrPretrainSettings(
        args.steps, args.batch_size, args.lr, region_weight=args.region_weight, seed=args.seed
    )
    encoder, heads = pretrain_detr(config.visual, config.hidden_size, pool, settings, log=log,
                                   log_every=max(1, min(200, args.steps // 10)))  # fmt: skip
    quality = evaluate_detr(encoder, heads, held)
    extra = {"settings": asdict(settings), "image_size": list(DETR_IMAGE_SIZE), "detr": asdict(config.visual)}
    return detr_tensors(encoder, heads), quality, extra


PARTS: dict[str, Callable[[argparse.Namespace, Log], Trained]] = {
    "vision": run_vision,
    "tokenizer": run_tokenizer,
    "detr": run_detr,
}


def _per_part(name: str) -> str:
    """``--help``'s default of a :data:`DEFAULTS` setting: ``"vision 12000, tokenizer 12000, detr 6000"``."""
    return ", ".join(f"{part} {settings[name]:g}" for part, settings in DEFAULTS.items())


def parser() -> argparse.ArgumentParser:
    """The command's arguments (``None`` defaults come from :data:`DEFAULTS` for the chosen part)."""
    p = argparse.ArgumentParser(
        prog="lightning-gpv pretrain-encoder", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    p.add_argument(
        "--part", choices=sorted(PARTS), default="vision", help="what to pretrain (default vision)"
    )
    p.add_argument(
        "--out", required=True, help="weight file to write (.safetensors; the card goes beside it)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--num-images", type=int, help=f"training images (default {_per_part('num_images')})")
    p.add_argument(
        "--held-out", type=int, help=f"held-out images for the card (default {_per_part('held_out')})"
    )
    p.add_argument("--styles", nargs="+", choices=sorted(STYLES), default=["sparse"],
                   help="worlds mixed in the pool, image i from styles[i %% n]")  # fmt: skip
    p.add_argument("--steps", type=int, help=f"optimizer steps (default {_per_part('steps')})")
    p.add_argument("--batch-size", type=int, help=f"images per step (default {_per_part('batch_size')})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {_per_part('lr')})")
    p.add_argument(
        "--vision", default=TINY_VISION_WEIGHTS, help="tokenizer: the frozen encoder's weight file"
    )
    p.add_argument("--region-weight", type=float, default=0.0,
                   help="detr: weight of the RoI shape and colour heads (default 0: none)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the pool, the init and the batch order")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (2 for bad arguments, as argparse)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    for name, value in DEFAULTS[args.part].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        parser().error(f"--out {out}: the weight file must end in .safetensors")
    if out.exists() and not args.overwrite:
        parser().error(f"--out {out} exists; pass --overwrite to replace it")
    for name in ("num_images", "held_out", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser().error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()

    def log(step: int, values: dict[str, float]) -> None:
        print(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)

    tensors, quality, extra = PARTS[args.part](args, log)
    print("pretrain-encoder: held-out quality " + json.dumps({k: round(v, 4) for k, v in quality.items()}))
    card = {
        "command": "lightning-gpv pretrain-encoder " + shlex.join(argv),
        "part": args.part,
        "seed": args.seed,
        "pool": {
            "num_images": args.num_images,
            "styles": args.styles,
            "generator_version": GENERATOR_VERSION,
        },
        "held_out": {"num_images": args.held_out, "start": HELD_OUT_START},
        "parameters": sum(v.numel() for k, v in tensors.items() if k.startswith(shipped.ENCODER_PREFIX)),
        "quality": quality,
        "seconds": round(time.monotonic() - start, 1),
        "torch": torch.__version__,
        **extra,
    }
    save(out, tensors, card)
    print(f"pretrain-encoder: wrote {out} and {shipped.card_path(out)}")
    return 0
