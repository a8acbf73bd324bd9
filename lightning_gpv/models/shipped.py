"""Weight files that ship with the package (``lightning_gpv/pretrained/``): the tiny encoders pretrained on
ShapesWorld by ``lightning-gpv pretrain-encoder``.

Each ``NAME.safetensors`` holds the encoder's weights under ``encoder.`` (and the pretraining heads under
``heads.``, kept to re-measure its quality) and has a card ``NAME.json`` beside it: the command, seed and
settings that produced it, its SHA-256, and the quality measured on a held-out ShapesWorld sample.

A config field that names such a file (``VisionConfig.checkpoint``, ``QFormerConfig.checkpoint``,
``DetrEncoderConfig.checkpoint``) takes a path;
a bare file name that is not a file in the working directory is looked up here.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from lightning_gpv.errors import InputError

PRETRAINED_DIR = Path(str(resources.files("lightning_gpv") / "pretrained"))
"""Where the shipped weight files and their cards live."""

ENCODER_PREFIX = "encoder."
HEADS_PREFIX = "heads."


class WeightFileError(InputError):
    """A weight file named by a config is missing or does not fit the model it is loaded into."""


def resolve(name_or_path: str | Path) -> Path:
    """The file ``name_or_path`` names: a path as given when it exists, else a bare name among the shipped
    files.

    Raises:
        WeightFileError: Neither exists (the message lists the shipped files).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.name == str(name_or_path) and (PRETRAINED_DIR / path.name).is_file():
        return PRETRAINED_DIR / path.name
    shipped = sorted(p.name for p in PRETRAINED_DIR.glob("*.safetensors"))
    raise WeightFileError(f"{name_or_path}: no such weight file (shipped with the package: {shipped})")


def card_path(path: Path) -> Path:
    """The card (``.json``) beside a weight file."""
    return path.with_suffix(".json")


def read_card(path: Path) -> dict[str, Any]:
    """The card of the weight file ``path`` (``{}`` when it has none)."""
    card = card_path(path)
    return json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}


def read_part(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` under ``prefix``, with the prefix removed."""
    return {
        key[len(prefix) :]: value for key, value in load_file(str(path)).items() if key.startswith(prefix)
    }


def load_encoder(module: nn.Module, name_or_path: str | Path, skip: tuple[str, ...] = ()) -> Path:
    """Load the ``encoder.`` weights of a shipped or local file into ``module``; returns the file.

    Strict, except that parameters of ``module`` whose names start with a ``skip`` prefix keep their own
    values, whether the file has them or not (parts a model trains afresh, such as GPV-1's ``region_proj``).

    Raises:
        WeightFileError: The file is missing, or its weights do not fit ``module`` (the message names the
            file and the first differences).
    """
    path = resolve(name_or_path)
    weights = {k: v for k, v in read_part(path, ENCODER_PREFIX).items() if not k.startswith(skip)}
    ours = {k: v for k, v in module.state_dict().items() if not k.startswith(skip)}
    if differences := state_mismatch(ours, weights):
        raise WeightFileError(
            f"{path}: its encoder weights do not fit the configured encoder ({differences}); check the "
            "config's dimensions"
        )
    module.load_state_dict(weights, strict=not skip)
    return path


def state_mismatch(ours: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> str:
    """How ``weights`` fail to fit a module's state dict ``ours``: the first missing, unexpected and
    reshaped keys with their counts (``"missing [...] (18); other shapes [...] (2)"``), or ``""`` when every
    key and shape agrees."""
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    reshaped = sorted(k for k in set(ours) & set(weights) if ours[k].shape != weights[k].shape)
    found = {"missing": missing, "unexpected": unexpected, "other shapes": reshaped}
    return "; ".join(f"{name} {keys[:3]} ({len(keys)})" for name, keys in found.items() if keys)
