"""Does tiny VistaLLM look at the image? REC training on ShapesWorld with an image-use probe.

Trains ``VistaLLMConfig.tiny()`` (stage 1) on ShapesWorld RefCOCO REC only and prints, every
``--eval-every`` steps, on fixed held-out batches (RefCOCO ``val``):

* ``loss``: the answer-token loss with each sample's own image;
* ``swapped``: the same loss with the images rolled by one inside the batch (every sample sees another
  sample's image). ``swapped - loss`` is the part of the answer the model reads from the image; 0 means
  the model answers from the text alone;
* ``spread``: ``||V - mean(V)|| / ||V||`` of the visual tokens ``V`` of the batch's images under one
  instruction; 0 means the tokenizer's output no longer depends on the image.

It ends with the REC and RES metrics of a validation pass (``val/refcoco_unc.val/rec/acc@0.5``, ...).

    .venv/bin/python benchmarks/vistallm_grounding.py --root /tmp/shapes4k --num-images 4000 --steps 4000

``--max-objects``, ``--backgrounds`` and ``--sizes`` generate a sparser world (``SceneStyle``);
``--tasks rec res`` trains (and reports) RES too (half the samples); ``--num-bins`` changes the coordinate
bins.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from datamodules.multitask import MultiTaskDataModule
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from lightning_gpv.helptext import first_paragraph
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.processor import VistaLLMBatch
from lightning_gpv.shapesworld import make_shapes
from lightning_gpv.shapesworld.cli import add_style_arguments, style_from_args
from lightning_gpv.systems.vistallm import VistaLLMModule


@torch.no_grad()
def probe(module: VistaLLMModule, batch: VistaLLMBatch) -> dict[str, float]:
    """Answer loss with matched and with swapped images, and the visual-token spread (eval mode)."""
    model = module.model
    was_training = model.training
    model.eval()
    inputs = batch.model_inputs()
    loss = float(model(**inputs).loss)
    swapped = float(model(**{**inputs, "pixel_values": inputs["pixel_values"].roll(1, 0)}).loss)
    n = batch.pixel_values.shape[0]
    features = model.vision(batch.pixel_values)
    ids, mask = batch.instruction_ids[:1].expand(n, -1), batch.instruction_mask[:1].expand(n, -1)
    tokens = model.tokenizer(features, ids, mask)
    spread = float((tokens - tokens.mean(0, keepdim=True)).norm() / tokens.norm())
    model.train(was_training)
    return {"loss": loss, "swapped": swapped, "spread": spread}


class ImageUseProbe(Callback):
    """Prints :func:`probe` averaged over fixed batches every ``every`` training steps."""

    def __init__(self, batches: list[VistaLLMBatch], every: int) -> None:
        self.batches, self.every, self.start = batches, every, time.monotonic()

    def report(self, module: VistaLLMModule, step: int) -> None:
        rows = [probe(module, b) for b in self.batches]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(f"step {step:>5}  loss {mean['loss']:.3f}  swapped {mean['swapped']:.3f}  "
              f"gap {mean['swapped'] - mean['loss']:+.3f}  spread {mean['spread']:.3f}  "
              f"{time.monotonic() - self.start:.0f} s", flush=True)  # fmt: skip

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.report(pl_module, 0)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.global_step % self.every == 0:
            self.report(pl_module, trainer.global_step)


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--root", type=Path, required=True, help="ShapesWorld folder (generated if absent)")
    parser.add_argument("--num-images", type=int, default=1000, help="scenes when generating --root")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--probe-batches", type=int, default=4)
    parser.add_argument("--val-batches", type=int, default=16, help="batches of the final validation")
    parser.add_argument("--num-queries", type=int, help="QFormer queries per image (tiny default: 8)")
    parser.add_argument("--num-bins", type=int, help="coordinate bins (tiny default: 64)")
    parser.add_argument("--mask-points", type=int, help="contour points per mask (tiny default: 12)")
    parser.add_argument("--qformer-init", type=float, help="QFormer init std (tiny default: 0.25)")
    parser.add_argument(
        "--scratch-vision", action="store_true", help="a random image encoder instead of the shipped one"
    )
    parser.add_argument("--threads", type=int, default=1)
    add_style_arguments(parser)  # used when generating --root
    parser.add_argument("--tasks", nargs="+", default=["rec"], choices=("rec", "res"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if not args.root.exists():
        make_shapes(args.root, num_images=args.num_images, seed=0, progress=True, style=style_from_args(args))
    seed_everything(0)
    config = VistaLLMConfig.tiny(pretrained=not args.scratch_vision)
    if args.qformer_init is not None:
        config = replace(config, qformer=replace(config.qformer, initializer_range=args.qformer_init))
    if args.num_queries is not None:
        config = replace(config, qformer=replace(config.qformer, num_queries=args.num_queries))
    if args.num_bins is not None:
        config = replace(config, num_bins=args.num_bins)
    if args.mask_points is not None:
        config = replace(config, num_mask_points=args.mask_points)
    module = VistaLLMModule(config, load_weights=True, lr=args.lr)
    images = str(args.root / "coco" / "images" / "train2014")
    options = RefCocoOptions("refcoco", "unc", tasks=tuple(args.tasks), image_dir=images)
    refcoco = RefCocoDataModule(str(args.root / "refcoco"), options)
    data = MultiTaskDataModule(
        [refcoco],
        weights=[1.0],
        samples_per_epoch=args.steps * args.batch_size,
        batch_size=args.batch_size,
        processor=module.processor,
    )
    data.setup("validate")
    (loader,) = data.val_dataloader()
    batches = [b for _, b in zip(range(args.probe_batches), loader)]

    common = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    Trainer(max_steps=args.steps, limit_val_batches=0, callbacks=[ImageUseProbe(batches, args.eval_every)],
            **common).fit(module, datamodule=data)  # fmt: skip
    (result,) = Trainer(limit_val_batches=args.val_batches, **common).validate(module, data, verbose=False)
    # Keys are val/{dataset}/{task}/{metric}: keep the REC and RES ones.
    print({k: round(v, 3) for k, v in sorted(result.items()) if k.split("/")[2:3] in (["rec"], ["res"])})


if __name__ == "__main__":
    main()
