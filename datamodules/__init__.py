"""LightningDataModules that read the benchmarks' official files (and their HF ``datasets`` copies) into
model-agnostic :class:`~lightning_gpv.tasks.samples.TaskSample` objects.

One data module per data set family; what its reader reads is one options object (``CocoOptions``,
``RefCocoOptions``, ...; the YAML ``options:`` block), and a model's processor (``encode``/``collate``) is
handed over with ``processor=`` or :meth:`~datamodules.base.TaskDataModule.connect`. See
``docs/datamodules.md``.

This package imports :mod:`lightning_gpv`; :mod:`lightning_gpv` does not import it, except the
``build-vocab`` command, which reads its training answers through :mod:`datamodules.vocab` when it runs.
"""

from datamodules.attcoseg import AttCosegDataModule
from datamodules.base import TaskDataModule, TaskDataset
from datamodules.coco import CocoDataModule, CocoOptions, CocoSceDataModule
from datamodules.coseg import CosegDataModule, CosegOptions
from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.folder import ImageFolderDataModule
from datamodules.grefcoco import GRefCocoDataModule, GRefCocoOptions
from datamodules.hf import HFDataModule, HFOptions
from datamodules.multitask import MultiTaskDataModule
from datamodules.nlvr2 import Nlvr2DataModule, Nlvr2Options
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from datamodules.safe_pickle import UnsafePickleError, safe_load_pickle
from datamodules.sce import SceOptions
from datamodules.vqav2 import VQAv2DataModule, VQAv2Options, VQAv2SceDataModule

__all__ = [
    "AttCosegDataModule",
    "CocoDataModule",
    "CocoOptions",
    "CocoSceDataModule",
    "CosegDataModule",
    "CosegOptions",
    "DataFormatError",
    "GRefCocoDataModule",
    "GRefCocoOptions",
    "HFDataModule",
    "HFOptions",
    "ImageFolderDataModule",
    "MultiTaskDataModule",
    "Nlvr2DataModule",
    "Nlvr2Options",
    "RefCocoDataModule",
    "RefCocoOptions",
    "SceOptions",
    "TaskDataModule",
    "TaskDataset",
    "UnknownSplitError",
    "UnsafePickleError",
    "VQAv2DataModule",
    "VQAv2Options",
    "VQAv2SceDataModule",
    "safe_load_pickle",
]
