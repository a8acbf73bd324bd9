"""What a saved VistaLLM folder holds, besides the weights (``VistaLLM.save_pretrained``).

```
DIR/config.json         {"family": "vistallm", "config": VistaLLMConfig as plain data (portable_config)}
DIR/model.safetensors   every weight of the model (LoRA adapters under their peft names)
DIR/llm_config.json     the LLM's transformers config: its architecture, rebuilt without any download
DIR/tokenizer/          the LLM tokenizer, coordinate and <image> tokens included
DIR/qformer_tokenizer/  the QFormer's instruction tokenizer
DIR/processor.json      processor settings (evaluation instruction template)
```

An adapter folder (``VistaLLM.save_adapter``, a LoRA model) holds, instead of ``model.safetensors`` and
``llm_config.json``, ``adapter.safetensors``: only what training changed or what no base model provides
(:func:`from_base`): the LoRA weights, the added tokens' rows, the instruction-guided tokenizer (QFormer,
queries, projection), and the image encoder or LLM only when the config builds them at random. Its
config (:func:`adapter_config`) keeps the base models' names, which must be reachable where it loads.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from lightning_gpv.models.hub import inside, read_folder_config, write_folder_config
from lightning_gpv.models.vistallm.config import VisionConfig, VistaLLMConfig
from lightning_gpv.models.vistallm.llm import is_adapter_weight

FAMILY = "vistallm"
LLM_CONFIG_FILE = "llm_config.json"
TOKENIZER_DIR = "tokenizer"
QFORMER_TOKENIZER_DIR = "qformer_tokenizer"
PROCESSOR_FILE = "processor.json"
ADAPTER_FILE = "adapter.safetensors"

_VISION_WEIGHT_FIELDS = ("open_clip_pretrained", "hf_name_or_path")
"""VisionConfig fields that point at pretrained weights (those the config has are cleared on saving)."""


def portable_config(config: VistaLLMConfig) -> VistaLLMConfig:
    """The config a folder stores: no pointer to pretrained weights (the folder holds every weight) and
    the tokenizers in the folder's sub-folders (relative names, resolved by :func:`read_config`)."""
    names = {f.name for f in fields(VisionConfig)}
    vision = replace(config.vision, **{k: None for k in _VISION_WEIGHT_FIELDS if k in names})
    qformer = replace(
        config.qformer, checkpoint=None, tokenizer=QFORMER_TOKENIZER_DIR, tokenizer_subfolder=None
    )
    llm = replace(
        config.llm, name_or_path=None, gguf_file=None, tokenizer_kind="pretrained", tokenizer=TOKENIZER_DIR
    )
    return replace(config, vision=vision, qformer=qformer, llm=llm)


def adapter_config(config: VistaLLMConfig) -> VistaLLMConfig:
    """The config an adapter folder stores: the base models' names kept (their weights are not in the
    folder), the QFormer's weights and both tokenizers taken from the folder."""
    qformer = replace(
        config.qformer, checkpoint=None, tokenizer=QFORMER_TOKENIZER_DIR, tokenizer_subfolder=None
    )
    llm = replace(config.llm, tokenizer_kind="pretrained", tokenizer=TOKENIZER_DIR)
    return replace(config, qformer=qformer, llm=llm)


def from_base(key: str, config: VistaLLMConfig) -> bool:
    """Whether the weight ``key`` of a VistaLLM state dict comes from a base model named by ``config``
    (so an adapter folder leaves it out): the image encoder's weights when the config names pretrained
    ones, the LLM's own weights (not peft's) when it names a pretrained LLM. The instruction-guided
    tokenizer always trains."""
    part, _, rest = key.partition(".")
    if part == "vision":
        return any(getattr(config.vision, name, None) for name in _VISION_WEIGHT_FIELDS)
    if part == "llm":
        return config.llm.name_or_path is not None and not is_adapter_weight(rest)
    return False


def write_config(folder: Path, config: VistaLLMConfig, llm: PreTrainedModel) -> None:
    """Write ``config.json`` (the portable config) and ``llm_config.json`` (the LLM's architecture)."""
    write_folder_config(folder, FAMILY, portable_config(config).to_dict())
    llm_config = llm.config.to_dict()
    if llm_config.get("tie_word_embeddings") and not hasattr(llm, "peft_config"):  # peft: the base's own
        output = llm.get_output_embeddings()
        if output is None or output.weight is not llm.get_input_embeddings().weight:
            # Trained apart (LoRA's modules_to_save, then merged): the rebuilt LLM must not tie them again.
            llm_config["tie_word_embeddings"] = False
    (folder / LLM_CONFIG_FILE).write_text(json.dumps(llm_config, indent=2, sort_keys=True), encoding="utf-8")


def read_config(folder: Path) -> VistaLLMConfig:
    """The saved config with its tokenizer sub-folders made absolute."""
    config = VistaLLMConfig.from_dict(read_folder_config(folder, FAMILY))
    llm = replace(config.llm, tokenizer=inside(folder, config.llm.tokenizer))
    qformer = replace(config.qformer, tokenizer=inside(folder, config.qformer.tokenizer))
    return replace(config, llm=llm, qformer=qformer)


def build_saved_llm(folder: Path) -> PreTrainedModel:
    """The LLM of ``llm_config.json`` with random weights (the caller loads the saved ones): any causal LM
    architecture transformers knows, built without downloading anything."""
    path = folder / LLM_CONFIG_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        model_type = data.pop("model_type")
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not an LLM config written by save_pretrained ({err})") from err
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **data))
