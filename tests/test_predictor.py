"""``Predictor``: a saved folder of either family answers paths, PIL images and arrays, single or batched,
in float32 or bfloat16, with boxes in the original image's pixels."""

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
from lightning_gpv.tasks import Prediction, Task


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
    assert predictor.draw(single).size[0] >= 50
    pair = predictor([[images[2], images[2]]], "nlvr2", "There are two circles.")
    assert len(pair) == 1 and pair[0].task is Task.NLVR2
    with pytest.raises(ValueError, match="argument `prompt` is required for task 'rec'"):
        predictor(path, "rec")


@pytest.mark.usefixtures("one_thread")
def test_bfloat16_weights_take_bfloat16_images(vistallm_folder: Path) -> None:
    predictor = Predictor.from_pretrained(vistallm_folder, dtype=torch.bfloat16, max_new_tokens=6)
    assert predictor.dtype is torch.bfloat16
    assert isinstance(predictor(_image(32, 32, 4), "captioning").text, str)


@pytest.mark.usefixtures("one_thread")
def test_gpv1_folder_gives_ranked_boxes_in_image_pixels(tmp_path: Path) -> None:
    # float32: torchvision's RoI-align has no bfloat16 kernel on the CPU (it has one on CUDA).
    tokens = write_wordpiece_vocab(["what color is the shape", "find the square"], tmp_path / "vocab.txt")
    config = GPV1Config.from_name("tiny", text={"tokenizer_name_or_path": str(tokens)})
    folder = GPV1Module(config).save_pretrained(tmp_path / "gpv1")
    gpv1 = Predictor.from_pretrained(folder)
    boxes = gpv1(_image(48, 80, 5), "localization", "square").boxes
    assert boxes.shape == (10, 4) and boxes[:, 2].max() <= 80 and boxes[:, 3].max() <= 48
