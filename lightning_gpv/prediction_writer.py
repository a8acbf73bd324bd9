"""``PredictionWriter``: ``predict`` output as JSON lines plus one picture per sample.

Add it to the trainer of ``lightning-gpv predict`` (or any ``Trainer.predict``)::

    lightning-gpv predict -c recipes/tiny/gpv1_shapes.yaml --ckpt_path CKPT \\
        --data datamodules.folder.ImageFolderDataModule --data.folder my_images --data.task vqa \\
        --data.prompt "What color is the shape?" \\
        --trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter \\
        --trainer.callbacks.output_dir outputs/predict

It writes, under ``output_dir``:

* ``predictions.jsonl``: one line per sample, :meth:`Prediction.to_json` (``task``, ``sample_id``,
  ``text``; ``boxes`` as absolute ``xyxy`` pixels of the original image, ``scores``, ``masks`` in COCO
  segmentation form, ... when present) plus ``images`` (the sample's image paths; ``null`` for in-memory
  arrays), ``prompt`` (``metadata["prompt"]`` when the data module sets it, as
  :class:`~datamodules.folder.ImageFolderDataModule` does, else the sample's question, expression or
  category), ``dataloader_idx`` and ``picture`` (the picture's path relative to ``output_dir``, or
  ``null``);
* ``pictures/<task>_<sample id>.png``: the prediction drawn on the sample's images
  (:func:`~lightning_gpv.visualize.draw_prediction_for`: boxes with scores, masks, points, the text).

A sample whose metadata holds an ``error`` (an unreadable image that
:class:`~datamodules.folder.ImageFolderDataModule` with ``on_bad_sample="skip"`` replaced by a stand-in)
gets the line ``{"task", "sample_id", "error", "images", "prompt", "dataloader_idx", "picture": null}``
instead of its prediction (made on the stand-in, so meaningless), and no picture: every input has exactly
one line, in order.

Both model families work: GPV-1's batches carry their samples (``GPV1Batch.samples``); for other batches
(``VistaLLMBatch``) the samples are read back from the predict loader's dataset by the batch indices
Lightning tracks (any ``TaskDataset``: ``dataset.sample(index)``, matched on ``sample_id``).

Earlier results are never overwritten: an existing ``predictions.jsonl`` (and ``pictures/``) is renamed
to ``predictions-<UTC timestamp>.jsonl`` (``pictures-<UTC timestamp>``) first, and the move is logged,
as ``lightning_gpv.demo`` moves an earlier output folder aside. A run that fails before its first line
leaves no empty ``predictions.jsonl`` behind. An ``output_dir`` inside the folder that
:class:`~datamodules.folder.ImageFolderDataModule` reads is safe: it skips the pictures of such outputs.

Under DDP every rank writes ``predictions.rank<R>.jsonl`` (Lightning's predict sampler gives each rank
different samples) and the pictures of its samples; at the end rank 0 concatenates the rank files, in rank
order, into ``predictions.jsonl`` and deletes them, when it can see all of them (a shared file system);
otherwise the rank files stay.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.processing import image_size
from lightning_gpv.tasks.samples import Prediction, TaskSample
from lightning_gpv.visualize import draw_prediction_for, save_image

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
PICTURES_DIR = "pictures"
AUTO_SIDE = 256
"""With ``scale=None``, small images are enlarged to about this many pixels on their longer side."""


def utc_stamp() -> str:
    """``YYYYmmdd-HHMMSS`` in UTC, the suffix of results moved aside."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def move_aside(path: Path, stamp: str) -> Path | None:
    """Rename ``path`` to ``<stem>-<stamp><suffix>`` (``-1``, ``-2``, ... if taken); None if it is absent."""
    if not path.exists():
        return None
    target = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}-{stamp}-{n}{path.suffix}")
        n += 1
    path.rename(target)
    return target


def rank_file(output_dir: Path, rank: int) -> Path:
    """The JSON-lines file of one DDP rank."""
    return output_dir / f"predictions.rank{rank}.jsonl"


def merge_rank_files(output_dir: Path, world_size: int) -> Path | None:
    """Concatenate the ``world_size`` rank files into ``predictions.jsonl`` and delete them.

    Returns:
        The merged file, or None (and nothing changed) when a rank file is missing.
    """
    parts = [rank_file(output_dir, r) for r in range(world_size)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        log.warning(
            "PredictionWriter: %s not found in %s; the rank files are left as they are", missing, output_dir
        )
        return None
    merged = output_dir / PREDICTIONS_FILE
    with merged.open("x", encoding="utf-8") as out:
        for part in parts:
            out.write(part.read_text(encoding="utf-8"))
    for part in parts:
        part.unlink()
    return merged


def picture_name(sample: TaskSample | None, prediction: Prediction) -> str:
    """``<task>_<sample id>.png``: a final image suffix dropped, characters outside ``[A-Za-z0-9._+-]``
    replaced by ``_`` (``more/blue.png`` -> ``vqa_more_blue.png``)."""
    sample_id = prediction.sample_id or (sample.sample_id if sample is not None else "") or "sample"
    sample_id = re.sub(r"\.(jpe?g|png|bmp|webp|gif|tiff?)$", "", sample_id, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{prediction.task.value}_{sample_id}") + ".png"


def prompt_of(sample: TaskSample | None, metadata: dict[str, Any] | None) -> str | None:
    """The user's prompt (``metadata["prompt"]``), else the sample's question, expression or category."""
    if metadata and metadata.get("prompt") is not None:
        return str(metadata["prompt"])
    if sample is not None and sample.metadata.get("prompt") is not None:
        return str(sample.metadata["prompt"])
    if sample is not None:
        return sample.question or sample.expression or sample.category
    return None


def auto_scale(sample: TaskSample) -> float:
    """The integer enlargement that brings the longest image side of ``sample`` near :data:`AUTO_SIDE`."""
    sizes = sample.image_sizes or [image_size(ref) for ref in sample.images]
    longest = max(max(h, w) for h, w in sizes)
    return float(max(1, round(AUTO_SIDE / max(longest, 1))))


def _loaders(trainer: pl.Trainer) -> list[Any]:
    loaders = trainer.predict_dataloaders
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results as JSON lines and pictures (see the module docstring).

    Args:
        output_dir: Folder of ``predictions.jsonl`` and ``pictures/`` (created).
        pictures: Draw one picture per sample.
        scale: Enlarge each image before drawing (nearest neighbour). ``None``: images whose longer side is
            under :data:`AUTO_SIDE` pixels are enlarged by the integer factor that brings it closest to it
            (a 64 px image by 4), others are drawn at their size.
        max_boxes: Draw at most this many boxes per image, the best scored first (GPV-1 scores all of its
            regions; the JSON line keeps all of them).
        score_threshold: Hide boxes scored below it in the pictures.
        show_target: Also draw the ground truth when the data module has one (folders have none).
    """

    def __init__(
        self,
        output_dir: str = "outputs/predict",
        pictures: bool = True,
        scale: float | None = None,
        max_boxes: int | None = 5,
        score_threshold: float | None = None,
        show_target: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        if scale is not None and scale <= 0:
            raise ValueError(f"PredictionWriter: scale must be positive, got {scale}")
        self.output_dir = Path(output_dir)
        self.pictures = pictures
        self.scale = scale
        self.max_boxes = max_boxes
        self.score_threshold = score_threshold
        self.show_target = show_target
        self.file: Path | None = None
        self._names: set[str] = set()
        self._warned = False

    # -- Lightning hooks ---------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise InputError(f"PredictionWriter: output_dir {self.output_dir} is a file, not a folder")
        if trainer.is_global_zero:
            stamp = utc_stamp()
            for path in (self.output_dir / PREDICTIONS_FILE, self.output_dir / PICTURES_DIR):
                moved = move_aside(path, stamp)
                if moved is not None:
                    log.warning("PredictionWriter: the earlier %s was moved to %s", path, moved)
            for path in sorted(self.output_dir.glob("predictions.rank*.jsonl")):
                if re.fullmatch(r"predictions\.rank\d+\.jsonl", path.name):
                    move_aside(path, stamp)
        trainer.strategy.barrier("PredictionWriter.setup")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        world = trainer.world_size
        self.file = (
            self.output_dir / PREDICTIONS_FILE
            if world == 1
            else rank_file(self.output_dir, trainer.global_rank)
        )
        self.file.open("x", encoding="utf-8").close()  # never overwrite, even if another run just wrote it
        self._names = set()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Append one JSON line per sample of ``batch`` and draw its picture."""
        if self.file is None:
            raise RuntimeError("PredictionWriter: setup() was not called for the predict stage")
        predictions = list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]
        if not all(isinstance(p, Prediction) for p in predictions):
            kinds = sorted({type(p).__name__ for p in predictions})
            raise TypeError(f"PredictionWriter: predict_step must return a list of Prediction, got {kinds}")
        metadata = getattr(batch, "metadata", None) or [None] * len(predictions)
        samples = self._samples(trainer, batch, batch_indices, dataloader_idx, predictions, metadata)
        lines = []
        for pred, sample, meta in zip(predictions, samples, metadata):
            meta = meta or (sample.metadata if sample is not None else {})
            error = meta.get("error")
            record = (
                pred.to_json()
                if error is None
                else {"task": pred.task.value, "sample_id": pred.sample_id, "error": str(error)}
            )
            images = meta.get("image_paths") or (sample.images if sample is not None else None)
            record["images"] = (
                None if images is None else [str(i) if isinstance(i, (str, Path)) else None for i in images]
            )
            record["prompt"] = prompt_of(sample, meta)
            record["dataloader_idx"] = dataloader_idx
            record["picture"] = None if error is not None else self._draw(sample, pred)
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        with self.file.open("a", encoding="utf-8") as out:
            out.writelines(lines)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Remove this process's prediction file if the run failed before writing a line: an empty file would
        read as a finished run over no samples (and be moved aside as one by the next run)."""
        if self.file is not None and self.file.is_file() and self.file.stat().st_size == 0:
            self.file.unlink()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size == 1:
            return
        trainer.strategy.barrier("PredictionWriter.on_predict_end")
        if trainer.is_global_zero:
            merge_rank_files(self.output_dir, trainer.world_size)

    # -- helpers -----------------------------------------------------------------------------------------

    def _samples(
        self,
        trainer: pl.Trainer,
        batch: Any,
        batch_indices: Sequence[int] | None,
        dataloader_idx: int,
        predictions: list[Prediction],
        metadata: Sequence[dict[str, Any] | None],
    ) -> list[TaskSample | None]:
        """The batch's samples: ``batch.samples`` (GPV-1), else read back from the predict dataset (not for
        samples whose ``metadata`` has an ``error``: their line needs no sample)."""
        samples = getattr(batch, "samples", None)
        if samples is not None and len(samples) == len(predictions):
            return list(samples)
        if isinstance(batch, (list, tuple)) and all(isinstance(s, TaskSample) for s in batch):
            return list(batch)  # a data module without a processor
        loaders = _loaders(trainer)
        dataset = getattr(loaders[dataloader_idx], "dataset", None) if dataloader_idx < len(loaders) else None
        out: list[TaskSample | None] = [None] * len(predictions)
        failed = [bool(meta and meta.get("error") is not None) for meta in metadata]
        if dataset is not None and hasattr(dataset, "sample") and batch_indices is not None:
            for k, (index, pred) in enumerate(zip(batch_indices, predictions)):
                if failed[k]:
                    continue
                try:
                    sample = dataset.sample(int(index))
                except (OSError, ValueError):  # a bad image the dataset replaced by another sample
                    continue
                if isinstance(sample, TaskSample) and sample.sample_id == pred.sample_id:
                    out[k] = sample
        if any(s is None and not bad for s, bad in zip(out, failed)) and not self._warned:
            self._warned = True
            log.warning(
                "PredictionWriter: some samples could not be found (a batch without `samples`, a dataset "
                "without `sample(index)`, or a skipped bad sample); their lines have no picture"
            )
        return out

    def _draw(self, sample: TaskSample | None, prediction: Prediction) -> str | None:
        if not self.pictures or sample is None:
            return None
        name = picture_name(sample, prediction)
        stem, n = name[: -len(".png")], 1
        while name in self._names:
            name, n = f"{stem}-{n}.png", n + 1
        self._names.add(name)
        picture = draw_prediction_for(
            sample,
            prediction,
            show_target=self.show_target,
            scale=self.scale if self.scale is not None else auto_scale(sample),
            score_threshold=self.score_threshold,
            max_boxes=self.max_boxes,
        )
        save_image(picture, self.output_dir / PICTURES_DIR / name)
        return f"{PICTURES_DIR}/{name}"


__all__ = ["PREDICTIONS_FILE", "PICTURES_DIR", "PredictionWriter", "merge_rank_files", "move_aside"]
