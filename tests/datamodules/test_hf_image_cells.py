"""HF image cells decode by the package's rules (``to_rgb``, the pixel limit), in stored orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datamodules.errors import DataFormatError
from datamodules.hf import image_cell
from lightning_gpv.tasks import processing


def _png(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def test_sixteen_bit_cells_keep_their_shades() -> None:
    gradient = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (2, 1))
    expected = ((gradient.astype(np.uint32) + 128) // 257).astype(np.uint8)
    for value in ({"bytes": _png(Image.fromarray(gradient))}, Image.fromarray(gradient)):
        rgb = image_cell(value, None, "rows[0].image", "train.arrow")
        assert rgb.shape == (2, 32, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb[..., 1], expected)


def test_cells_keep_the_stored_orientation_and_the_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # annotated data: boxes are in stored pixels, so no transposition
    cell = {"bytes": _png(Image.new("RGB", (20, 10), (9, 9, 9)), exif=exif)}
    assert image_cell(cell, None, "rows[3].image", "train.arrow").shape == (10, 20, 3)
    monkeypatch.setattr(processing, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(
        DataFormatError, match=r"train.arrow: field 'rows\[3\].image': .*20 x 10 = 200 pixels"
    ):
        image_cell(cell, None, "rows[3].image", "train.arrow")
