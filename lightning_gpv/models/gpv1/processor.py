"""``GPV1Processor``: ``TaskSample`` -> GPV-1 tensors, and model outputs -> ``Prediction``.

Per sample (in the loader's workers):

* Image: decoded, cropped to ``sample.region`` for classification (the data module already expanded the
  box by 20% per side), resized to ``image_size`` (480 x 640 in the paper; the aspect ratio is not
  kept), scaled to [0, 1] and ImageNet-normalized. No augmentation (the reference's color jitter,
  grayscale and classification flips are not reproduced).
* Query: the sample's GPV-1 prompt (paper Table 7). Training picks the template with a
  ``random.Random`` seeded by ``(seed, sample_id)``: one fixed template per sample, as the reference
  drew it once at preprocessing; evaluation uses template 0. Then BERT WordPiece ids.
* Targets: answer-vocabulary ids ``[__cls__, words..., __stop__]`` for text tasks; for box tasks the
  ground-truth boxes as normalized ``cxcywh`` of the frame the model sees (the image, or the crop).

:meth:`GPV1Processor.collate` pads a list of items into a :class:`GPV1Batch`, and
:meth:`GPV1Processor.predictions` turns model outputs back into
:class:`~lightning_gpv.tasks.samples.Prediction` objects in original-image pixels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from lightning_gpv.geometry.boxes import box_convert, clip_boxes
from lightning_gpv.models.gpv1 import folder
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.text import load_tokenizer
from lightning_gpv.models.gpv1.vocab import PAD_ID, AnswerVocabulary
from lightning_gpv.models.hub import local_folder, read_settings, write_settings
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.prompts import GPV1_PROMPTS
from lightning_gpv.tasks.samples import Prediction, TaskSample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TEXT_TASKS = frozenset({Task.CAPTIONING, Task.VQA, Task.CLASSIFICATION})
"""Tasks trained with the text loss."""
BOX_TASKS = frozenset({Task.LOCALIZATION, Task.REC})
"""Tasks trained with the Hungarian box loss."""


@dataclass
class GPV1Item:
    """One encoded sample.

    Attributes:
        task: The task.
        pixel_values: ``(3, H, W)`` float32, normalized.
        input_ids: WordPiece ids of the prompt (``[CLS] ... [SEP]``).
        answer_ids: Answer-vocabulary ids, or None without a text target.
        boxes: ``(k, 4)`` float32 normalized ``cxcywh`` of the frame, or None without a box target.
        frame: ``(x0, y0, w, h)`` of the part of the original image the model sees, in pixels.
        sample: The sample itself (for metrics and predictions).
    """

    task: Task
    pixel_values: torch.Tensor
    input_ids: list[int]
    answer_ids: list[int] | None
    boxes: torch.Tensor | None
    frame: tuple[float, float, float, float]
    sample: TaskSample


@dataclass
class GPV1Batch:
    """A padded batch of ``B`` items (``.to(device)`` moves the tensors; Lightning calls it).

    Attributes:
        tasks: ``B`` tasks.
        pixel_values: ``(B, 3, H, W)``.
        input_ids: ``(B, T)`` right-padded with the tokenizer's pad id.
        attention_mask: ``(B, T)``, 1 on real tokens.
        answer_ids: ``(B, L)`` right-padded with ``__pad__`` (all ``__pad__`` rows without text target).
        has_text: ``(B,)`` bool.
        target_boxes: ``B`` tensors ``(k, 4)`` normalized ``cxcywh`` (empty without box target).
        has_boxes: ``(B,)`` bool.
        frames: ``(B, 4)`` float32 ``(x0, y0, w, h)`` in original pixels.
        samples: The ``B`` samples.
    """

    tasks: list[Task]
    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answer_ids: torch.Tensor
    has_text: torch.Tensor
    target_boxes: list[torch.Tensor]
    has_boxes: torch.Tensor
    frames: torch.Tensor
    samples: list[TaskSample]

    def __len__(self) -> int:
        return len(self.tasks)

    def to(self, device: torch.device | str) -> GPV1Batch:
        """A copy with every tensor on ``device``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
            elif f.name == "target_boxes":
                value = [t.to(device) for t in value]
            moved[f.name] = value
        return replace(self, **moved)


class GPV1Processor:
    """Implements :class:`~lightning_gpv.tasks.processing.SampleProcessor` for GPV-1 (picklable).

    Args:
        tokenizer: BERT WordPiece tokenizer of the query encoder.
        vocab: The answer vocabulary.
        image_size: ``(height, width)`` images are resized to.
        max_query_len: Prompt truncation in WordPiece tokens.
        max_answer_len: Answer truncation in vocabulary tokens (``__cls__``/``__stop__`` included).
        seed: Seeds the training-time prompt choice.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab: AnswerVocabulary,
        *,
        image_size: tuple[int, int] = (480, 640),
        max_query_len: int = 64,
        max_answer_len: int = 20,
        seed: int = 0,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_query_len = max_query_len
        self.max_answer_len = max_answer_len
        self.seed = seed

    @classmethod
    def from_config(cls, config: GPV1Config, vocab: AnswerVocabulary, *, seed: int = 0) -> GPV1Processor:
        """The processor matching a model config (its tokenizer, image size and lengths)."""
        return cls(
            load_tokenizer(config.text),
            vocab,
            image_size=config.image_size,
            max_query_len=config.text.max_query_len,
            max_answer_len=config.decoder.max_answer_len,
            seed=seed,
        )

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the query tokenizer, the answer words and the settings into a model folder (the model
        writes the config and the weights: ``GPV1.save_pretrained``)."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path / folder.TOKENIZER_DIR)
        self.vocab.save(path / folder.ANSWERS_DIR)  # the vectors are in the model's weights
        write_settings(path / folder.PROCESSOR_FILE, {"seed": self.seed})

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **hub_kwargs: Any) -> GPV1Processor:
        """The processor of a saved model folder (local or on the hub; see ``GPV1.from_pretrained``)."""
        path = local_folder(name_or_path, **hub_kwargs)
        vocab, _ = AnswerVocabulary.load(path / folder.ANSWERS_DIR)
        seed = int(read_settings(path / folder.PROCESSOR_FILE).get("seed", 0))
        return cls.from_config(folder.read_config(path), vocab, seed=seed)

    def prompt(self, sample: TaskSample, *, train: bool) -> str:
        """The task description of ``sample`` (seeded random template when training, else template 0)."""
        if train:
            rng = random.Random(f"{self.seed}:{sample.sample_id}")
            return GPV1_PROMPTS.render(sample.task, rng=rng, **sample.prompt_slots())
        return GPV1_PROMPTS.render(sample.task, index=0, **sample.prompt_slots())

    def encode(self, sample: TaskSample, *, train: bool) -> GPV1Item:
        """Image, prompt and targets of one sample (see the module docstring)."""
        image = load_image(sample.images[0])
        height, width = image.shape[:2]
        frame = (0.0, 0.0, float(width), float(height))
        if sample.task == Task.CLASSIFICATION and sample.region is not None:
            x0, y0, x1, y1 = clip_boxes(sample.region.astype(np.float64), width, height).round().astype(int)
            x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
            image = image[y0:y1, x0:x1]
            frame = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        pixels = torch.tensor(image).permute(2, 0, 1)  # a copy: decoded arrays may be read-only
        pixels = TF.resize(pixels, list(self.image_size), antialias=True)
        pixels = TF.normalize(pixels.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)
        ids = self.tokenizer(self.prompt(sample, train=train), truncation=True, max_length=self.max_query_len)
        answer = None
        if sample.task in TEXT_TASKS and sample.target.text is not None:
            answer = self.vocab.encode(sample.target.text, self.max_answer_len)
        boxes = None
        if sample.task in BOX_TASKS:
            boxes = self.normalize_boxes(sample.target.boxes, frame)
        return GPV1Item(sample.task, pixels, list(ids["input_ids"]), answer, boxes, frame, sample)

    @staticmethod
    def normalize_boxes(boxes: np.ndarray, frame: tuple[float, float, float, float]) -> torch.Tensor:
        """``(k, 4)`` absolute ``xyxy`` pixels -> normalized ``cxcywh`` of ``frame`` (clipped to it)."""
        x0, y0, w, h = frame
        xyxy = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        xyxy = (xyxy - xyxy.new_tensor([x0, y0, x0, y0])) / xyxy.new_tensor([w, h, w, h])
        return box_convert(xyxy.clamp(0.0, 1.0), "xyxy", "cxcywh")

    def collate(self, items: list[GPV1Item]) -> GPV1Batch:
        """Pad and stack encoded samples."""
        if not items:
            raise ValueError("cannot collate an empty batch")
        pad_token = self.tokenizer.pad_token_id or 0
        t_len = max(len(i.input_ids) for i in items)
        input_ids = torch.full((len(items), t_len), pad_token, dtype=torch.long)
        attention = torch.zeros(len(items), t_len, dtype=torch.long)
        a_len = max([len(i.answer_ids) for i in items if i.answer_ids is not None] or [2])
        answers = torch.full((len(items), a_len), PAD_ID, dtype=torch.long)
        for row, item in enumerate(items):
            input_ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids)
            attention[row, : len(item.input_ids)] = 1
            if item.answer_ids is not None:
                answers[row, : len(item.answer_ids)] = torch.tensor(item.answer_ids)
        return GPV1Batch(
            tasks=[i.task for i in items],
            pixel_values=torch.stack([i.pixel_values for i in items]),
            input_ids=input_ids,
            attention_mask=attention,
            answer_ids=answers,
            has_text=torch.tensor([i.answer_ids is not None for i in items]),
            target_boxes=[i.boxes if i.boxes is not None else torch.zeros(0, 4) for i in items],
            has_boxes=torch.tensor([i.boxes is not None for i in items]),
            frames=torch.tensor([i.frame for i in items], dtype=torch.float32),
            samples=[i.sample for i in items],
        )

    def predictions(
        self,
        batch: GPV1Batch,
        boxes: torch.Tensor,
        relevance: torch.Tensor,
        tokens: torch.Tensor | None = None,
    ) -> list[Prediction]:
        """Model outputs -> one :class:`Prediction` per sample.

        Args:
            batch: The batch the outputs belong to.
            boxes: ``(B, R, 4)`` normalized ``cxcywh`` of each sample's frame.
            relevance: ``(B, R)`` relevance probabilities.
            tokens: ``(B, L)`` generated answer ids, or None (empty texts).

        Returns:
            Predictions with all ``R`` boxes in absolute ``xyxy`` pixels of the original image, ranked by
            relevance (best first), their scores, and the decoded text.
        """
        frames = batch.frames.to(boxes.device)
        xyxy = box_convert(boxes.float(), "cxcywh", "xyxy").clamp(0.0, 1.0)
        scale = frames[:, None, 2:].repeat(1, 1, 2)
        xyxy = xyxy * scale + frames[:, None, :2].repeat(1, 1, 2)
        order = relevance.float().argsort(dim=1, descending=True)
        out = []
        for b, sample in enumerate(batch.samples):
            idx = order[b]
            text = self.vocab.decode(tokens[b].tolist()) if tokens is not None else ""
            out.append(
                Prediction(
                    task=sample.task,
                    sample_id=sample.sample_id,
                    text=text,
                    boxes=xyxy[b, idx].detach().cpu().numpy(),
                    scores=relevance[b, idx].float().detach().cpu().numpy(),
                )
            )
        return out
