"""lightning-gpv: general-purpose vision-language models (GPV-1, VistaLLM) in PyTorch Lightning."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``from lightning_gpv import Predictor`` without importing torch and the models for every submodule.
    if name == "Predictor":
        from lightning_gpv.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'lightning_gpv' has no attribute {name!r}")


__all__ = ["Predictor", "__version__"]
