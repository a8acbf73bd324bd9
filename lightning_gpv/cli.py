"""The ``lightning-gpv`` command.

* ``lightning-gpv make-shapes --root DIR --num-images N --seed S``: write the ShapesWorld data set.
* ``lightning-gpv fit|validate|test|predict -c RECIPE.yaml``: the Lightning CLI, with the model and the
  data module chosen by ``class_path`` and the model's processor handed to the data module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class GPVLightningCLI(LightningCLI):
    """LightningCLI that links the model's processor to the data module.

    Every system exposes ``processor`` (a :class:`~lightning_gpv.tasks.processing.SampleProcessor`) and
    every data module accepts one, so the link is made once the model is instantiated.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.processor", "data.init_args.processor", apply_on="instantiate")


def run_lightning_cli(args: Sequence[str] | None = None) -> GPVLightningCLI:
    """Run the Lightning CLI on ``args`` (``sys.argv[1:]`` when None)."""
    return GPVLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": False},
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning-gpv`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "make-shapes":
        from lightning_gpv.shapesworld.cli import main as make_shapes_main

        raise SystemExit(make_shapes_main(argv[1:]))
    run_lightning_cli(argv)


if __name__ == "__main__":
    main()
