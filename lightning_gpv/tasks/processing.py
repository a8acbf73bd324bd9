"""The contract between data and models: a model's processor turns :class:`TaskSample` into tensors.

Data modules know nothing about models. A model family ships a processor (``GPV1Processor``,
``VistaLLMProcessor``) that implements :class:`SampleProcessor`; a data module receives it through its
``connect(processor)`` method (the Lightning CLI links ``model.processor`` to ``data.processor``) and then

* calls ``processor.encode(sample, train=...)`` in ``Dataset.__getitem__``, so decoding, resizing and
  tokenization run in the loader's worker processes, and
* uses ``processor.collate`` as the loader's ``collate_fn``.

Without a processor a data module yields plain lists of :class:`TaskSample` (handy in notebooks).

Images: :func:`load_image` is the package's single image loader and :func:`to_rgb` its single pixel
conversion (files, PIL images and arrays alike); both give ``(H, W, 3)`` uint8 RGB, row ``y`` down, column
``x`` right. The rules:

* **Modes.** ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: PIL's conversion to RGB.
  Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, a ``P``/``L``/``RGB`` image with a transparent colour):
  composited on white, as viewers show it on a white page (the colour under a fully transparent pixel is
  often black, so dropping alpha would hide dark drawings). 16-bit (``I;16``, ``I;16B``, ``I;16L``,
  ``I;16N``): ``value / 257`` rounded (65535 -> 255). 32-bit integer ``I``: the 16-bit rule when every value
  lies in 0..65535 (16-bit PNGs and TIFFs often open in this mode), else stretched min..max to 0..255.
  Float ``F``: values in [0, 1] times 255; else values in [0, 255] taken as 8-bit; else stretched min..max;
  NaN and infinities become 0. A constant image that has to be stretched becomes black. Multi-frame files
  (GIF, TIFF, animated WebP): the first frame.
* **Arrays** follow the same rules by dtype: ``uint8`` as is, ``bool`` as mode ``1``, ``uint16`` as
  ``I;16``, ``float16/32/64`` as ``F``; other integer dtypes are refused (``astype(np.uint8)`` 8-bit
  values first). Shapes ``(H, W)`` and ``(H, W, 1)`` are gray, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA.
* **Size.** A file with more than :data:`MAX_IMAGE_PIXELS` pixels is refused with a ``ValueError`` naming
  the file and its size, by :func:`load_image` and :func:`image_size` alike, before any pixel is decoded
  (so a data module's ``on_bad_sample="skip"`` skips it like any unreadable image).
* **EXIF orientation.** Phones store pixels as the sensor saw them plus an ``Orientation`` tag (1..8).
  ``load_image(..., exif_transpose=True)`` and ``image_size(..., exif_transpose=True)`` apply it (as
  ``PIL.ImageOps.exif_transpose`` does), so the array, the size and predicted boxes are in the *displayed*
  image's pixels. The default ``False`` keeps the stored orientation: annotated data sets (COCO, RefCOCO,
  VQAv2, ...) give their boxes in stored pixels. An :class:`UprightImagePath` carries ``True`` to loaders
  that cannot take the argument (the processors): user folders and the ``Predictor`` use it. The tag is read
  from the file's header (a PNG ``eXIf`` chunk after the pixel data is ignored), the same way by both
  functions.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, UnidentifiedImageError

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.samples import ImageRef, TaskSample

MAX_IMAGE_PIXELS: int | None = 178_956_970
"""Files with more pixels (width x height as stored) are refused with a ``ValueError`` naming the file.

The default is PIL's own refusal threshold (``2 * PIL.Image.MAX_IMAGE_PIXELS``); below it PIL's
``DecompressionBombWarning`` is silenced, since this limit decides. ``None`` disables the check. Raising it
above PIL's threshold also needs ``PIL.Image.MAX_IMAGE_PIXELS`` raised (to half the new value, or ``None``),
as PIL refuses such files in ``Image.open`` (reported the same way, naming the file)."""

ORIENTATION_TAG = 0x0112
"""The EXIF ``Orientation`` tag."""

# (H, W, C) array transforms that turn stored pixels into displayed ones, per EXIF orientation (the
# transposes of PIL.ImageOps.exif_transpose, done in numpy so that every mode is handled alike).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}

# What PIL raises for a damaged or unsupported file, while opening or decoding it.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error)


@runtime_checkable
class SampleProcessor(Protocol):
    """Turns samples into model inputs. Must be picklable (it travels to loader workers)."""

    def encode(self, sample: TaskSample, *, train: bool) -> Any:
        """Encode one sample (runs in a worker): load and transform images, tokenize text and targets."""
        ...

    def collate(self, items: list[Any]) -> Any:
        """Batch encoded samples (the loader's ``collate_fn``)."""
        ...


class UprightImagePath(str):
    """A file path (a ``str``) whose image is loaded upright: :func:`load_image` and :func:`image_size`
    apply its EXIF orientation as if called with ``exif_transpose=True``.

    For inputs whose boxes should be in displayed pixels (user folders, ``Predictor`` requests) while the
    model's processor calls ``load_image(ref)`` without arguments. It pickles (loader workers) and compares
    and serializes as the plain path.
    """

    __slots__ = ()


# -- pixel conversion ----------------------------------------------------------------------------------------


def _sixteen_bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 (``value / 257`` rounded)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    """min..max -> 0..255 (a constant array -> 0)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _wide_integers(values: np.ndarray) -> np.ndarray:
    """Mode ``I`` (32-bit): 0..65535 as 16-bit, anything wider stretched."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        return _stretch(values)
    return _sixteen_bit(values)


def _floats(values: np.ndarray) -> np.ndarray:
    """Mode ``F``: [0, 1] times 255, [0, 255] as 8-bit values, else stretched; non-finite -> 0."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        out = np.rint(np.where(finite, values, 0.0) * 255.0)
    elif lo >= 0.0 and hi <= 255.0:
        out = np.rint(np.where(finite, values, 0.0))
    else:
        out = _stretch(np.where(finite, values, lo)).astype(np.float64)
    return np.where(finite, out, 0.0).astype(np.uint8)


def _channel_to_uint8(values: np.ndarray) -> np.ndarray:
    """One array of samples to uint8 by its dtype (see the module docstring)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return _sixteen_bit(values)
    if np.issubdtype(values.dtype, np.floating):
        return _floats(values)
    raise InputError(
        f"image arrays must be uint8, uint16, float or bool, got {values.dtype} (give 8-bit values as "
        "uint8: array.astype(np.uint8))"
    )


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA composited on white -> ``(H, W, 3)`` uint8 RGB."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.repeat(_channel_to_uint8(arr)[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")
    rgb = _channel_to_uint8(arr[..., :3])
    if arr.shape[-1] == 3:
        return rgb
    return _on_white(np.concatenate([rgb, _channel_to_uint8(arr[..., 3])[..., None]], axis=-1))


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        # np.asarray keeps the byte order of I;16B (">u2"); the rule works on values.
        return np.repeat(_sixteen_bit(np.asarray(img))[..., None], 3, axis=-1)
    if mode == "I":
        return np.repeat(_wide_integers(np.asarray(img))[..., None], 3, axis=-1)
    if mode == "F":
        return np.repeat(_floats(np.asarray(img))[..., None], 3, axis=-1)
    if img.has_transparency_data:  # an alpha band, or a transparent palette entry or colour
        return _on_white(np.asarray(img.convert("RGBA")))
    return np.asarray(img if mode == "RGB" else img.convert("RGB"))


def exif_orientation(img: Image.Image) -> int:
    """The EXIF ``Orientation`` (1..8) of an opened image, from its header; 1 when absent or unreadable.

    PNG's own ``getexif`` decodes the whole file to look for an ``eXIf`` chunk after the pixel data; the base
    method reads only what ``Image.open`` saw, so :func:`image_size` stays header-only and agrees with
    :func:`load_image`.
    """
    try:
        value = Image.Image.getexif(img).get(ORIENTATION_TAG, 1)
    except (*_DECODE_ERRORS, KeyError, IndexError, TypeError):
        return 1  # a damaged EXIF block must not make a readable image unreadable
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(image: Image.Image | np.ndarray, *, exif_transpose: bool = False) -> np.ndarray:
    """Any PIL image or array -> ``(H, W, 3)`` uint8 RGB (the rules of the module docstring).

    Args:
        image: A PIL image of any mode (its current frame), or an array of shape ``(H, W)``, ``(H, W, 1)``,
            ``(H, W, 3)`` or ``(H, W, 4)`` (RGBA) of dtype uint8, uint16, float or bool.
        exif_transpose: For PIL images, apply the EXIF orientation (the result is the displayed image);
            arrays have none.

    Raises:
        ValueError: An array of another shape or dtype, or a mode PIL cannot convert.
    """
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(_array_to_rgb(image))
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    orientation = exif_orientation(image) if exif_transpose else 1
    rgb = _pil_to_rgb(image)
    if orientation != 1:
        rgb = _ORIENT[orientation](rgb)
    # contiguous: torch.tensor refuses the negative strides of flipped views.
    return np.ascontiguousarray(rgb)


# -- files ---------------------------------------------------------------------------------------------------


def check_pixels(width: int, height: int, name: str | Path) -> None:
    """Refuse an image of more than :data:`MAX_IMAGE_PIXELS` pixels.

    Raises:
        ValueError: Naming ``name`` and the image's size.
    """
    if MAX_IMAGE_PIXELS is not None and width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image too large: {name}: {width} x {height} = {width * height:,} pixels, more than "
            f"lightning_gpv.tasks.processing.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}"
        )


@contextmanager
def open_image(source: str | Path | IO[bytes], name: str | Path | None = None) -> Iterator[Image.Image]:
    """``PIL.Image.open`` (header only, nothing decoded) with the :data:`MAX_IMAGE_PIXELS` check.

    Args:
        source: A path or a binary file object.
        name: What error messages call the image (default: ``source``).

    Raises:
        FileNotFoundError: The path does not exist (the message names it).
        ValueError: Not an image PIL can identify, or too large; the message names the image.
    """
    label = name if name is not None else source
    with warnings.catch_warnings():
        # MAX_IMAGE_PIXELS decides; PIL's warning for images between its two thresholds names no file.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {label}") from None
        except Image.DecompressionBombError as err:
            raise InputError(f"image too large: {label}: {err} (PIL.Image.MAX_IMAGE_PIXELS)") from None
        except _DECODE_ERRORS as err:
            raise InputError(f"cannot read image {label}: {err}") from err
    with img:
        check_pixels(img.width, img.height, label)
        yield img


def load_image(ref: ImageRef, *, exif_transpose: bool = False) -> np.ndarray:
    """Decode an image reference into an ``(H, W, 3)`` uint8 RGB array (see the module docstring).

    Args:
        ref: A file path or an array (converted by :func:`to_rgb`).
        exif_transpose: Apply the file's EXIF orientation, so the array is the displayed image (user photos);
            ``False`` keeps the stored pixels (annotated data sets, whose boxes are in stored pixels). An
            :class:`UprightImagePath` is always transposed.

    Raises:
        FileNotFoundError: The path does not exist (the message names it).
        IsADirectoryError: The path is a folder.
        ValueError: The file is not a readable image or has more than :data:`MAX_IMAGE_PIXELS` pixels (the
            message names it), or the array has an unsupported shape or dtype.
    """
    if isinstance(ref, np.ndarray):
        return to_rgb(ref)
    path = Path(ref)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    upright = exif_transpose or isinstance(ref, UprightImagePath)
    with open_image(path) as img:
        try:
            return to_rgb(img, exif_transpose=upright)
        except _DECODE_ERRORS as err:
            raise InputError(f"cannot decode image {path}: {err}") from err


def image_size(ref: ImageRef, *, exif_transpose: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image, reading only the header of a file.

    Args:
        ref: A file path or an array.
        exif_transpose: The displayed size (height and width swapped for EXIF orientations 5..8), as
            :func:`load_image` with the same argument returns; an :class:`UprightImagePath` always is.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: Not a readable image, or more than :data:`MAX_IMAGE_PIXELS` pixels (the message names it).
    """
    if isinstance(ref, np.ndarray):
        return int(ref.shape[0]), int(ref.shape[1])
    path = Path(ref)
    upright = exif_transpose or isinstance(ref, UprightImagePath)
    with open_image(path) as img:
        height, width = img.height, img.width
        if upright and exif_orientation(img) >= 5:  # 5..8 turn the image by 90 degrees
            height, width = width, height
        return height, width
