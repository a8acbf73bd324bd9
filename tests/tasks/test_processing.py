"""``load_image``, ``image_size`` and ``to_rgb``: every PIL mode and array dtype to (H, W, 3) uint8 RGB, the
pixel limit, EXIF orientation on request only, and errors that name the file."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lightning_gpv.tasks import processing
from lightning_gpv.tasks.processing import (
    SampleProcessor,
    UprightImagePath,
    image_size,
    load_image,
    to_rgb,
)
from lightning_gpv.tasks.samples import TaskSample


def test_load_image_from_file_and_array(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, size=(12, 20, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)
    assert image_size(path) == (12, 20)
    gray = rgb[..., 0]
    assert load_image(gray).shape == (12, 20, 3)
    assert image_size(rgb) == (12, 20)


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        image_size(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        load_image(bad)
    with pytest.raises(ValueError, match="corrupt.jpg"):
        image_size(bad)
    truncated = tmp_path / "truncated.jpg"
    noise = np.random.default_rng(0).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert image_size(truncated) == (48, 64)  # the header is intact
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_image(truncated)


# -- modes ---------------------------------------------------------------------------------------------------


def _row(mode: str, values: list) -> Image.Image:
    """A one-row image of ``mode`` holding ``values``."""
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    return image


def _gray(values: list[int]) -> np.ndarray:
    return np.repeat(np.asarray(values, np.uint8)[None, :, None], 3, axis=-1)


def _sixteen_big_endian(values: list[int]) -> Image.Image:
    return Image.frombytes("I;16B", (len(values), 1), np.asarray(values, ">u2").tobytes())


def _palette(transparent: bool) -> Image.Image:
    image = _row("P", [0, 1, 2])
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    if transparent:
        image.info["transparency"] = 1  # palette entry 1 (green) is transparent
    return image


def _gif(path: Path) -> None:
    frames = [Image.new("RGB", (4, 2), (255, 0, 0)), Image.new("RGB", (4, 2), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


SIXTEEN = [0, 257, 32896, 65535, 1000]  # / 257 rounded: 0, 1, 128, 255, 4
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)

# (id, image, file format, expected RGB row)
MODES: list[tuple[str, Callable[[], Image.Image], str, np.ndarray]] = [
    ("1", lambda: Image.fromarray(np.array([[0, 1, 1, 0]], bool)), "PNG", _gray([0, 255, 255, 0])),
    ("L", lambda: _row("L", [0, 7, 128, 255]), "PNG", _gray([0, 7, 128, 255])),
    ("P", lambda: _palette(False), "PNG", np.array([[RED, GREEN, BLUE]], np.uint8)),
    ("P-transparent", lambda: _palette(True), "PNG", np.array([[RED, WHITE, BLUE]], np.uint8)),
    (
        "RGBA",
        lambda: _row("RGBA", [(200, 10, 10, 255), (0, 0, 0, 0), (0, 0, 255, 128)]),
        "PNG",
        np.array([[(200, 10, 10), WHITE, (127, 127, 255)]], np.uint8),  # composited on white
    ),
    ("LA", lambda: _row("LA", [(50, 255), (50, 0)]), "PNG", _gray([50, 255])),
    (
        "CMYK",
        lambda: _row("CMYK", [(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)]),
        "TIFF",
        np.array([[WHITE, RED, (0, 0, 0)]], np.uint8),
    ),
    (
        "YCbCr",
        lambda: Image.fromarray(np.array([[RED, GREEN, (90, 90, 90)]], np.uint8)).convert("YCbCr"),
        "TIFF",
        np.array([[RED, GREEN, (90, 90, 90)]], np.uint8),
    ),
    ("I;16", lambda: Image.fromarray(np.array([SIXTEEN], np.uint16)), "PNG", _gray([0, 1, 128, 255, 4])),
    ("I;16B", lambda: _sixteen_big_endian(SIXTEEN), "TIFF", _gray([0, 1, 128, 255, 4])),
    ("I-16bit", lambda: _row("I", SIXTEEN), "TIFF", _gray([0, 1, 128, 255, 4])),
    ("I-wide", lambda: _row("I", [-1000, 0, 100000]), "TIFF", _gray([0, 3, 255])),  # min..max
    ("F-unit", lambda: _row("F", [0.0, 0.2, 1.0]), "TIFF", _gray([0, 51, 255])),
    ("F-8bit", lambda: _row("F", [0.0, 12.4, 200.0, 255.0]), "TIFF", _gray([0, 12, 200, 255])),
    ("F-wide", lambda: _row("F", [-1.0, 0.0, 3.0, float("nan")]), "TIFF", _gray([0, 64, 255, 0])),
]


@pytest.mark.parametrize(("mode", "make", "fmt", "expected"), MODES, ids=[m[0] for m in MODES])
def test_every_mode_loads_as_rgb(
    tmp_path: Path, mode: str, make: Callable[[], Image.Image], fmt: str, expected: np.ndarray
) -> None:
    image = make()
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, format=fmt)
    with Image.open(path) as stored:
        assert stored.mode == mode.split("-")[0]  # the file really holds that mode
    loaded = load_image(path)
    assert loaded.shape == (1, expected.shape[1], 3) and loaded.dtype == np.uint8
    tolerance = 3 if mode == "YCbCr" else 0  # YCbCr <-> RGB rounds
    np.testing.assert_allclose(loaded.astype(int), expected.astype(int), atol=tolerance)
    np.testing.assert_array_equal(to_rgb(image), loaded)  # PIL images follow the same rules


def test_a_16_bit_gradient_keeps_its_shades(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    path = tmp_path / "depth16.png"
    Image.fromarray(gradient).save(path)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[..., 0], np.tile(np.arange(256, dtype=np.uint8), (4, 1)))
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_multi_frame_files_give_their_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    _gif(path)
    with Image.open(path) as image:
        assert image.n_frames == 2
    loaded = load_image(path)
    assert loaded.shape == (2, 4, 3) and (loaded == RED).all()


def test_arrays_follow_the_same_rules() -> None:
    sixteen = np.array([SIXTEEN], np.uint16)
    np.testing.assert_array_equal(load_image(sixteen), _gray([0, 1, 128, 255, 4]))
    np.testing.assert_array_equal(load_image(np.array([[0.0, 0.2, 1.0]], np.float32)), _gray([0, 51, 255]))
    np.testing.assert_array_equal(load_image(np.array([[0.0, 200.0]])), _gray([0, 200]))
    np.testing.assert_array_equal(load_image(np.array([[True, False]])), _gray([255, 0]))
    np.testing.assert_array_equal(load_image(np.full((1, 2, 1), 9, np.uint8)), _gray([9, 9]))
    rgba = np.array([[(200, 10, 10, 255), (0, 0, 0, 0)]], np.uint8)
    np.testing.assert_array_equal(load_image(rgba), np.array([[(200, 10, 10), WHITE]], np.uint8))
    rgb16 = np.array([[(65535, 0, 32896)]], np.uint16)
    np.testing.assert_array_equal(to_rgb(rgb16), np.array([[(255, 0, 128)]], np.uint8))
    with pytest.raises(ValueError, match="int64.*astype\\(np.uint8\\)"):
        load_image(np.zeros((4, 4, 3), np.int64))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(H, W, 4\), got \(4, 4, 2\)"):
        load_image(np.zeros((4, 4, 2), np.uint8))


# -- huge images ---------------------------------------------------------------------------------------------


def test_images_over_the_pixel_limit_are_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (20, 10)).save(path)
    monkeypatch.setattr(processing, "MAX_IMAGE_PIXELS", 199)
    for read in (load_image, image_size):
        with pytest.raises(ValueError, match=r"image too large: .*huge.png: 20 x 10 = 200 pixels.*199"):
            read(path)
    monkeypatch.setattr(processing, "MAX_IMAGE_PIXELS", 200)
    assert load_image(path).shape == (10, 20, 3) and image_size(path) == (10, 20)


def test_pil_refusals_and_warnings_name_the_file_or_stay_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (20, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 99)  # PIL refuses over 2 x 99 pixels
    for read in (load_image, image_size):
        with pytest.raises(ValueError, match="image too large: .*bomb.png"):
            read(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # PIL only warns between 150 and 300 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our limit decides: no DecompressionBombWarning
        assert load_image(path).shape == (10, 20, 3) and image_size(path) == (10, 20)


# -- EXIF orientation ----------------------------------------------------------------------------------------


def _quadrants(height: int = 40, width: int = 60) -> np.ndarray:
    """Flat red / green / blue / white quadrants (JPEG keeps flat areas nearly exact)."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:] = RED, GREEN, BLUE, WHITE
    return image


def _quadrant_colors(image: np.ndarray) -> np.ndarray:
    """``(2, 2, 3)``: the colour at the centre of each quadrant (away from JPEG's blurred edges)."""
    h, w = image.shape[:2]
    return image[[h // 4, 3 * h // 4]][:, [w // 4, 3 * w // 4]].astype(int)


def _with_orientation(path: Path, pixels: np.ndarray, orientation: int, **save: object) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **save)
    return path


def test_exif_orientation_6_is_applied_only_when_asked(tmp_path: Path) -> None:
    stored = _quadrants()  # 40 x 60, stored as the sensor saw it
    path = _with_orientation(tmp_path / "phone.jpg", stored, 6, quality=95)
    upright = load_image(path, exif_transpose=True)
    assert upright.shape == (60, 40, 3) and image_size(path, exif_transpose=True) == (60, 40)
    # orientation 6: the stored image turned 90 degrees clockwise, so the stored top-left (red) is the
    # displayed top-right, green bottom-right, white bottom-left, blue top-left
    expected = np.array([[BLUE, RED], [WHITE, GREEN]])
    np.testing.assert_allclose(_quadrant_colors(upright), expected, atol=8)
    # the default (annotated data sets: boxes in stored pixels) keeps the stored orientation
    assert load_image(path).shape == (40, 60, 3) and image_size(path) == (40, 60)
    np.testing.assert_allclose(_quadrant_colors(load_image(path)), [[RED, GREEN], [BLUE, WHITE]], atol=8)
    # an UprightImagePath carries the request to loaders called without the argument
    ref = UprightImagePath(path)
    assert ref == str(path) and pickle.loads(pickle.dumps(ref)) == ref
    assert isinstance(pickle.loads(pickle.dumps(ref)), UprightImagePath)
    np.testing.assert_array_equal(load_image(ref), upright)
    assert image_size(ref) == (60, 40)
    with Image.open(path) as image:  # PIL images: on request too
        np.testing.assert_array_equal(to_rgb(image, exif_transpose=True), upright)
        assert to_rgb(image).shape == (40, 60, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pil_exif_transpose(tmp_path: Path, orientation: int) -> None:
    stored = np.random.default_rng(orientation).integers(0, 255, size=(5, 7, 3), dtype=np.uint8)
    path = _with_orientation(tmp_path / "o.png", stored, orientation)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(load_image(path, exif_transpose=True), expected)
    assert image_size(path, exif_transpose=True) == expected.shape[:2]


def test_exif_orientation_applies_to_16_bit_images(tmp_path: Path) -> None:
    stored = np.tile(np.array([0, 65535], np.uint16), (3, 1))  # 3 x 2: black left, white right
    path = _with_orientation(tmp_path / "o16.png", stored, 8)
    upright = load_image(path, exif_transpose=True)  # 90 degrees counter-clockwise: white on top
    assert upright.shape == (2, 3, 3)
    np.testing.assert_array_equal(upright[..., 0], [[255, 255, 255], [0, 0, 0]])


def test_protocol_is_structural() -> None:
    class Echo:
        def encode(self, sample: TaskSample, *, train: bool) -> TaskSample:
            return sample

        def collate(self, items: list) -> list:
            return items

    assert isinstance(Echo(), SampleProcessor)
    assert not isinstance(object(), SampleProcessor)
