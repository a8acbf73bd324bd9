"""LightningDataModules that read the benchmarks' official files (and their HF ``datasets`` copies) into
model-agnostic :class:`~lightning_gpv.tasks.samples.TaskSample` objects.

One data module per data set family; a model's processor (``encode``/``collate``) is handed over with
``processor=`` or :meth:`~datamodules.base.TaskDataModule.connect`. See ``docs/datamodules.md``.

This package imports :mod:`lightning_gpv`; :mod:`lightning_gpv` never imports it.
"""

from datamodules.attcoseg import AttCosegDataModule
from datamodules.base import TaskDataModule, TaskDataset
from datamodules.coco import CocoDataModule, CocoSceDataModule
from datamodules.coseg import CosegDataModule
from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.folder import ImageFolderDataModule
from datamodules.grefcoco import GRefCocoDataModule
from datamodules.hf import HFDataModule
from datamodules.multitask import MultiTaskDataModule
from datamodules.nlvr2 import Nlvr2DataModule
from datamodules.refcoco import RefCocoDataModule
from datamodules.safe_pickle import UnsafePickleError, safe_load_pickle
from datamodules.vqav2 import VQAv2DataModule, VQAv2SceDataModule

__all__ = [
    "AttCosegDataModule",
    "CocoDataModule",
    "CocoSceDataModule",
    "CosegDataModule",
    "DataFormatError",
    "GRefCocoDataModule",
    "HFDataModule",
    "ImageFolderDataModule",
    "MultiTaskDataModule",
    "Nlvr2DataModule",
    "RefCocoDataModule",
    "TaskDataModule",
    "TaskDataset",
    "UnknownSplitError",
    "UnsafePickleError",
    "VQAv2DataModule",
    "VQAv2SceDataModule",
    "safe_load_pickle",
]
