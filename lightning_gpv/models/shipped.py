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
    ours = module.state_dict()
    missing = sorted(k for k in set(ours) - set(weights) if not k.startswith(skip))
    unexpected = sorted(set(weights) - set(ours))
    wrong = sorted(k for k in set(ours) & set(weights) if ours[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise WeightFileError(
            f"{path}: its encoder weights do not fit the configured encoder (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shapes {wrong[:3]}); check the config's dimensions"
        )
    module.load_state_dict(weights, strict=not skip)
    return path
