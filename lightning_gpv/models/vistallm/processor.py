"""``VistaLLMProcessor``: :class:`~lightning_gpv.tasks.samples.TaskSample` to VistaLLM tensors and back.

:meth:`VistaLLMProcessor.encode` runs in loader workers:

1. images are decoded and resized to ``S x S`` (bicubic, no crop, no flip, so boxes and masks keep their
   meaning; coordinates are always relative to the *original* image size) and normalised; with
   ``image_cache`` (a number of files) the resized pixels of a file are computed once per process;
2. an instruction is rendered (a random template in training, a fixed one in evaluation); regions and
   points in it are written with coordinate tokens for the LLM and as plain numbers for the QFormer;
3. the target is serialized (:meth:`~lightning_gpv.models.vistallm.codec.CoordinateCodec.serialize_answer`);
4. ``prompt_template`` wraps the instruction (:func:`render_prompt`: a format string, or the LLM
   tokenizer's chat template for ``CHAT_TEMPLATE``); each ``<image>`` becomes ``L`` image-token ids; the
   labels are ``-100`` everywhere but on the answer and its end token.

:meth:`VistaLLMProcessor.collate` pads training sequences on the right and generation prompts on the
left. :meth:`VistaLLMProcessor.decode` turns generated ids into :class:`Prediction` objects.

Every coordinate written or read here goes through one :class:`CoordinateCodec` (``processor.codec``), built
from the config's ``num_bins`` and ``num_mask_points``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from lightning_gpv.models.hub import local_folder, read_settings, write_settings
from lightning_gpv.models.vistallm import folder
from lightning_gpv.models.vistallm.codec import Style, decode_generated
from lightning_gpv.models.vistallm.config import CHAT_TEMPLATE, VistaLLMConfig
from lightning_gpv.models.vistallm.model import IGNORE_INDEX
from lightning_gpv.models.vistallm.tokenization import (
    added_tokens,
    load_llm_tokenizer,
    load_qformer_tokenizer,
    require_chat_template,
)
from lightning_gpv.tasks.catalogue import IMAGE_TOKEN, Task
from lightning_gpv.tasks.image_cache import ImageFileCache
from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.prompts import VISTALLM_PROMPTS
from lightning_gpv.tasks.samples import ImageRef, Prediction, Target, TaskSample


@dataclass
class VistaLLMItem:
    """One encoded sample.

    Attributes:
        pixel_values: ``(k, 3, S, S)`` normalised images.
        input_ids: ``(T,)`` prompt (image tokens expanded), answer and end token.
        labels: ``(T,)`` answer ids and the end token, ``-100`` on the prompt.
        prompt_length: Number of prompt tokens at the start of ``input_ids``.
        instruction_ids: ``(T_q,)`` QFormer instruction ids.
        task: The task.
        sample_id: The sample's id.
        image_sizes: ``(height, width)`` of each original image.
        target: The sample's target (for metrics).
        instruction: The rendered instruction (human-readable coordinates).
        metadata: The sample's metadata (NLVR2 identifier, co-segmentation group, ...).
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    labels: torch.Tensor
    prompt_length: int
    instruction_ids: torch.Tensor
    task: Task
    sample_id: str
    image_sizes: list[tuple[int, int]]
    target: Target
    instruction: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class VistaLLMBatch:
    """A collated batch (``B`` samples, ``N`` images in all).

    Attributes:
        pixel_values: ``(N, 3, S, S)`` images, sample by sample.
        image_counts: ``(B,)`` images per sample.
        input_ids: ``(B, T)`` right-padded training sequences.
        attention_mask: ``(B, T)``.
        labels: ``(B, T)`` with ``-100`` off the answers.
        prompt_ids: ``(B, T_p)`` left-padded prompts for generation.
        prompt_mask: ``(B, T_p)``.
        instruction_ids: ``(B, T_q)`` right-padded QFormer instructions.
        instruction_mask: ``(B, T_q)``.
        tasks, sample_ids, image_sizes, targets, metadata: per-sample bookkeeping (not tensors).
    """

    pixel_values: torch.Tensor
    image_counts: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    instruction_ids: torch.Tensor
    instruction_mask: torch.Tensor
    tasks: list[Task] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    image_sizes: list[list[tuple[int, int]]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> VistaLLMBatch:
        """A copy with the tensors on ``device``; the bookkeeping lists are shared, not copied."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of :meth:`VistaLLM.forward`."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values,
            "instruction_ids": self.instruction_ids,
            "instruction_mask": self.instruction_mask,
            "image_counts": self.image_counts,
            "labels": self.labels,
        }

    def generation_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of :meth:`VistaLLM.generate` (without the decoding settings)."""
        return {
            "prompt_ids": self.prompt_ids,
            "prompt_mask": self.prompt_mask,
            "pixel_values": self.pixel_values,
            "instruction_ids": self.instruction_ids,
            "instruction_mask": self.instruction_mask,
            "image_counts": self.image_counts,
        }


def render_prompt(template: str, instruction: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt text of one rendered instruction; the answer follows it directly.

    Args:
        template: A format string with one ``{instruction}`` slot, or ``CHAT_TEMPLATE``: the instruction
            becomes one user turn rendered by ``tokenizer.apply_chat_template`` with the generation prompt.
        instruction: The task instruction (``<image>`` and coordinate tokens already written in).
        tokenizer: The LLM tokenizer (its chat template is used for ``CHAT_TEMPLATE``).

    Returns:
        The prompt text. A chat-template prompt already holds every special token the template writes
        (the begin token included), so it is tokenized with ``add_special_tokens=False``.

    Raises:
        ValueError: ``CHAT_TEMPLATE`` with a tokenizer that has no chat template (the message names it).
    """
    if template != CHAT_TEMPLATE:
        return template.format(instruction=instruction)
    require_chat_template(tokenizer)
    messages = [{"role": "user", "content": instruction}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, not the prompt text")
    return text


def _pad(rows: Sequence[torch.Tensor], value: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors into ``(B, T_max)`` with ``value`` padding, and the ``(B, T_max)`` mask."""
    length = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        out[i, span] = row
        mask[i, span] = 1
    return out, mask


class VistaLLMProcessor:
    """Implements :class:`~lightning_gpv.tasks.processing.SampleProcessor` for VistaLLM (picklable).

    Args:
        config: The model config (image size, normalisation, prompt template, bins, lengths).
        tokenizer: LLM tokenizer with the added tokens (``load_llm_tokenizer``).
        qformer_tokenizer: Tokenizer of the QFormer's instruction text.
        eval_template: Template index used when ``train=False``.

    Attributes:
        codec: The coordinate codec of ``config`` (its ``num_bins`` and ``num_mask_points``); instructions,
            targets and the parsing of generated text all use it.
    """

    def __init__(
        self,
        config: VistaLLMConfig,
        tokenizer: PreTrainedTokenizerBase,
        qformer_tokenizer: PreTrainedTokenizerBase,
        *,
        eval_template: int = 0,
        image_cache: int = 0,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.eval_template = eval_template
        self.image_cache = ImageFileCache(image_cache)
        self.codec = config.codec
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.num_queries = config.qformer.num_queries
        self.mean = torch.tensor(config.vision.mean).view(3, 1, 1)
        self.std = torch.tensor(config.vision.std).view(3, 1, 1)
        added = sorted(added_tokens(self.codec), key=len, reverse=True)
        self._added = re.compile("|".join(re.escape(t) for t in added))
        if config.prompt_template == CHAT_TEMPLATE:
            # Fail when the model is built, not later in a loader worker.
            require_chat_template(tokenizer)

    # ------------------------------------------------------------------------------------------------
    # Saved folders

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the tokenizers and the processor settings into a model folder (the model writes the
        config and the weights: ``VistaLLM.save_pretrained``)."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path / folder.TOKENIZER_DIR)
        self.qformer_tokenizer.save_pretrained(path / folder.QFORMER_TOKENIZER_DIR)
        write_settings(path / folder.PROCESSOR_FILE, {"eval_template": self.eval_template})

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **hub_kwargs: Any) -> VistaLLMProcessor:
        """The processor of a saved model folder (local or on the hub; see ``VistaLLM.from_pretrained``)."""
        path = local_folder(name_or_path, **hub_kwargs)
        config = folder.read_config(path)
        tokenizer = load_llm_tokenizer(config.llm, config.codec)
        qformer_tokenizer = load_qformer_tokenizer(config.qformer, config.llm)
        settings = read_settings(path / folder.PROCESSOR_FILE)
        return cls(config, tokenizer, qformer_tokenizer, eval_template=int(settings.get("eval_template", 0)))

    # ------------------------------------------------------------------------------------------------
    # Pieces

    def image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB to a ``(3, S, S)`` normalised float tensor (bicubic resize)."""
        return self._normalised(self._resized(image))

    def _resized(self, image: np.ndarray) -> np.ndarray:
        side = self.config.vision.image_size
        return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))

    def _normalised(self, resized: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self.mean) / self.std

    def _load_resized(self, ref: ImageRef) -> tuple[np.ndarray, tuple[int, int]]:
        """``(S, S, 3)`` uint8 resized pixels of an image and its original ``(height, width)``."""
        image = load_image(ref)
        resized = self._resized(image)
        resized.flags.writeable = False  # shared by every later hit of self.image_cache
        return resized, (int(image.shape[0]), int(image.shape[1]))

    def instruction(
        self, sample: TaskSample, sizes: Sequence[tuple[int, int]], index: int, style: Style
    ) -> str:
        """The rendered instruction with regions and points written in ``style``."""
        height, width = sizes[0]
        slots = {key: self.plain_text(value) for key, value in sample.prompt_slots().items()}
        if sample.region is not None:
            slots["region"] = self.codec.format_boxes(sample.region, width, height, style)
        if sample.point is not None:
            slots["point"] = self.codec.format_points(sample.point, width, height, style)
        return VISTALLM_PROMPTS.render(
            sample.task,
            index=index,
            num_images=sample.num_images,
            mask_points=self.codec.num_mask_points,
            **slots,
        )

    def plain_text(self, text: str) -> str:
        """User text with every added token written apart (``<image>`` -> ``< image>``), so that an
        expression or question mentioning ``<image>`` or ``<c5>`` is read as words: it can neither add
        visual tokens nor coordinates."""
        if "<" not in text:
            return text
        return self._added.sub(lambda m: f"{m.group()[0]} {m.group()[1:]}", text)

    def _prompt_ids(self, instruction: str, num_images: int) -> list[int]:
        text = render_prompt(self.config.prompt_template, instruction, self.tokenizer)
        # A chat template writes its own special tokens; adding them again would double the begin token
        # (apply_chat_template(tokenize=True) also tokenizes without them).
        add_special_tokens = self.config.prompt_template != CHAT_TEMPLATE
        ids = self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids
        if ids.count(self.image_token_id) != num_images:
            raise ValueError(
                f"prompt holds {ids.count(self.image_token_id)} {IMAGE_TOKEN} for {num_images} images"
            )
        expanded: list[int] = []
        for token in ids:
            expanded.extend([token] * self.num_queries if token == self.image_token_id else [token])
        return expanded

    # ------------------------------------------------------------------------------------------------
    # SampleProcessor

    def encode(self, sample: TaskSample, *, train: bool) -> VistaLLMItem:
        """Encode one sample (see the module docstring). Runs in loader workers."""
        loaded = [self.image_cache.get(ref, self._load_resized) for ref in sample.images]
        sizes = [size for _, size in loaded]
        pixel_values = torch.stack([self._normalised(resized) for resized, _ in loaded])
        num_templates = len(VISTALLM_PROMPTS.templates_for(sample.task))
        index = int(torch.randint(num_templates, ())) if train else self.eval_template % num_templates
        llm_instruction = self.instruction(sample, sizes, index, "tokens")
        human_instruction = self.instruction(sample, sizes, index, "human")

        prompt = self._prompt_ids(llm_instruction, sample.num_images)
        answer_text = self.codec.serialize_answer(sample.task, sample.target, sizes, style="tokens")
        answer = self.tokenizer(answer_text, add_special_tokens=False).input_ids if answer_text else []
        answer = [*answer, int(self.tokenizer.eos_token_id)]
        answer = answer[: max(0, self.config.max_length - len(prompt))]
        qformer_text = " ".join(human_instruction.replace(IMAGE_TOKEN, " ").split())
        instruction_ids = self.qformer_tokenizer(
            qformer_text, truncation=True, max_length=self.config.qformer.max_text_length
        ).input_ids
        return VistaLLMItem(
            pixel_values=pixel_values,
            input_ids=torch.tensor(prompt + answer, dtype=torch.long),
            labels=torch.tensor([IGNORE_INDEX] * len(prompt) + answer, dtype=torch.long),
            prompt_length=len(prompt),
            instruction_ids=torch.tensor(instruction_ids, dtype=torch.long),
            task=sample.task,
            sample_id=sample.sample_id,
            image_sizes=sizes,
            target=sample.target,
            instruction=human_instruction,
            metadata=dict(sample.metadata),
        )

    def collate(self, items: list[VistaLLMItem]) -> VistaLLMBatch:
        """Batch encoded samples: right-padded sequences, left-padded prompts."""
        pad = int(self.tokenizer.pad_token_id)
        input_ids, attention_mask = _pad([it.input_ids for it in items], pad, left=False)
        labels, _ = _pad([it.labels for it in items], IGNORE_INDEX, left=False)
        prompt_ids, prompt_mask = _pad([it.input_ids[: it.prompt_length] for it in items], pad, left=True)
        qpad = int(self.qformer_tokenizer.pad_token_id)
        instruction_ids, instruction_mask = _pad([it.instruction_ids for it in items], qpad, left=False)
        return VistaLLMBatch(
            pixel_values=torch.cat([it.pixel_values for it in items]),
            image_counts=torch.tensor([len(it.pixel_values) for it in items], dtype=torch.long),
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            instruction_ids=instruction_ids,
            instruction_mask=instruction_mask,
            tasks=[it.task for it in items],
            sample_ids=[it.sample_id for it in items],
            image_sizes=[it.image_sizes for it in items],
            targets=[it.target for it in items],
            metadata=[it.metadata for it in items],
        )

    # ------------------------------------------------------------------------------------------------
    # Outputs

    def decode(self, generated: torch.Tensor, batch: VistaLLMBatch) -> list[Prediction]:
        """Parse ``(B, T_new)`` generated ids of ``batch`` into predictions (never raises on the ids)."""
        return [
            self.codec.parse_prediction(
                task, decode_generated(self.tokenizer, ids), sizes, sample_id=sample_id
            )
            for ids, task, sizes, sample_id in zip(
                generated, batch.tasks, batch.image_sizes, batch.sample_ids
            )
        ]
