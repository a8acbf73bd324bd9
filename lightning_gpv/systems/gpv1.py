"""``GPV1Module``: training, evaluation and prediction of GPV-1 with Lightning.

* Batches (:class:`~lightning_gpv.models.gpv1.processor.GPV1Batch`) mix tasks; the loss is
  :class:`~lightning_gpv.models.gpv1.losses.GPV1Criterion` (text NLL per task, Hungarian loss on box
  tasks), logged per task (``train/loss_text/vqa``, ``train/loss_bbox``, ...).
* Optimization as the paper: AdamW (lr 1e-4, ResNet 1e-5, weight decay 1e-4), linear warm-up over the
  first ``warmup_fraction`` of the steps then linear decay to 0, stepped per batch; DETR frozen for the
  first ``frozen_epochs`` epochs, then fine-tuned; gradient-norm clipping (0.1) of the visual
  parameters only (``configure_gradient_clipping``; a Trainer ``gradient_clip_val`` clips everything
  on top). Freezing changes ``requires_grad`` during training: under DDP use
  ``strategy="ddp_find_unused_parameters_true"`` (the reference did the same).
* Validation/test: greedy (or beam) decoding, the K-way restriction for classification, ranked boxes;
  metrics from :func:`~lightning_gpv.metrics.evaluation.evaluation_table` per loader and task, and per
  COCO-SCE subset when samples carry ``metadata["sce"]`` (``val/coco.val2014/vqa_seen/accuracy``), and the
  evaluation losses per loader (``val/coco.val2014/loss``).
* ``predict_step`` returns :class:`~lightning_gpv.tasks.samples.Prediction` objects.

The answer vocabulary (folder made by :func:`~lightning_gpv.models.gpv1.text.build_vocabulary`) is
read at construction; its words are also stored in every checkpoint, so a checkpoint is self-contained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import FSDPStrategy
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_gpv.errors import InputError
from lightning_gpv.metrics.evaluation import Evaluator
from lightning_gpv.metrics.tables import EvalItem, evaluation_table
from lightning_gpv.models.gpv1.build import build_gpv1
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.losses import GPV1Criterion, GPV1LossConfig
from lightning_gpv.models.gpv1.model import GPV1, GPV1Encoding
from lightning_gpv.models.gpv1.processor import TEXT_TASKS, GPV1Batch, GPV1Processor
from lightning_gpv.models.gpv1.vocab import SPECIAL_TOKENS, AnswerVocabulary
from lightning_gpv.models.hub import absolute_if_local, saved_model_folder
from lightning_gpv.systems.folders import PushToHubMixin
from lightning_gpv.systems.hooks import (
    attached_trainer,
    connect_datamodule,
    finish_evaluation,
    finish_loader,
    start_evaluation,
)
from lightning_gpv.tasks.catalogue import Family, Task, tasks_of
from lightning_gpv.tasks.samples import Prediction

_VOCAB_KEY = "gpv1_answer_vocabulary"
DEFAULT_EVAL_ANSWER_LEN = {"vqa": 5, "classification": 5, "rec": 5, "captioning": 20, "localization": 20}
"""Decoding length per task at evaluation (the reference's ``eval.sh``), ``__cls__`` included."""


def clip_grad_norm_subset(params: Sequence[torch.Tensor], max_norm: float, sharded: bool) -> torch.Tensor:
    """Scale the gradients of ``params`` so that their joint 2-norm is at most ``max_norm``.

    ``sharded``: each process holds only its shard of each gradient (FSDP with ``use_orig_params``;
    ``grad`` is ``None`` or a local piece), so the squared norms are summed over processes first and every
    process applies the same factor. ``torch.nn.utils.clip_grad_norm_`` would clip each shard by its own
    norm. Must then be called on every process (it is a collective).

    Returns:
        The total norm before clipping (a 0-dim fp32 tensor).
    """
    grads = [p.grad for p in params if p.grad is not None]
    device = grads[0].device if grads else next(iter(params), torch.empty(0)).device
    squares = torch.zeros((), dtype=torch.float32, device=device)
    for grad in grads:
        squares = squares + grad.detach().float().pow(2).sum()
    if sharded:
        torch.distributed.all_reduce(squares)
    total = squares.sqrt()
    factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(factor.to(grad.dtype))
    return total


class GPV1Module(PushToHubMixin, LightningModule):
    """GPV-1 as a LightningModule.

    Args:
        config: The model: a :class:`GPV1Config`, a preset name (``"paper"``, ``"tiny"``), a mapping of
            fields, optionally with ``preset`` (:meth:`GPV1Config.resolve`), or the path of a folder written
            by :meth:`save_pretrained` (weights and vocabulary included); ``None`` is the paper's model.
        vocab_path: Folder of the answer vocabulary and its vectors (``vocab.json`` + ``embeddings.pt``).
            None builds a placeholder vocabulary of ``config.vocab_size`` words (memory planning, or
            loading a checkpoint, which restores the real words and vectors:
            ``GPV1Module.load_from_checkpoint(path, vocab_path=None)`` when the folder is gone).
        loss: Loss weights and matcher costs (the paper's when None).
        lr: Peak learning rate.
        backbone_lr: Peak learning rate of the ResNet.
        weight_decay: AdamW weight decay (applied to every parameter, as the reference).
        warmup_fraction: Fraction of the training steps spent warming up (4 of 40 epochs in the paper).
        frozen_epochs: Epochs with DETR frozen (10 in the paper).
        visual_grad_clip: Max gradient norm of the visual parameters (0 disables).
        num_beams: Beam size at evaluation and prediction (1 = greedy, the paper's).
        eval_answer_len: Decoding length per task name (defaults: :data:`DEFAULT_EVAL_ANSWER_LEN`).
        classification_labels: The K class names of the K-way classification evaluation; None
            decodes classification over the whole vocabulary.
        vqa_metric: ``"official"`` VQA accuracy or GPV-1's lower-case-only ``"gpv1"`` variant.
        seed: Seeds the processor's training-time prompt choice.
        eval_records_dir: Write every evaluated sample (id, prediction, target, score) as JSON lines to
            ``DIR/{stage}/{dataset}.jsonl``; ``None`` writes none.
    """

    def __init__(
        self,
        config: str | dict[str, Any] | GPV1Config | None = None,
        vocab_path: str | None = None,
        loss: GPV1LossConfig | None = None,
        lr: float = 1e-4,
        backbone_lr: float = 1e-5,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.1,
        frozen_epochs: int = 10,
        visual_grad_clip: float = 0.1,
        num_beams: int = 1,
        eval_answer_len: dict[str, int] | None = None,
        classification_labels: list[str] | None = None,
        vqa_metric: Literal["official", "gpv1"] = "official",
        seed: int = 0,
        eval_records_dir: str | None = None,
    ) -> None:
        super().__init__()
        saved = saved_model_folder(config, "gpv1")
        if saved is not None:  # a folder written by save_pretrained: its model, processor and vocabulary
            if vocab_path is not None:
                raise InputError(f"vocab_path: the saved model at {saved} holds its vocabulary; leave it out")
            self.model = GPV1.from_pretrained(saved)
            self.processor = GPV1Processor.from_pretrained(saved)
        else:
            vocab_path = absolute_if_local(vocab_path)  # hparams then load from any working directory
            self.model, self.processor = build_gpv1(GPV1Config.resolve(config), vocab_path, seed=seed)
            text = self.model.config.text
            text = replace(text, name_or_path=absolute_if_local(text.name_or_path),
                           tokenizer_name_or_path=absolute_if_local(text.tokenizer_name_or_path))  # fmt: skip
            self.model.config = replace(self.model.config, text=text)
        self.config = self.model.config  # vocab_size is the vocabulary's
        loss_config = GPV1LossConfig(**loss) if isinstance(loss, Mapping) else loss
        # Checkpoints and hparams.yaml store the resolved configs as plain data, which
        # torch.load(weights_only=True) and yaml.safe_load read back (the CLI hands save_hyperparameters
        # the arguments as given: a preset name, a mapping or a config object).
        self.save_hyperparameters()
        plain_loss = asdict(loss_config) if loss_config is not None else None
        plain = str(saved.resolve()) if saved is not None else self.config.to_dict()
        self.save_hyperparameters({"config": plain, "loss": plain_loss})
        self.criterion = GPV1Criterion(loss_config)
        self.eval_answer_len = {**DEFAULT_EVAL_ANSWER_LEN, **(eval_answer_len or {})}
        self.classification_labels = classification_labels
        # Runtime state, not weights: plain objects (not submodules) so checkpoints and FSDP never see them.
        table = evaluation_table(Family.GPV1, vqa_variant=vqa_metric)
        loss_names = ["loss", "loss_ce", "loss_bbox", "loss_giou"]
        loss_names += [_task_loss_key(f"loss_text/{t.value}") for t in tasks_of(Family.GPV1)]
        self.evaluators = {
            stage: Evaluator(table, loss_names=loss_names, records_dir=eval_records_dir)
            for stage in ("val", "test")
        }

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write a self-contained model folder: config, weights (safetensors, the answer vectors included),
        the text encoder's and DETR's architectures, the query tokenizer and the answer words; it loads with
        ``GPV1Module(config=DIR)``, ``GPV1.from_pretrained(DIR)`` or ``lightning_gpv.Predictor``, offline
        and without BERT, DETR or the vocabulary folder."""
        path = Path(save_directory)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        return path

    # --------------------------------------------------------------- evaluation
    def _eval_step(self, batch: GPV1Batch, stage: str, batch_idx: int, dataloader_idx: int) -> None:
        evaluator = self.evaluators[stage]
        predictions, _ = self._predict(batch, text_for_all=False)
        losses = {_task_loss_key(k): v.detach() for k, v in self._losses(batch, self(batch)).items()}
        evaluator.update_losses(dataloader_idx, losses, weight=len(batch))
        items = [EvalItem(p, s.target, metadata=s.metadata) for p, s in zip(predictions, batch.samples)]
        evaluator.update(dataloader_idx, items)
        finish_loader(self, evaluator, stage, batch_idx, dataloader_idx)

    # ----------------------------------------------------------------- training
    def forward(self, batch: GPV1Batch) -> Any:
        """Teacher-forced outputs of a batch (:class:`~lightning_gpv.models.gpv1.model.GPV1Output`)."""
        answers = batch.answer_ids if bool(batch.has_text.any()) else None
        return self.model(batch.pixel_values, batch.input_ids, batch.attention_mask, answers)

    def _losses(self, batch: GPV1Batch, out: Any) -> dict[str, torch.Tensor]:
        return self.criterion(
            tasks=[t.value for t in batch.tasks],
            answer_logits=out.answer_logits,
            answer_ids=batch.answer_ids,
            has_text=batch.has_text,
            relevance_logits=out.relevance_logits,
            boxes=out.boxes,
            target_boxes=batch.target_boxes,
            has_boxes=batch.has_boxes,
        )

    def setup(self, stage: str) -> None:
        connect_datamodule(self, self.processor)

    def training_step(self, batch: GPV1Batch, batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch, self(batch))
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=len(batch), prog_bar=name == "loss")
        return losses["loss"]

    def on_train_epoch_start(self) -> None:
        self.model.visual.set_detr_frozen(self.current_epoch < self.hparams.frozen_epochs)

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the visual parameters' gradient norm (as DETR), then apply any Trainer-level clipping."""
        if self.hparams.visual_grad_clip > 0:
            trainer = attached_trainer(self)  # None outside a Trainer (a single process)
            sharded = (
                trainer is not None and isinstance(trainer.strategy, FSDPStrategy) and trainer.world_size > 1
            )
            clip_grad_norm_subset(
                list(self.model.visual_parameters()), self.hparams.visual_grad_clip, sharded
            )
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: the ResNet (``backbone_lr``), then everything else that trains (``lr``).

        DETR's parameters are included even while frozen (they join the optimization when unfrozen);
        the frozen text encoder and the ResNet stem/stage 1 are left out.
        """
        parts = self.model.parameter_groups()
        backbone, rest = parts["backbone"], parts["main"]
        groups = [{"params": rest, "lr": self.hparams.lr, "name": "main"}]
        if backbone:
            groups.append({"params": backbone, "lr": self.hparams.backbone_lr, "name": "backbone"})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = AdamW(self.parameter_groups(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(self.hparams.warmup_fraction * total)
        scheduler = LambdaLR(optimizer, partial(warmup_linear_factor, warmup=warmup, total=total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --------------------------------------------------------------- evaluation
    def _allowed_tokens(self, batch: GPV1Batch) -> torch.Tensor | None:
        if not self.classification_labels or Task.CLASSIFICATION not in batch.tasks:
            return None
        vocab = self.processor.vocab
        allowed = torch.ones(len(batch), len(vocab), dtype=torch.bool)
        allowed[:, : len(SPECIAL_TOKENS)] = False
        k_way = vocab.allowed_mask(self.classification_labels)
        for row, task in enumerate(batch.tasks):
            if task == Task.CLASSIFICATION:
                allowed[row] = k_way
        return allowed.to(self.device)

    @torch.no_grad()
    def decode(
        self, batch: GPV1Batch, encoding: GPV1Encoding, tasks: Sequence[Task] | None = None
    ) -> torch.Tensor:
        """Generated answer ids ``(B, L)`` (each sample cut to its task's decoding length)."""
        tasks = batch.tasks if tasks is None else tasks
        lengths = [self.eval_answer_len.get(t.value, self.config.decoder.max_answer_len) for t in tasks]
        tokens, _ = self.model.generate(
            encoding,
            max_len=max(lengths),
            num_beams=self.hparams.num_beams,
            allowed=self._allowed_tokens(batch),
        )
        for row, length in enumerate(lengths):
            tokens[row, length:] = 0
        return tokens

    @torch.no_grad()
    def _predict(self, batch: GPV1Batch, text_for_all: bool) -> tuple[list[Prediction], GPV1Encoding]:
        enc = self.model.encode(batch.pixel_values, batch.input_ids, batch.attention_mask)
        tokens = None
        if text_for_all or any(t in TEXT_TASKS for t in batch.tasks):
            tokens = self.decode(batch, enc)
        return self.processor.predictions(batch, enc.boxes, enc.relevance, tokens), enc

    def on_validation_epoch_start(self) -> None:
        start_evaluation(self, self.evaluators["val"])

    def validation_step(self, batch: GPV1Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        finish_evaluation(self, self.evaluators["val"], "val")

    def on_test_epoch_start(self) -> None:
        start_evaluation(self, self.evaluators["test"])

    def test_step(self, batch: GPV1Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        finish_evaluation(self, self.evaluators["test"], "test")

    def predict_step(self, batch: GPV1Batch, batch_idx: int, dataloader_idx: int = 0) -> list[Prediction]:
        """Ranked boxes with relevance scores and decoded text, one :class:`Prediction` per sample."""
        return self._predict(batch, text_for_all=True)[0]

    # -------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        vocab = self.processor.vocab
        checkpoint[_VOCAB_KEY] = {"words": list(vocab.words), "min_count": vocab.min_count}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(_VOCAB_KEY)
        if saved is not None:
            self.processor.vocab = AnswerVocabulary(saved["words"], min_count=int(saved["min_count"]))


def _task_loss_key(name: str) -> str:
    """The evaluation log name of a criterion loss: a task's text loss ``loss_text/vqa`` is logged as
    ``vqa/loss_text``, so that every evaluation key reads ``{stage}/{dataset}/{task}/{metric}``."""
    kind, _, task = name.partition("/")
    return f"{task}/{kind}" if task else name


def warmup_linear_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup`` steps, linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(total - warmup, 1))


__all__ = ["DEFAULT_EVAL_ANSWER_LEN", "GPV1Module", "warmup_linear_factor"]
