"""ImageFolderDataModule: image listing, prompts per task, grouping, loaders, clear argument errors, photos
read as displayed (EXIF orientation), and unreadable files kept in place as error stand-ins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.errors import DataFormatError
from datamodules.folder import PLACEHOLDER_SIDE, ImageFolderDataModule, list_images
from lightning_gpv.tasks import Task, TaskSample, processing
from lightning_gpv.tasks.processing import UprightImagePath, image_size, load_image


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
    (tmp_path / "photo.png").write_bytes(b"")
    with pytest.raises(DataFormatError, match="a file, not a folder \\(argument `folder`\\)"):
        ImageFolderDataModule(str(tmp_path / "photo.png"), "vqa", "x")
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


class Decodes:
    """A processor that decodes like the real ones (``load_image(ref)``, no arguments)."""

    def encode(self, sample: TaskSample, *, train: bool) -> tuple[str, np.ndarray, str | None]:
        return sample.sample_id, load_image(sample.images[0]), sample.metadata.get("error")

    def collate(self, items: list) -> list:
        return list(items)


def _truncated_jpeg(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the header survives
    return path


def test_corrupt_image_raises_or_is_skipped_in_place(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _image(root / "a.png")
    (root / "b.png").write_bytes(b"not a png")
    _image(root / "c.png", size=(16, 16))
    with pytest.raises(DataFormatError, match="b.png"):
        list(ImageFolderDataModule(str(root), "captioning").predict_dataloader())
    dm = ImageFolderDataModule(str(root), "captioning", on_bad_sample="skip", batch_size=8)
    (batch,) = list(dm.predict_dataloader())
    assert [s.sample_id for s in batch] == ["a.png", "b.png", "c.png"] and dm.num_skipped == 1
    stand_in = batch[1]
    assert "error" not in batch[0].metadata and "error" not in batch[2].metadata
    assert str(root / "b.png") in stand_in.metadata["error"]
    assert stand_in.metadata["image_paths"] == [str((root / "b.png").resolve())]
    assert stand_in.images[0].shape == (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, 3)
    assert np.asarray(Image.open(batch[2].images[0])).shape == (16, 16, 3)
    again = dm.dataset("predict").sample(1)  # read back by index (as PredictionWriter does): the stand-in
    assert again.sample_id == "b.png" and again.metadata["error"] == stand_in.metadata["error"]


def test_images_that_fail_to_decode_are_skipped_in_place(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _image(root / "a.png")
    _truncated_jpeg(root / "b.jpg")  # passes the header check, fails in the processor
    (root / "c.jpg").write_text("notes, renamed")  # fails the header check
    _image(root / "d.png", size=(16, 16))
    with pytest.raises(DataFormatError, match="b.jpg"):
        list(ImageFolderDataModule(str(root), "captioning", processor=Decodes()).predict_dataloader())
    dm = ImageFolderDataModule(
        str(root), "captioning", processor=Decodes(), on_bad_sample="skip", batch_size=3
    )
    items = [item for batch in dm.predict_dataloader() for item in batch]
    assert [(name, image.shape) for name, image, _ in items] == [
        ("a.png", (32, 40, 3)),
        ("b.jpg", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, 3)),
        ("c.jpg", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, 3)),
        ("d.png", (16, 16, 3)),
    ]
    errors = [error for _, _, error in items]
    assert errors[0] is None and errors[3] is None
    assert "b.jpg" in errors[1] and "c.jpg" in errors[2] and dm.num_skipped == 2


def test_images_over_the_pixel_limit_raise_or_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    _image(root / "a.png", size=(8, 8))
    _image(root / "big.png", size=(20, 10))
    monkeypatch.setattr(processing, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataFormatError, match="big.png.*20 x 10 = 200 pixels"):
        list(ImageFolderDataModule(str(root), "captioning").predict_dataloader())
    dm = ImageFolderDataModule(str(root), "captioning", processor=Decodes(), on_bad_sample="skip")
    (batch,) = list(dm.predict_dataloader())
    assert [name for name, _, _ in batch] == ["a.png", "big.png"]
    assert batch[0][2] is None and "big.png" in batch[1][2] and "image too large" in batch[1][2]


def test_photos_are_read_as_displayed(tmp_path: Path) -> None:
    root = tmp_path / "images"
    stored = np.zeros((30, 50, 3), np.uint8)
    stored[:, :25] = (250, 10, 10)  # left half red, right half blue
    stored[:, 25:] = (10, 10, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: red on top
    root.mkdir()
    Image.fromarray(stored).save(root / "phone.jpg", exif=exif, quality=95)
    sixteen = np.tile(np.linspace(0, 65535, 50).round().astype(np.uint16), (30, 1))
    Image.fromarray(sixteen).save(root / "scan16.png")
    dm = ImageFolderDataModule(str(root), "captioning", processor=Decodes(), batch_size=2)
    (batch,) = list(dm.predict_dataloader())
    (_, photo, _), (_, scan, _) = batch
    assert photo.shape == (50, 30, 3)
    assert photo[5, 15, 0] > 200 and photo[5, 15, 2] < 50 and photo[45, 15, 2] > 200  # red top, blue bottom
    sample = dm.dataset("predict").sample(0)
    assert isinstance(sample.images[0], UprightImagePath) and image_size(sample.images[0]) == (50, 30)
    assert scan.shape == (30, 50, 3) and scan[0, 0, 0] == 0 and scan[0, -1, 0] == 255
    assert len(np.unique(scan[0, :, 0])) == 50  # a gradient, not clipped to white
