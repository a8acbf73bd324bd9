"""LightningModules: losses, metrics, optimizers and schedules around ``lightning_gpv.models``."""

from lightning.pytorch import LightningModule

from lightning_gpv.systems.gpv1 import GPV1Module
from lightning_gpv.systems.vistallm import VistaLLMModule

SYSTEMS: dict[str, type[LightningModule]] = {"gpv1": GPV1Module, "vistallm": VistaLLMModule}
"""Model family (a saved folder's ``config.json`` ``family``) -> its system."""

__all__ = ["SYSTEMS", "GPV1Module", "VistaLLMModule"]
