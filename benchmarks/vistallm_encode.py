"""Tiny VistaLLM's data pipeline on CPU: ms per sample of ``VistaLLMProcessor.encode`` per epoch, with and
without the processor's image cache (``VistaLLMModule(image_cache=N)``, the tiny recipes' 8,192).

Encodes the RefCOCO REC and RES training samples of a sparse ShapesWorld (the demo's world: 320 x 240
JPEGs, resized to 64 px) for a few epochs in one process, one thread, as a loader with ``num_workers=0``
does. Epoch 1 fills the cache; the later epochs show what it saves. Without ``--root`` it writes the world
into a temporary folder first (deleted afterwards).

    .venv/bin/python benchmarks/vistallm_encode.py                # 300 images, 3 epochs, cache 0 and 8192
    .venv/bin/python benchmarks/vistallm_encode.py --root outputs/demo/data --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from datamodules import RefCocoDataModule, RefCocoOptions
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.systems.vistallm import VistaLLMModule


def epoch_times(root: Path, cache: int, epochs: int) -> tuple[int, list[float]]:
    """``(samples per epoch, seconds per epoch)`` encoding the training samples ``epochs`` times."""
    torch.manual_seed(0)
    module = VistaLLMModule(VistaLLMConfig.tiny(pretrained=False), load_weights=False, image_cache=cache)
    options = RefCocoOptions(tasks=("rec", "res"), image_dir=str(root / "coco" / "images" / "train2014"))
    dm = RefCocoDataModule(str(root / "refcoco"), options, processor=module.processor)
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        times.append(time.perf_counter() - start)
    return len(dataset), times


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--root", type=Path, help="ShapesWorld folder (default: generate one in a temp dir)")
    parser.add_argument("--num-images", type=int, default=300, help="images of the generated set")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--caches", type=int, nargs="+", default=[0, 8192], help="image_cache values")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from lightning_gpv.shapesworld.build import make_shapes
            from lightning_gpv.shapesworld.sample import SPARSE_STYLE

            root = Path(make_shapes(Path(tmp) / "shapes", args.num_images, seed=0, style=SPARSE_STYLE))
        print(f"data: {root} | RefCOCO REC + RES train | tiny VistaLLM processor (64 px) | 1 thread")
        results = {cache: epoch_times(root, cache, args.epochs) for cache in args.caches}
        print(f"{'image_cache':>11} {'samples':>8} " + " ".join(f"{f'epoch {e + 1} ms':>11}" for e in
                                                                range(args.epochs)))  # fmt: skip
        for cache, (n, times) in results.items():
            print(f"{cache:>11} {n:>8} " + " ".join(f"{1000 * t / n:>11.2f}" for t in times))
        if len(results) > 1:
            base, *others = results
            for cache in others:
                ratio = results[base][1][-1] / results[cache][1][-1]
                print(f"last epoch: image_cache {cache} encodes {ratio:.2f}x as fast as {base}")


if __name__ == "__main__":
    main()
