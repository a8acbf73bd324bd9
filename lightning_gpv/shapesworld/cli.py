"""The ``make-shapes`` command: ``lightning-gpv make-shapes --root DIR --num-images N --seed S``
(``--max-objects K --backgrounds plain ...`` for sparser scenes)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_gpv.shapesworld.build import MIN_IMAGES, make_shapes
from lightning_gpv.shapesworld.sample import MAX_OBJECTS, SceneStyle
from lightning_gpv.shapesworld.scene import BACKGROUNDS, SIZES


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``make-shapes`` options to ``parser`` (also usable on a subparser)."""
    parser.add_argument(
        "--root",
        required=True,
        help="output folder (absent or empty, or a ShapesWorld folder with --overwrite)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=200,
        help=f"number of COCO-style scenes, at least {MIN_IMAGES} (default 200)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    add_style_arguments(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a ShapesWorld set at --root (one with shapesworld.json) once the new set is complete; "
        "any other non-empty folder is refused",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


def add_style_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--max-objects``, ``--backgrounds`` and ``--sizes`` (a :class:`SceneStyle`) to ``parser``."""
    parser.add_argument(
        "--max-objects",
        type=int,
        default=MAX_OBJECTS,
        help=f"scenes have 1 to this many objects, at most {MAX_OBJECTS} (default {MAX_OBJECTS})",
    )
    parser.add_argument(
        "--backgrounds",
        nargs="+",
        choices=BACKGROUNDS,
        default=list(BACKGROUNDS),
        help="background kinds to draw from (default: all)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=tuple(SIZES),
        default=list(SIZES),
        help="object size classes (default: all)",
    )
    return parser


def style_from_args(args: argparse.Namespace) -> SceneStyle:
    """The :class:`SceneStyle` of arguments added by :func:`add_style_arguments`."""
    return SceneStyle(args.max_objects, tuple(args.backgrounds), tuple(args.sizes))


def run(args: argparse.Namespace) -> int:
    """Run ``make-shapes`` with parsed ``args``; return the process exit status."""
    try:
        style = style_from_args(args)
        root = make_shapes(
            args.root,
            args.num_images,
            args.seed,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            style=style,
        )
    except (FileExistsError, ValueError) as err:
        print(f"lightning-gpv make-shapes: error: {err}", file=sys.stderr)
        return 2
    print(f"ShapesWorld written to {root}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m lightning_gpv.shapesworld``)."""
    parser = argparse.ArgumentParser(
        prog="lightning-gpv make-shapes",
        description="Generate the ShapesWorld synthetic data set in the official formats.",
    )
    return run(add_arguments(parser).parse_args(argv))
