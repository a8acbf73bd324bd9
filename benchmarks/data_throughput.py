"""Loader throughput of the data modules: samples/s with 0 and 2 worker processes.

Iterates a data module's training loader with a simple processor (decode, resize to 224 x 224 with the boxes
and masks, normalise to a tensor) and prints samples/s per worker count: per wall-clock second, and per
CPU-second of the main process and its workers (less sensitive to other load on the machine). Without
``--root`` it writes a ShapesWorld set into a temporary folder first (deleted afterwards).

    python benchmarks/data_throughput.py          # ShapesWorld, 200 images, COCO, 0 and 2 workers
    python benchmarks/data_throughput.py --datamodule refcoco --workers 0 2 4
    python benchmarks/data_throughput.py --root /data/shapes --epochs 3
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datamodules.base import TaskDataModule
from lightning_gpv.models.gpv1.processor import IMAGENET_MEAN, IMAGENET_STD
from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.samples import TaskSample


class ResizeProcessor:
    """Decode the first image, resize it (and its boxes and masks) to ``size``, normalise (ImageNet)."""

    def __init__(self, size: int = 224) -> None:
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def encode(self, sample: TaskSample, *, train: bool) -> dict[str, Any]:
        image = load_image(sample.images[0])
        height, width = image.shape[:2]
        resized = Image.fromarray(image).resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        target = sample.target
        boxes = target.boxes[target.box_image == 0] / np.array([width, height, width, height], np.float32)
        # Centre-aligned nearest neighbour: row r of the output reads row (r + 0.5) * H / size.
        rows = np.minimum(((np.arange(self.size) + 0.5) * height / self.size).astype(np.int64), height - 1)
        cols = np.minimum(((np.arange(self.size) + 0.5) * width / self.size).astype(np.int64), width - 1)
        masks = [m.to_array()[rows][:, cols] for m, k in zip(target.masks, target.mask_image) if k == 0]
        return {
            "image": (pixels - self.mean) / self.std,
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "masks": torch.from_numpy(
                np.stack(masks) if masks else np.zeros((0, self.size, self.size), bool)
            ),
            "task": sample.task.value,
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "images": torch.stack([i["image"] for i in items]),
            "boxes": [i["boxes"] for i in items],
            "masks": [i["masks"] for i in items],
            "tasks": [i["task"] for i in items],
        }


def build_datamodule(name: str, root: Path, **kwargs: Any) -> TaskDataModule:
    """A data module over a ShapesWorld folder (the same layout as the official sets)."""
    from datamodules import (
        AttCosegDataModule,
        CocoDataModule,
        CosegDataModule,
        GRefCocoDataModule,
        Nlvr2DataModule,
        RefCocoDataModule,
        RefCocoOptions,
        VQAv2DataModule,
    )

    table: dict[str, Any] = {
        "coco": lambda: CocoDataModule(str(root / "coco"), **kwargs),
        "vqav2": lambda: VQAv2DataModule(str(root / "vqav2"), **kwargs),
        "refcoco": lambda: RefCocoDataModule(
            str(root / "refcoco"), RefCocoOptions(tasks=("rec", "res")), **kwargs
        ),
        "grefcoco": lambda: GRefCocoDataModule(str(root / "grefcoco"), **kwargs),
        "nlvr2": lambda: Nlvr2DataModule(str(root / "nlvr2"), **kwargs),
        "coseg": lambda: CosegDataModule(str(root / "coseg" / "pascal"), train_split="all", **kwargs),
        "attcoseg": lambda: AttCosegDataModule(str(root / "attcoseg"), **kwargs),
    }
    return table[name]()


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the loader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(dm: TaskDataModule, epochs: int) -> tuple[int, float, float]:
    """``(samples, wall seconds, CPU seconds)`` to iterate the training loader ``epochs`` times (worker
    start-up included; workers are not persistent, so they have exited and their CPU time is counted)."""
    dm.setup("fit")
    n, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    for _ in range(epochs):
        for batch in dm.train_dataloader():
            n += len(batch["tasks"])
    return n, time.perf_counter() - start, _cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--root", type=Path, help="ShapesWorld folder (default: generate one in a temp dir)")
    parser.add_argument("--num-images", type=int, default=200, help="images of the generated set")
    names = "coco, vqav2, refcoco, grefcoco, nlvr2, coseg, attcoseg"
    parser.add_argument("--datamodule", default="coco", help=names)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from lightning_gpv.shapesworld.build import make_shapes

            root = make_shapes(Path(tmp) / "shapes", args.num_images, seed=0, progress=False)
        print(f"data: {root} | {args.datamodule} | batch {args.batch_size} | {args.size}x{args.size}")
        head = ("workers", "samples", "wall s", "samples/s", "CPU s", "samples/CPU-s")
        print(" ".join(f"{h:>{w}}" for h, w in zip(head, (8, 8, 8, 10, 8, 14))))
        for workers in args.workers:
            dm = build_datamodule(
                args.datamodule,
                root,
                batch_size=args.batch_size,
                num_workers=workers,
                processor=ResizeProcessor(args.size),
            )
            n, secs, cpu = measure(dm, args.epochs)
            print(f"{workers:>8} {n:>8} {secs:>8.2f} {n / secs:>10.1f} {cpu:>8.2f} {n / cpu:>14.1f}")


if __name__ == "__main__":
    main()
