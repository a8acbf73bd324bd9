"""Lightning hook bodies shared by the systems."""

from __future__ import annotations

from lightning.pytorch import LightningModule

from lightning_gpv.tasks.processing import SampleProcessor


def connect_datamodule(module: LightningModule, processor: SampleProcessor) -> None:
    """Hand ``processor`` to the trainer's data module unless it already has one.

    Called from the systems' ``setup`` so that a data module built without a processor (a notebook, a
    script passing ``datamodule=`` to ``Trainer.fit``) yields the model's batches. A data module connected
    earlier (constructor, the CLI) keeps its processor.
    """
    trainer = module._trainer  # the ``trainer`` property raises when the module is not attached
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None or not hasattr(datamodule, "connect"):
        return
    if getattr(datamodule, "processor", None) is None:
        datamodule.connect(processor)
