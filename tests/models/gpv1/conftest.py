"""Shared fixtures of the GPV-1 tests: a tiny model and a tiny WordPiece tokenizer (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_gpv.models.gpv1 import GPV1, GPV1Config  # noqa: E402
from lightning_gpv.models.gpv1.text import write_wordpiece_vocab  # noqa: E402

TEXTS = [
    "What color is the circle?",
    "Locate all instances of square in the image.",
    "Find the red star.",
    "What is this object?",
    "Describe the image.",
]


@pytest.fixture(scope="session")
def wordpiece_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wordpiece_vocab(TEXTS, tmp_path_factory.mktemp("tok") / "vocab.txt")


@pytest.fixture
def tiny_config(wordpiece_vocab: Path) -> GPV1Config:
    config = GPV1Config.tiny()
    config.text.tokenizer_name_or_path = str(wordpiece_vocab)
    return config


@pytest.fixture
def tiny_model(tiny_config: GPV1Config) -> GPV1:
    torch.manual_seed(0)
    model = GPV1(
        tiny_config, answer_vectors=torch.randn(tiny_config.vocab_size, tiny_config.text.hidden_size)
    )
    return model.eval()


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread."""
