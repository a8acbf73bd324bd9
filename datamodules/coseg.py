"""Co-segmentation benchmarks (PASCAL-VOC co-seg, MSRC, Internet, iCoSeg): segment what all images share.

Layouts (``root`` is the data set folder)::

    pascal:  root/images/<class>/<name>.jpg        root/GT/<class>/<name>.png
    icoseg:  root/images/<group>/<name>.jpg        root/ground_truth/<group>/<name>.png
    msrc:    root/<class>/<name>.bmp               root/<class>/GroundTruth/<name>.png (also .bmp, .jpg,
             (also the Internet set: root/Airplane100/*.jpg + GroundTruth/)   ``<name>_GT.*``)

Ground truth is binarised at 128 on its first channel (MCANet's convention). A sample is a group of
``group_size`` images of one class (the class's images sorted by name, cut in consecutive chunks; a last
chunk of one image joins the previous one); ``group_size=0`` puts the whole class in one sample. Targets:
one mask per image (``target.mask_image`` gives its image), decoded from the PNG in ``__getitem__``.

Splits: ``all`` (what the benchmarks report on), and ``train``/``val``/``test``, a deterministic 80/10/10
partition of each class's images by a hash of the file name (for training on ShapesWorld).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from datamodules.base import Reader, TaskDataModule
from datamodules.errors import DataFormatError, OnBadSample
from lightning_gpv.errors import InputError
from lightning_gpv.geometry.masks import Mask
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

CosegLayout = Literal["pascal", "msrc", "icoseg"]
COSEG_SPLITS: tuple[str, ...] = ("all", "train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_GT_FOLDER = {"pascal": "GT", "icoseg": "ground_truth"}


@dataclass(frozen=True)
class CosegOptions:
    """The layout of a co-segmentation folder and how its images are grouped.

    Args:
        layout: ``pascal`` (``images/``, ``GT/``), ``msrc`` (``<class>/``, ``<class>/GroundTruth/``; also the
            Internet set) or ``icoseg`` (``images/``, ``ground_truth/``).
        group_size: Images per sample, at least 2 (``0``: all images of a class in one sample).
    """

    layout: CosegLayout = "pascal"
    group_size: int = 3

    def __post_init__(self) -> None:
        if self.layout not in ("pascal", "msrc", "icoseg"):
            raise InputError(f"layout must be 'pascal', 'msrc' or 'icoseg', got {self.layout!r}")
        if self.group_size == 1 or self.group_size < 0:
            raise InputError(f"group_size must be 0 (whole class) or >= 2, got {self.group_size}")


class CosegRecord(NamedTuple):
    """One group: image and ground-truth files of one class."""

    group: str
    images: tuple[str, ...]
    masks: tuple[str, ...]
    chunk: int


def part_of(name: str) -> str:
    """``train``/``val``/``test`` (80/10/10) of a file name, by CRC32 (stable across runs and machines)."""
    r = zlib.crc32(name.encode("utf-8")) % 10
    return "val" if r == 8 else "test" if r == 9 else "train"


def load_binary_mask(path: str | Path) -> np.ndarray:
    """A ground-truth image as an ``(H, W)`` bool mask (first channel >= 128).

    Raises:
        DataFormatError: Missing or unreadable file.
    """
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L") if img.mode in ("1", "P", "L", "LA", "I", "I;16") else img)
    except FileNotFoundError:
        raise DataFormatError(path, "ground truth", "mask file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataFormatError(path, "ground truth", f"not a readable mask image: {err}") from err
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr >= 128


class CosegReader(Reader):
    """Finds image/ground-truth pairs of a co-segmentation layout and groups them.

    Args:
        root: The data set folder.
        options: Layout and group size.
        on_bad_sample: ``"raise"`` or ``"skip"`` images without ground truth.
    """

    name = "coseg"

    def __init__(
        self, root: str | Path, options: CosegOptions = CosegOptions(), on_bad_sample: OnBadSample = "raise"
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.options = options
        self.layout = options.layout
        self.group_size = options.group_size
        self.name = f"coseg-{options.layout}"
        self.bad.name = self.name

    @property
    def splits(self) -> tuple[str, ...]:
        return COSEG_SPLITS

    def _class_dirs(self) -> list[Path]:
        base = self.root if self.layout == "msrc" else self.root / "images"
        if not base.is_dir():
            raise DataFormatError(base, None, f"image folder of the {self.layout} layout not found")
        gt = self.root / _GT_FOLDER.get(self.layout, "")
        if self.layout != "msrc" and not gt.is_dir():
            raise DataFormatError(gt, None, f"ground-truth folder of the {self.layout} layout not found")
        dirs = sorted(d for d in base.iterdir() if d.is_dir() and d.name != "GroundTruth")
        if not dirs:
            raise DataFormatError(base, None, "no class folders found")
        return dirs

    def _gt_file(self, cls_dir: Path, image: Path) -> Path | None:
        if self.layout == "msrc":
            gt_dir = cls_dir / "GroundTruth"
        else:
            gt_dir = self.root / _GT_FOLDER[self.layout] / cls_dir.name
        for stem in (image.stem, f"{image.stem}_GT"):
            for suffix in (".png", ".bmp", ".jpg"):
                if (p := gt_dir / f"{stem}{suffix}").is_file():
                    return p
        return None

    def read(self, split: str, *, train: bool) -> list[CosegRecord]:
        self.check_split(split)
        records: list[CosegRecord] = []
        for cls_dir in self._class_dirs():
            pairs: list[tuple[str, str]] = []
            for image in sorted(p for p in cls_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                if split != "all" and part_of(f"{cls_dir.name}/{image.name}") != split:
                    continue
                gt = self._gt_file(cls_dir, image)
                if gt is None:
                    self.report(DataFormatError(image, "ground truth", "no ground-truth mask for this image"))
                    continue
                pairs.append((str(image), str(gt)))
            records += self._groups(cls_dir.name, pairs)
        return records

    def _groups(self, group: str, pairs: list[tuple[str, str]]) -> list[CosegRecord]:
        if len(pairs) < 2:
            return []
        size = self.group_size or len(pairs)
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        if len(chunks) > 1 and len(chunks[-1]) < 2:
            last = chunks.pop()
            chunks[-1] = chunks[-1] + last
        return [
            CosegRecord(group, tuple(p[0] for p in c), tuple(p[1] for p in c), k)
            for k, c in enumerate(chunks)
        ]

    def sample(self, record: CosegRecord, *, train: bool) -> TaskSample:
        masks, sizes = [], []
        for path in record.masks:
            arr = load_binary_mask(path)
            masks.append(Mask.from_array(arr))
            sizes.append((int(arr.shape[0]), int(arr.shape[1])))
        return TaskSample(
            Task.COSEG,
            list(record.images),
            Target(masks=masks, mask_image=np.arange(len(masks))),
            image_sizes=sizes,
            sample_id=f"coseg-{record.group}-{record.chunk}",
            image_ids=[Path(p).stem for p in record.images],
            metadata={"group": record.group, "mask_files": list(record.masks), "layout": self.layout},
        )


class CosegDataModule(TaskDataModule):
    """Co-segmentation on the PASCAL, MSRC/Internet or iCoSeg layout.

    Args:
        root: The data set folder.
        options: Layout (default ``pascal``) and images per sample (default 3).
        train_split: ``train`` (hash partition) or ``None``.
        val_split: ``val`` or ``None``.
        test_split: ``all`` (benchmarks) or ``test``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: CosegOptions = CosegOptions(),
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self.options = options

    def make_reader(self) -> CosegReader:
        return CosegReader(self.root, self.options, self.on_bad_sample)
