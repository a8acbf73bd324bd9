"""``Predictor``: a saved folder of either family answers paths, PIL images and arrays, single or batched,
in float32 or bfloat16, with boxes in the original image's pixels (photos as displayed: EXIF orientation
applied; 16-bit and float images scaled by the rules of ``lightning_gpv.tasks.processing``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gpv import Predictor
from lightning_gpv.models.gpv1 import GPV1Config, write_wordpiece_vocab
from lightning_gpv.systems.gpv1 import GPV1Module
from lightning_gpv.systems.vistallm import VistaLLMModule
from lightning_gpv.tasks import Prediction, Task, TaskSample
from lightning_gpv.tasks.processing import UprightImagePath, load_image


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vistallm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    L.seed_everything(0, verbose=False)
    return VistaLLMModule("tiny", load_weights=False).save_pretrained(tmp_path_factory.mktemp("v") / "model")


@pytest.mark.usefixtures("one_thread")
def test_vistallm_folder_answers_every_kind_of_image(vistallm_folder: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_pretrained(vistallm_folder, max_new_tokens=12)
    path = tmp_path / "photo.png"
    Image.fromarray(_image(30, 50, 1)).save(path)
    images = [path, Image.fromarray(_image(40, 20, 2)).convert("L"), _image(64, 64, 3)]
    predictions = predictor(images, "rec", "the red circle")
    assert len(predictions) == 3 and all(
        isinstance(p, Prediction) and p.task is Task.REC for p in predictions
    )
    for prediction, (height, width) in zip(predictions, [(30, 50), (40, 20), (64, 64)]):
        if len(prediction.boxes):  # boxes in the image's own pixels
            assert prediction.boxes[:, 0::2].max() <= width and prediction.boxes[:, 1::2].max() <= height
    single = predictor(path, "rec", "the red circle")
    assert single.text == predictions[0].text
    assert predictor.draw(single).size[0] == 250  # 50 px wide enlarged 5 times, as PredictionWriter does
    assert predictor.draw(single, scale=1.0).size[0] == 50
    pair = predictor([[images[2], images[2]]], "nlvr2", "There are two circles.")
    assert len(pair) == 1 and pair[0].task is Task.NLVR2
    with pytest.raises(ValueError, match="no request 'request-3' in the last call"):
        predictor.draw(single)  # not another call's request of the same number
    with pytest.raises(ValueError, match="argument `prompt` is required for task 'rec'"):
        predictor(path, "rec")
    with pytest.raises(ValueError, match=r"does not take 1 image\(s\) \(a multi-image task takes a list of"):
        predictor([images[2], images[2]], "nlvr2", "There are two circles.")
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a folder, not an image file"):
        predictor(tmp_path, "rec", "the red circle")


@pytest.mark.usefixtures("one_thread")
def test_bfloat16_weights_take_bfloat16_images(vistallm_folder: Path) -> None:
    predictor = Predictor.from_pretrained(vistallm_folder, dtype=torch.bfloat16, max_new_tokens=6)
    assert predictor.dtype is torch.bfloat16
    assert isinstance(predictor(_image(32, 32, 4), "captioning").text, str)


@pytest.fixture(scope="module")
def gpv1_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("g")
    tokens = write_wordpiece_vocab(["what color is the shape", "find the square"], work / "vocab.txt")
    config = GPV1Config.from_name("tiny", text={"tokenizer_name_or_path": str(tokens)})
    return GPV1Module(config).save_pretrained(work / "gpv1")


@pytest.mark.usefixtures("one_thread")
def test_gpv1_folder_gives_ranked_boxes_in_image_pixels(gpv1_folder: Path) -> None:
    gpv1 = Predictor.from_pretrained(gpv1_folder)
    boxes = gpv1(_image(48, 80, 5), "localization", "square").boxes
    assert boxes.shape == (10, 4) and boxes[:, 2].max() <= 80 and boxes[:, 3].max() <= 48
    # bf16 on the CPU too (RoI-align pools in fp32 there: torchvision has no bf16 CPU kernel).
    half = Predictor.from_pretrained(gpv1_folder, dtype=torch.bfloat16)
    assert half(_image(48, 80, 5), "localization", "square").boxes.shape == (10, 4)


def _spy_on_encode(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> list[tuple[TaskSample, object]]:
    """Record every (sample, item) the predictor's processor encodes."""
    seen: list[tuple[TaskSample, object]] = []
    encode = predictor.processor.encode

    def spy(sample: TaskSample, *, train: bool) -> object:
        item = encode(sample, train=train)
        seen.append((sample, item))
        return item

    monkeypatch.setattr(predictor.processor, "encode", spy)
    return seen


@pytest.mark.usefixtures("one_thread")
def test_photos_are_read_as_displayed_with_boxes_in_displayed_pixels(
    gpv1_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = _image(48, 80, 6)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 48 wide, 80 high
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    displayed = load_image(path, exif_transpose=True)
    assert displayed.shape == (80, 48, 3)

    gpv1 = Predictor.from_pretrained(gpv1_folder)
    seen = _spy_on_encode(gpv1, monkeypatch)
    with Image.open(path) as opened:
        predictions = gpv1([path, str(path), opened], "localization", "square")
    assert isinstance(seen[0][0].images[0], UprightImagePath)  # paths stay lazy, loaded upright
    for (sample, item), prediction in zip(seen, predictions):
        np.testing.assert_array_equal(load_image(sample.images[0]), displayed)
        assert item.frame == (0.0, 0.0, 48.0, 80.0)  # GPV-1 scales its boxes to this frame
        boxes = prediction.boxes
        assert boxes.shape == (10, 4) and boxes[:, 2].max() <= 48 and boxes[:, 3].max() <= 80
    picture = gpv1.draw(predictions[0], scale=1.0)
    assert picture.size[0] == 48  # drawn on the displayed image too


@pytest.mark.usefixtures("one_thread")
def test_sixteen_bit_and_float_images_keep_their_shades(
    vistallm_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.from_pretrained(vistallm_folder, max_new_tokens=4)
    seen = _spy_on_encode(predictor, monkeypatch)
    gradient = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))
    expected = np.repeat(((gradient.astype(np.uint32) + 128) // 257).astype(np.uint8)[..., None], 3, -1)
    assert expected.min() == 0 and expected.max() == 255 and len(np.unique(expected)) == 64
    images = [Image.fromarray(gradient), gradient, gradient.astype(np.float32) / 65535]
    assert images[0].mode == "I;16"
    predictor(images, "captioning")
    for sample, _ in seen:
        assert sample.images[0].dtype == np.uint8
        np.testing.assert_allclose(sample.images[0].astype(int), expected.astype(int), atol=1)
    with pytest.raises(ValueError, match="Predictor: image arrays must be uint8, uint16, float or bool"):
        predictor(np.zeros((8, 8, 3), np.int64), "captioning")
