"""Shared tiny VistaLLM fixtures (random weights, offline word tokenizer)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_gpv.geometry import Mask
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.models.vistallm.tokenization import load_llm_tokenizer, load_qformer_tokenizer
from lightning_gpv.tasks import Target, Task, TaskSample

# ``_generation_ddp`` must be importable by spawned processes (the suite uses --import-mode=importlib).
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def tiny_config() -> VistaLLMConfig:
    return VistaLLMConfig.tiny()


@pytest.fixture(scope="session")
def tiny_processor(tiny_config: VistaLLMConfig) -> VistaLLMProcessor:
    tokenizer = load_llm_tokenizer(tiny_config.llm, tiny_config.codec)
    qformer_tokenizer = load_qformer_tokenizer(tiny_config.qformer, tiny_config.llm)
    return VistaLLMProcessor(tiny_config, tokenizer, qformer_tokenizer)


@pytest.fixture
def tiny_model(tiny_config: VistaLLMConfig, tiny_processor: VistaLLMProcessor) -> VistaLLM:
    torch.manual_seed(0)
    return VistaLLM.from_config(tiny_config, tokenizer=tiny_processor.tokenizer)


def _image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _rect_mask(height: int, width: int, box: tuple[int, int, int, int]) -> Mask:
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return Mask.from_array(mask)


@pytest.fixture(scope="session")
def samples() -> dict[str, TaskSample]:
    """One sample per answer format, with 1, 2 and 4 images."""
    rng = np.random.default_rng(0)
    mask = _rect_mask(80, 100, (20, 10, 70, 50))
    return {
        "rec": TaskSample(Task.REC, [_image(rng, 80, 100)], Target(boxes=[[20, 10, 70, 50]]),
                          expression="the red circle", sample_id="rec-0"),
        "res": TaskSample(Task.RES, [_image(rng, 80, 100)], Target(masks=[mask]),
                          expression="the blue square", sample_id="res-0"),
        "vqa": TaskSample(Task.VQA, [_image(rng, 60, 90)], Target(text="red", answers=["red"] * 10),
                          question="What color is the circle?", sample_id="vqa-0"),
        "nlvr2": TaskSample(Task.NLVR2, [_image(rng, 80, 100), _image(rng, 50, 70)], Target(text="True"),
                            question="There are two circles.", sample_id="nlvr2-0"),
        "coseg": TaskSample(Task.COSEG, [_image(rng, 80, 100) for _ in range(4)],
                            Target(masks=[mask] * 4, mask_image=[0, 1, 2, 3]), sample_id="coseg-0"),
        "attcoseg": TaskSample(Task.ATTCOSEG, [_image(rng, 80, 100) for _ in range(4)],
                               Target(masks=[mask, mask], mask_image=[1, 3], selected_images=[1, 3]),
                               sample_id="attcoseg-0"),
        "reg": TaskSample(Task.REG, [_image(rng, 80, 100)], Target(text="the left circle"),
                          region=[20, 10, 70, 50], sample_id="reg-0"),
    }  # fmt: skip
