"""The processor contract, laziness, pickling, worker processes and CLI construction of data modules."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datamodules.base import TaskDataModule, list_collate
from datamodules.coco import CocoDataModule, CocoOptions
from datamodules.errors import DataFormatError
from datamodules.nlvr2 import Nlvr2DataModule
from lightning_gpv.tasks.processing import SampleProcessor, load_image
from lightning_gpv.tasks.samples import TaskSample


class RecordingProcessor:
    """Decodes the first image, resizes it to 16x16 and remembers the ``train`` flag."""

    def encode(self, sample: TaskSample, *, train: bool) -> dict[str, Any]:
        img = load_image(sample.images[0])
        small = torch.from_numpy(
            np.ascontiguousarray(img[:: max(1, img.shape[0] // 16), :: max(1, img.shape[1] // 16)])
        )
        return {
            "image": small[:16, :16].float(),
            "train": train,
            "id": sample.sample_id,
            "task": sample.task.value,
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"ids": [i["id"] for i in items], "train": [i["train"] for i in items], "n": len(items)}


def test_processor_protocol_and_wiring(coco_root: Path) -> None:
    proc = RecordingProcessor()
    assert isinstance(proc, SampleProcessor)
    dm = CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",)), batch_size=2)
    dm.setup("fit")
    # unconnected: TaskSample items, list batches
    assert isinstance(dm.dataset("train2014")[0], TaskSample)
    assert dm.collate_fn is list_collate
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, list) and len(batch) == 2 and all(isinstance(s, TaskSample) for s in batch)
    # connected later: datasets already built get the processor too
    dm.connect(proc)
    assert dm.dataset("train2014").processor is proc
    assert dm.collate_fn == proc.collate
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    assert train["n"] == 2 and train["train"] == [True, True]
    assert val["train"] == [False, False]
    # given at construction
    dm2 = CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",)), processor=proc)
    assert dm2.dataset("val2014")[0]["train"] is False
    with pytest.raises(TypeError, match="encode"):
        dm.connect(object())  # type: ignore[arg-type]


def test_setup_parses_annotations_only(coco_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is decoded (no image is even opened) at construction or setup."""
    import PIL.Image

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an image was opened during setup")

    monkeypatch.setattr(PIL.Image, "open", fail)
    dm = CocoDataModule(str(coco_root))
    dm.setup("fit")
    dm.setup("validate")
    assert len(dm.dataset("train2014")) > 0
    sample = dm.dataset("train2014").reader.sample(dm.dataset("train2014").records[0], train=True)
    assert isinstance(sample.images[0], str)


def test_datasets_pickle_and_workers(coco_root: Path) -> None:
    dm = CocoDataModule(str(coco_root), num_workers=2, batch_size=3, processor=RecordingProcessor())
    dm.setup("fit")
    ds = dm.dataset("train2014")
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == len(ds) and clone[0]["id"] == ds[0]["id"]
    ids = [i for b in dm.val_dataloader() for i in b["ids"]]
    assert sorted(ids) == sorted(
        ds_id for ds_id in (dm.dataset("val2014")[k]["id"] for k in range(len(dm.dataset("val2014"))))
    )


def test_skip_counts_across_workers(coco_root: Path) -> None:
    (coco_root / "val2014" / "COCO_val2014_000000000010.jpg").unlink()
    captions = CocoOptions(tasks=("captioning",))
    dm = CocoDataModule(str(coco_root), captions, num_workers=2, batch_size=1, on_bad_sample="skip")
    dm.setup("validate")
    n = len(dm.dataset("val2014"))
    got = [s.sample_id for b in dm.val_dataloader() for s in b]
    assert len(got) == n  # bad ones replaced by readable neighbours
    assert dm.num_skipped == 2  # the two captions of image 10, counted in the workers


def test_bad_image_raises_with_file_and_field(coco_root: Path) -> None:
    missing = coco_root / "train2014" / "COCO_train2014_000000000002.jpg"
    missing.unlink()
    corrupt = coco_root / "train2014" / "COCO_train2014_000000000003.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # truncated: header may parse, pixels do not
    dm = CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",)))
    ds = dm.dataset("train2014")
    ids = [ds.reader.sample(r, train=True).image_ids[0] for r in ds.records]
    with pytest.raises(DataFormatError, match=r"COCO_train2014_000000000002\.jpg.*images\[0\].*not found"):
        ds[ids.index(2)]
    dm.connect(RecordingProcessor())
    with pytest.raises(DataFormatError, match=r"COCO_train2014_000000000003\.jpg.*images\[0\]"):
        ds[ids.index(3)]


def test_processor_bugs_are_not_hidden(coco_root: Path) -> None:
    class Broken(RecordingProcessor):
        def encode(self, sample: TaskSample, *, train: bool) -> Any:
            raise ValueError("processor bug")

    captions = CocoOptions(tasks=("captioning",))
    dm = CocoDataModule(str(coco_root), captions, processor=Broken(), on_bad_sample="skip")
    with pytest.raises(ValueError, match="processor bug"):
        dm.dataset("train2014")[0]
    assert dm.num_skipped == 0


def test_argument_validation(coco_root: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        CocoDataModule(str(coco_root), batch_size=0)
    with pytest.raises(ValueError, match="on_bad_sample"):
        CocoDataModule(str(coco_root), on_bad_sample="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tasks"):
        CocoOptions(tasks=("vqa",))  # type: ignore[arg-type]
    dm = CocoDataModule(str(coco_root), train_split=None)
    with pytest.raises(ValueError, match="no train_split"):
        dm.train_dataloader()


def test_max_samples_and_index_errors(nlvr2_root: Path) -> None:
    dm = Nlvr2DataModule(str(nlvr2_root), max_samples=1)
    ds = dm.dataset("train")
    assert len(ds) == 1
    with pytest.raises(IndexError):
        ds[5]


def test_jsonargparse_builds_datamodules(coco_root: Path) -> None:
    """LightningCLI builds data modules from YAML: every __init__ argument must be a plain typed value."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(TaskDataModule, "data")
    cfg = parser.parse_object(
        {
            "data": {
                "class_path": "datamodules.coco.CocoDataModule",
                "init_args": {
                    "root": str(coco_root),
                    "options": {"tasks": ["localization"], "include_crowd": False},
                    "batch_size": 4,
                    "on_bad_sample": "skip",
                },
            }
        }
    )
    assert "processor" in cfg.data.init_args  # the target of the CLI's model.processor -> data link
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, CocoDataModule)
    assert (
        dm.batch_size == 4
        and dm.on_bad_sample == "skip"
        and dm.options == CocoOptions(("localization",), include_crowd=False)
    )


def test_trainer_fit_with_processor_connected_in_model_setup(coco_root: Path) -> None:
    """The systems' wiring: the LightningModule hands its processor over in ``setup``."""
    import lightning.pytorch as pl

    class TinySystem(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.processor = TensorProcessor()
            self.layer = torch.nn.Linear(3, 1)
            self.seen: list[str] = []

        def setup(self, stage: str) -> None:
            dm = self.trainer.datamodule
            if dm.processor is None:
                dm.connect(self.processor)

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            self.seen += batch["tasks"]
            return self.layer(batch["images"].mean(dim=(2, 3))).mean()

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
            self.seen += batch["tasks"]

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = TinySystem()
    dm = CocoDataModule(str(coco_root), batch_size=4)
    off = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", **off)
    trainer.fit(model, datamodule=dm)
    assert dm.processor is model.processor and len(model.seen) == 16


class TensorProcessor:
    """Decode and resize to 8x8 (module level, so worker processes can unpickle it)."""

    def encode(self, sample: TaskSample, *, train: bool) -> dict[str, Any]:
        from PIL import Image

        small = Image.fromarray(load_image(sample.images[0])).resize((8, 8), Image.Resampling.BILINEAR)
        image = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return {"image": image, "task": sample.task.value}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"images": torch.stack([i["image"] for i in items]), "tasks": [i["task"] for i in items]}


def test_jsonargparse_builds_multitask(coco_root: Path, nlvr2_root: Path) -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    from datamodules.multitask import MultiTaskDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    kids = [
        {
            "class_path": "datamodules.CocoDataModule",
            "init_args": {"root": str(coco_root), "options": {"tasks": ["captioning"]}},
        },
        {"class_path": "datamodules.Nlvr2DataModule", "init_args": {"root": str(nlvr2_root)}},
    ]
    cfg = parser.parse_object(
        {
            "data": {
                "class_path": "datamodules.MultiTaskDataModule",
                "init_args": {"datamodules": kids, "weights": [1, 2]},
            }
        }
    )
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, MultiTaskDataModule) and [type(k).__name__ for k in dm.datamodules] == [
        "CocoDataModule",
        "Nlvr2DataModule",
    ]
    assert dm.weights == [1.0, 2.0]


def test_check_image_file_applies_the_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from datamodules.base import check_image_file
    from lightning_gpv.tasks import processing

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    check_image_file(path)
    monkeypatch.setattr(processing, "MAX_IMAGE_PIXELS", 1000)  # as if the photo were gigapixel
    with pytest.raises(DataFormatError, match="big.png"):
        check_image_file(path, "images[0]")
