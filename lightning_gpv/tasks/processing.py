"""The contract between data and models: a model's processor turns :class:`TaskSample` into tensors.

Data modules know nothing about models. A model family ships a processor (``GPV1Processor``,
``VistaLLMProcessor``) that implements :class:`SampleProcessor`; a data module receives it through its
``connect(processor)`` method (the Lightning CLI links ``model.processor`` to ``data.processor``) and then

* calls ``processor.encode(sample, train=...)`` in ``Dataset.__getitem__``, so decoding, resizing and
  tokenization run in the loader's worker processes, and
* uses ``processor.collate`` as the loader's ``collate_fn``.

Without a processor a data module yields plain lists of :class:`TaskSample` (handy in notebooks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, UnidentifiedImageError

from lightning_gpv.tasks.samples import ImageRef, TaskSample


@runtime_checkable
class SampleProcessor(Protocol):
    """Turns samples into model inputs. Must be picklable (it travels to loader workers)."""

    def encode(self, sample: TaskSample, *, train: bool) -> Any:
        """Encode one sample (runs in a worker): load and transform images, tokenize text and targets."""
        ...

    def collate(self, items: list[Any]) -> Any:
        """Batch encoded samples (the loader's ``collate_fn``)."""
        ...


def load_image(ref: ImageRef) -> np.ndarray:
    """Decode an image reference into an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        FileNotFoundError: The path does not exist (the message names it).
        ValueError: The file is not a readable image, or the array has the wrong shape or dtype.
    """
    if isinstance(ref, np.ndarray):
        arr = ref
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(f"image array must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
        return np.ascontiguousarray(arr[..., :3])
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err


def image_size(ref: ImageRef) -> tuple[int, int]:
    """``(height, width)`` of an image, reading only the header of a file."""
    if isinstance(ref, np.ndarray):
        return int(ref.shape[0]), int(ref.shape[1])
    path = Path(ref)
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image header of {path}: {err}") from err
