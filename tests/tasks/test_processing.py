import numpy as np
import pytest
from PIL import Image

from lightning_gpv.tasks.processing import SampleProcessor, image_size, load_image
from lightning_gpv.tasks.samples import TaskSample


def test_load_image_from_file_and_array(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(12, 20, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)
    assert image_size(path) == (12, 20)
    gray = rgb[..., 0]
    assert load_image(gray).shape == (12, 20, 3)
    assert image_size(rgb) == (12, 20)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        load_image(bad)
    with pytest.raises(ValueError, match="corrupt.jpg"):
        image_size(bad)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        load_image(np.zeros((4, 4, 3), dtype=np.float32))


def test_protocol_is_structural():
    class Echo:
        def encode(self, sample: TaskSample, *, train: bool) -> TaskSample:
            return sample

        def collate(self, items: list) -> list:
            return items

    assert isinstance(Echo(), SampleProcessor)
    assert not isinstance(object(), SampleProcessor)
