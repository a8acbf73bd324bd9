"""What a saved GPV-1 folder holds, besides the weights (``GPV1.save_pretrained``).

```
DIR/config.json          {"family": "gpv1", "config": GPV1Config as plain data (portable_config)}
DIR/model.safetensors    every weight, the answer vocabulary's vectors included
DIR/text_encoder/        the query encoder's transformers config.json (architecture only)
DIR/detr/                DETR's transformers config.json (architecture only)
DIR/tokenizer/           the query tokenizer
DIR/answers/vocab.json   the answer vocabulary's words
DIR/processor.json       processor settings (prompt seed)
```
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.hub import inside, read_folder_config, write_folder_config

FAMILY = "gpv1"
TEXT_ENCODER_DIR = "text_encoder"
DETR_DIR = "detr"
TOKENIZER_DIR = "tokenizer"
ANSWERS_DIR = "answers"
PROCESSOR_FILE = "processor.json"


def portable_config(config: GPV1Config) -> GPV1Config:
    """The config a folder stores: the text encoder and DETR as architecture-only sub-folders (the folder
    holds every weight), the tokenizer in its sub-folder (relative names, resolved by :func:`read_config`)."""
    text = replace(config.text, name_or_path=TEXT_ENCODER_DIR, tokenizer_name_or_path=TOKENIZER_DIR)
    return replace(config, text=text, visual=replace(config.visual, name_or_path=DETR_DIR))


def write_config(folder: Path, config: GPV1Config, text_encoder: Any, detr: Any) -> None:
    """Write ``config.json`` and the architectures of the text encoder and DETR (transformers configs)."""
    write_folder_config(folder, FAMILY, portable_config(config).to_dict())
    text_encoder.config.save_pretrained(folder / TEXT_ENCODER_DIR)
    detr.config.save_pretrained(folder / DETR_DIR)


def read_config(folder: Path) -> GPV1Config:
    """The saved config with its sub-folders made absolute."""
    config = GPV1Config.from_dict(read_folder_config(folder, FAMILY))
    text = replace(
        config.text,
        name_or_path=inside(folder, config.text.name_or_path),
        tokenizer_name_or_path=inside(folder, config.text.tokenizer_name_or_path),
    )
    visual = replace(config.visual, name_or_path=inside(folder, config.visual.name_or_path))
    return replace(config, text=text, visual=visual)
