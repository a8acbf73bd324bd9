"""Torchmetrics that reproduce the official evaluation code of the GPV-1 / VistaLLM benchmarks.

Every metric keeps tensor states only, is synced by torchmetrics under DDP, and drops the samples a
``DistributedSampler`` repeats when ``update`` receives sample ``ids``. Definitions and quirks:
see the docstring of each class.
"""

from lightning_gpv.metrics.captioning import CIDErD
from lightning_gpv.metrics.classification import ClassificationAccuracy, NLVRScore, vocabulary_mask
from lightning_gpv.metrics.grounding import GRECScore, LocalizationAP, ReferringAccuracy
from lightning_gpv.metrics.masks import polygons_to_mask
from lightning_gpv.metrics.ptb_tokenizer import ptb_tokenize, ptb_tokenize_lines
from lightning_gpv.metrics.segmentation import CoSegScore, GRESScore, MaskIoU
from lightning_gpv.metrics.vqa import VQAAccuracy, normalize_vqa_answer

__all__ = [
    "CIDErD",
    "ClassificationAccuracy",
    "CoSegScore",
    "GRECScore",
    "GRESScore",
    "LocalizationAP",
    "MaskIoU",
    "NLVRScore",
    "ReferringAccuracy",
    "VQAAccuracy",
    "normalize_vqa_answer",
    "polygons_to_mask",
    "ptb_tokenize",
    "ptb_tokenize_lines",
    "vocabulary_mask",
]
