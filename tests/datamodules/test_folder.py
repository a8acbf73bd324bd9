"""ImageFolderDataModule: image listing, prompts per task, grouping, loaders and clear argument errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.errors import DataFormatError
from datamodules.folder import ImageFolderDataModule, list_images
from lightning_gpv.tasks import Task, TaskSample


def _image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name in ("b.png", "a.JPG", "c.jpeg", "d.bmp", "e.webp", "sub/f.png"):
        _image(root / name)
    (root / "notes.txt").write_text("not an image")
    _image(root / ".hidden.png")
    return root


def test_lists_images_sorted_and_optionally_recursive(folder: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in list_images(folder, recursive=False)]
    assert names == ["a.JPG", "b.png", "c.jpeg", "d.bmp", "e.webp"]
    names = [p.relative_to(folder).as_posix() for p in list_images(folder, recursive=True)]
    assert names == ["a.JPG", "b.png", "c.jpeg", "d.bmp", "e.webp", "sub/f.png"]


@pytest.mark.parametrize(
    ("task", "prompt", "slot"),
    [("vqa", "What color is it?", "question"), ("rec", "the red square", "expression"),
     ("gres", "all circles", "expression"), ("localization", "circle", "category"),
     ("captioning", None, None)],
)  # fmt: skip
def test_samples_carry_the_prompt_in_the_tasks_slot(folder: Path, task: str, prompt: str, slot: str) -> None:
    dm = ImageFolderDataModule(str(folder), task, prompt, recursive=True, batch_size=4)
    dm.setup("predict")
    ds = dm.dataset("predict")
    assert len(ds) == 6
    sample = ds.sample(5)
    assert isinstance(sample, TaskSample) and sample.task is Task(task)
    assert sample.sample_id == "sub/f.png" and sample.images == [str((folder / "sub/f.png").resolve())]
    assert sample.target.text is None and len(sample.target.boxes) == 0
    assert sample.metadata["image_paths"] == sample.images and sample.metadata["prompt"] == prompt
    assert {f: getattr(sample, f) for f in ("question", "expression", "category") if getattr(sample, f)} == (
        {slot: prompt} if slot else {}
    )
    batches = list(dm.predict_dataloader())  # no processor: lists of samples
    assert [len(b) for b in batches] == [4, 2]
    assert [s.sample_id for b in batches for s in b][:2] == ["a.JPG", "b.png"]


def test_multi_image_tasks_group_consecutive_images(folder: Path) -> None:
    dm = ImageFolderDataModule(str(folder), "nlvr2", "The left image is red.", recursive=True)
    samples = [dm.dataset("predict").sample(i) for i in range(3)]
    assert [s.num_images for s in samples] == [2, 2, 2]
    assert samples[0].sample_id == "a.JPG+b.png" and samples[0].question == "The left image is red."
    coseg = ImageFolderDataModule(str(folder), "coseg")  # default: the whole folder is one sample
    assert [s.num_images for s in (coseg.dataset("predict").sample(0),)] == [5]
    assert len(coseg.dataset("predict")) == 1
    odd = ImageFolderDataModule(str(folder), "nlvr2", "x")  # 5 images: the last pair is incomplete
    with pytest.raises(DataFormatError, match="images_per_sample"):
        odd.setup("predict")


def test_bad_arguments_name_the_argument(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argument `task`: unknown task 'detection'"):
        ImageFolderDataModule(str(folder), "detection", "x")
    with pytest.raises(ValueError, match="argument `task`: 'reg' needs an input region"):
        ImageFolderDataModule(str(folder), "reg")
    with pytest.raises(ValueError, match="argument `prompt` is required for task 'vqa'"):
        ImageFolderDataModule(str(folder), "vqa")
    with pytest.raises(ValueError, match="argument `prompt`: task 'captioning' takes no prompt"):
        ImageFolderDataModule(str(folder), "captioning", "Describe it.")
    with pytest.raises(ValueError, match="argument `images_per_sample`"):
        ImageFolderDataModule(str(folder), "vqa", "x", images_per_sample=2)
    with pytest.raises(DataFormatError, match="folder not found \\(argument `folder`\\)"):
        ImageFolderDataModule(str(tmp_path / "missing"), "vqa", "x")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    _image(empty / "sub" / "only.png")
    dm = ImageFolderDataModule(str(empty), "vqa", "x")
    with pytest.raises(DataFormatError, match="no image files .*recursive=False.*argument `folder`"):
        dm.setup("predict")
    assert len(ImageFolderDataModule(str(empty), "vqa", "x", recursive=True).dataset("predict")) == 1
    with pytest.raises(ValueError, match="no train_split"):
        ImageFolderDataModule(str(folder), "vqa", "x", train_split="train")


def test_only_the_predict_loader(folder: Path) -> None:
    dm = ImageFolderDataModule(str(folder), "vqa", "What is it?")
    for make in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader):
        with pytest.raises(ValueError, match="serves only `predict`"):
            make()


def test_corrupt_image_raises_or_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _image(root / "a.png")
    (root / "b.png").write_bytes(b"not a png")
    _image(root / "c.png", size=(16, 16))
    with pytest.raises(DataFormatError, match="b.png"):
        list(ImageFolderDataModule(str(root), "captioning").predict_dataloader())
    dm = ImageFolderDataModule(str(root), "captioning", on_bad_sample="skip", batch_size=8)
    (batch,) = list(dm.predict_dataloader())
    assert [s.sample_id for s in batch] == ["a.png", "c.png", "c.png"] and dm.num_skipped == 1
    assert np.asarray(Image.open(batch[1].images[0])).shape == (16, 16, 3)
