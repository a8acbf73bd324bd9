"""``python -m lightning_gpv.shapesworld --root DIR --num-images N --seed S [--overwrite]``."""

import sys

from lightning_gpv.shapesworld.cli import main

if __name__ == "__main__":
    sys.exit(main())
