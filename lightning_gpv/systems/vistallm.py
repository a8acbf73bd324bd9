"""``VistaLLMModule``: training, evaluation and prediction of VistaLLM (``lightning_gpv.models.vistallm``).

* Optimisation (the paper's §5.2): AdamW, peak learning rate 2e-5, linear warmup over the first 3% of the
  steps then a cosine decay; only the parameters of the chosen stage train (:meth:`freeze_for_stage`).
* Loss: next-token cross-entropy on the answer tokens only (the processor sets the labels).
* Validation and test: teacher-forced loss, then greedy generation, parsing into
  :class:`~lightning_gpv.tasks.samples.Prediction` and the metrics of
  :func:`~lightning_gpv.metrics.evaluation.evaluation_table` per loader and task
  (``val/refcoco_unc.val/rec/acc@0.5``), with each task's ``well_formed`` and ``parse_failure`` rates and
  the loss per loader (``val/refcoco_unc.val/loss``).
* ``predict_step`` returns the ``Prediction`` objects of a batch.
* An answer that ``max_new_tokens`` ended before the model did (no end token, or, under constrained
  decoding, an object left out for lack of room) says so in ``Prediction.dropped``, so it counts as a parse
  failure; each evaluation (not the sanity check) warns once with the number of such answers per task and of
  the samples whose reference answer is longer than the budget, over all processes (:class:`BudgetTally`).

The module exposes its :class:`~lightning_gpv.models.vistallm.processor.VistaLLMProcessor` as
``self.processor``; a data module with ``connect`` gets it in :meth:`setup` when it has none.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LambdaLR

from lightning_gpv.errors import InputError
from lightning_gpv.metrics.evaluation import Evaluator
from lightning_gpv.metrics.tables import EvalItem, answer_well_formed, evaluation_table
from lightning_gpv.models.hub import saved_model_folder
from lightning_gpv.models.vistallm.build import build_vistallm
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.constraints import CoordinateGrammar, answer_format
from lightning_gpv.models.vistallm.model import IGNORE_INDEX, VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMBatch, VistaLLMProcessor
from lightning_gpv.systems.folders import PushToHubMixin
from lightning_gpv.systems.hooks import (
    any_rank,
    attached_trainer,
    connect_datamodule,
    finish_evaluation,
    finish_loader,
    start_evaluation,
)
from lightning_gpv.tasks.catalogue import Family, Task
from lightning_gpv.tasks.image_cache import ImageFileCache
from lightning_gpv.tasks.samples import Prediction

OUTPUT_FORMAT_FIELDS = ("num_bins", "num_mask_points", "prompt_template")
"""Config fields that change what the model's tokens mean without changing a weight's shape."""


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear up to 1 over ``warmup_steps``, then a cosine down to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class BudgetTally:
    """What the token budget did in one evaluation: answers it cut, and reference answers longer than it.

    Attributes:
        cut: Per task, answers that ``max_new_tokens`` ended before the model did.
        too_long: Per task, samples whose reference answer (its tokens and the end token) exceeds the budget:
            no model can write it whole.
        longest: Per task, the longest such reference answer, in tokens.
        references: Samples with a reference answer (not counted: hidden annotations, no-target samples).
    """

    cut: Counter[Task] = field(default_factory=Counter)
    too_long: Counter[Task] = field(default_factory=Counter)
    longest: dict[Task, int] = field(default_factory=dict)
    references: int = 0

    def update(
        self, tasks: Sequence[Task], cut: Sequence[bool], lengths: Sequence[int | None], budget: int
    ) -> None:
        """Count one batch: per sample, its ``cut`` flag and its reference length (``None``: none)."""
        self.cut.update(task for task, was_cut in zip(tasks, cut) if was_cut)
        for task, length in zip(tasks, lengths):
            if length is None:
                continue
            self.references += 1
            if length > budget:
                self.too_long[task] += 1
                self.longest[task] = max(length, self.longest.get(task, 0))

    def synced(self, device: torch.device) -> BudgetTally:
        """The tally over every process of ``torch.distributed`` (itself without one). A collective: every
        process calls it."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self
        tasks = list(Task)
        rows = [[self.cut[t], self.too_long[t], self.longest.get(t, 0)] for t in tasks]
        counts = torch.tensor([*rows, [self.references, 0, 0]], dtype=torch.int64, device=device)
        longest = counts[:, 2].clone()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        out = BudgetTally(references=int(counts[-1, 0]))
        for i, task in enumerate(tasks):
            if counts[i, 0]:
                out.cut[task] = int(counts[i, 0])
            if counts[i, 1]:
                out.too_long[task], out.longest[task] = int(counts[i, 1]), int(longest[i])
        return out

    def message(self, budget: int, stage: str, mask_tokens: int) -> str | None:
        """The warning for a ``stage`` run under ``budget`` (``None`` when the budget changed nothing)."""
        parts = []
        if self.too_long:
            listing = ", ".join(
                f"{n} {task.value} (up to {self.longest[task]})" for task, n in _by_name(self.too_long)
            )
            parts.append(f"reference answers longer than the budget: {listing}")
        if self.cut:
            listing = ", ".join(f"{n} {task.value}" for task, n in _by_name(self.cut))
            parts.append(f"answers it ended before the model did: {listing}")
        if not parts:
            return None
        advice = (
            f"Raise --model.init_args.max_new_tokens (a mask takes {mask_tokens} tokens with its brackets "
            "and separator)."
        )
        if not self.too_long and self.references:
            # An untrained model never writes its end token: no budget helps it.
            advice = (
                "Every reference answer fits the budget: the model wrote on past their length, as an "
                f"untrained or diverging one does. {advice}"
            )
        return (
            f"VistaLLMModule: max_new_tokens={budget} in this {stage} run: {'; '.join(parts)}. Their metrics "
            f"miss what was not written, and cut answers count as parse failures. {advice}"
        )


def _by_name(counts: Counter[Task]) -> list[tuple[Task, int]]:
    return sorted(counts.items(), key=lambda item: item[0].value)


class VistaLLMModule(PushToHubMixin, LightningModule):
    """VistaLLM as a LightningModule.

    Args:
        config: The model: a :class:`VistaLLMConfig`, a preset name (``"7b"``, ``"13b"``, ``"smollm2"``,
            ``"tiny"``), a mapping of fields, optionally with ``preset`` (:meth:`VistaLLMConfig.resolve`),
            or the path of a folder written by :meth:`save_pretrained` (its weights included); ``None``
            is the paper's 7B model.
        stage: 1 trains everything but the image encoder (single-image tasks); 2 trains only the
            instruction-guided tokenizer (multi-image tasks).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_ratio: Share of the training steps with a linear warmup.
        min_lr_ratio: Final learning rate over the peak one at the end of the cosine.
        max_new_tokens: Generation budget in evaluation (default ``config.max_new_tokens``).
        load_weights: Load the pretrained weights the config names (``False``: random init, no download).
        eval_template: Instruction template used in evaluation (default 0, or a saved folder's).
        eval_records_dir: Write every evaluated sample (id, prediction, target, score) as JSON lines to
            ``DIR/{stage}/{dataset}.jsonl``; ``None`` writes none.
        constrained_decoding: Generate under the coordinate grammar of each sample's task
            (:mod:`~lightning_gpv.models.vistallm.constraints`): whole boxes and masks, no coordinate
            token outside them. ``False`` (default): plain greedy decoding. The attribute of the same
            name may be changed after building.
        image_cache: Images whose decoded and resized pixels the processor keeps in memory (``3 S^2``
            bytes each; the least recently used are dropped first; 0: none), so that later epochs do not
            decode the same files again (:class:`~lightning_gpv.tasks.image_cache.ImageFileCache`). Each
            loader worker keeps its own.
    """

    def __init__(
        self,
        config: str | dict[str, Any] | VistaLLMConfig | None = None,
        stage: Literal[1, 2] = 1,
        lr: float = 2e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
        max_new_tokens: int | None = None,
        load_weights: bool = True,
        eval_template: int | None = None,
        eval_records_dir: str | None = None,
        constrained_decoding: bool = False,
        image_cache: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= warmup_ratio < 1.0:
            raise InputError(f"VistaLLMModule: warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.save_hyperparameters()
        saved = saved_model_folder(config, "vistallm")
        if saved is not None:  # a folder written by save_pretrained: its model, processor and config
            self.model = VistaLLM.from_pretrained(saved)
            self.processor = VistaLLMProcessor.from_pretrained(saved)
            if eval_template is not None:  # else the saved folder's
                self.processor.eval_template = eval_template
            self.config = self.processor.config
            plain: str | dict[str, Any] = str(saved.resolve())
        else:
            self.config = VistaLLMConfig.resolve(config)
            self.model, self.processor = build_vistallm(
                self.config, load_weights=load_weights, eval_template=eval_template or 0
            )
            plain = self.config.to_dict()
        # Checkpoints and hparams.yaml store the resolved config as plain data (or the saved folder's
        # path), which torch.load(weights_only=True) and yaml.safe_load read back; the CLI hands
        # save_hyperparameters the arguments as given (a preset name, a mapping or a config object).
        self.processor.image_cache = ImageFileCache(image_cache)
        self.save_hyperparameters({"config": plain, "betas": [float(b) for b in betas]})
        self.stage = stage
        self.freeze_for_stage()
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else self.config.max_new_tokens
        self.constrained_decoding = bool(constrained_decoding)
        self._grammar: CoordinateGrammar | None = None  # built on first use: it decodes the whole vocabulary
        self._budget_tallies: dict[str, BudgetTally] = {}  # per evaluation stage
        # Runtime state, not weights: plain objects (not submodules) so checkpoints and FSDP never see them.
        table = evaluation_table(Family.VISTALLM)
        # partial, not lambda: spawn-based launchers (ddp_spawn) pickle the module whole.
        checks = {"well_formed": partial(answer_well_formed, num_points=self.config.num_mask_points)}
        self.evaluators = {
            stage: Evaluator(table, checks=checks, records_dir=eval_records_dir) for stage in ("val", "test")
        }

    # ------------------------------------------------------------------------------------------------
    # Model

    def save_pretrained(
        self, save_directory: str | Path, *, merge_lora: bool = False, adapter: bool = False
    ) -> Path:
        """Write a model folder: config, weights (safetensors) and both tokenizers; it loads with
        ``VistaLLMModule(config=DIR)``, ``VistaLLM.from_pretrained(DIR)`` or
        ``lightning_gpv.Predictor.from_pretrained(DIR)``.

        Args:
            save_directory: The folder (created).
            merge_lora: Fold LoRA adapters into the LLM's weights and save a plain model (the folder then
                needs no peft); otherwise the adapters are saved under their peft names.
            adapter: Save only what training changed (``VistaLLM.save_adapter``: LoRA weights, added token
                rows, the instruction-guided tokenizer); the folder then loads over the base models its
                config names, which must be reachable. Without it the folder is self-contained: it loads
                offline and without the base models.
        """
        if merge_lora and adapter:
            raise InputError("merge_lora and adapter exclude each other: a merged model has no adapter")
        path = Path(save_directory)
        model = self.model
        if adapter:
            model.save_adapter(path)
        else:
            if merge_lora and self.config.llm.lora is not None:
                model = copy.deepcopy(self.model)
                model.llm = model.llm.merge_and_unload()
                model.config = replace(self.config, llm=replace(self.config.llm, lora=None))
            model.save_pretrained(path)
        self.processor.save_pretrained(path)
        return path

    def freeze_for_stage(self) -> None:
        """Set what trains in ``self.stage`` (see :meth:`VistaLLM.set_stage`)."""
        self.model.set_stage(self.stage)

    def forward(self, batch: VistaLLMBatch) -> Any:
        """Teacher-forced pass; ``.loss`` is the answer-token cross-entropy."""
        return self.model(**batch.model_inputs())

    def generate(self, batch: VistaLLMBatch, max_new_tokens: int | None = None) -> torch.Tensor:
        """``(B, T_new)`` greedy continuations of the batch's prompts (under each sample's task grammar when
        ``constrained_decoding``)."""
        tokens, _ = self._generate(batch, self.max_new_tokens if max_new_tokens is None else max_new_tokens)
        return tokens

    def _generate(self, batch: VistaLLMBatch, max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The continuations and ``(B,)`` bool: where the budget changed the answer (``VistaLLM.generate``'s
        ``return_cut``)."""
        tokenizer = self.processor.tokenizer
        constrained = self.constrained_decoding
        return self.model.generate(
            **batch.generation_inputs(),
            max_new_tokens=max_new_tokens,
            eos_token_id=int(tokenizer.eos_token_id),
            pad_token_id=int(tokenizer.pad_token_id),
            grammar=self.coordinate_grammar() if constrained else None,
            answer_formats=[answer_format(task) for task in batch.tasks] if constrained else None,
            return_cut=True,
        )

    def coordinate_grammar(self) -> CoordinateGrammar:
        """The coordinate grammar of the processor's codec and LLM tokenizer (built once)."""
        if self._grammar is None:
            self._grammar = CoordinateGrammar.from_tokenizer(self.processor.codec, self.processor.tokenizer)
        return self._grammar

    def predict_batch(self, batch: VistaLLMBatch, max_new_tokens: int | None = None) -> list[Prediction]:
        """Generate, decode and parse: one :class:`Prediction` per sample. An answer that the token budget
        changed (cut before its end, or an object left out for lack of room) says so in ``dropped``."""
        return self._predict(batch, max_new_tokens)[0]

    def _predict(
        self, batch: VistaLLMBatch, max_new_tokens: int | None = None
    ) -> tuple[list[Prediction], list[bool]]:
        """:meth:`predict_batch` and, per sample, whether the budget changed its answer."""
        budget = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        tokens, cut = self._generate(batch, budget)
        predictions = self.processor.decode(tokens, batch)
        flags = cut.tolist()
        for prediction, was_cut in zip(predictions, flags):
            if was_cut:
                prediction.dropped.append(
                    f"the token budget (max_new_tokens={budget}) ended the answer before the model did: what "
                    "it would have written next is missing"
                )
        return predictions, flags

    # ------------------------------------------------------------------------------------------------
    # Lightning hooks

    def setup(self, stage: str) -> None:
        connect_datamodule(self, self.processor)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, VistaLLMBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: VistaLLMBatch, batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._budget_tallies["val"] = BudgetTally()
        start_evaluation(self, self.evaluators["val"])

    def validation_step(self, batch: VistaLLMBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        finish_evaluation(self, self.evaluators["val"], "val")
        self._warn_budget("val")

    def on_test_epoch_start(self) -> None:
        self._budget_tallies["test"] = BudgetTally()
        start_evaluation(self, self.evaluators["test"])

    def test_step(self, batch: VistaLLMBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        finish_evaluation(self, self.evaluators["test"], "test")
        self._warn_budget("test")

    def _warn_budget(self, stage: str) -> None:
        """Warn once per evaluation about what the token budget cut, over every process's samples; not after
        the sanity check (a few batches that check the loop before training, not an evaluation)."""
        tally = self._budget_tallies.pop(stage, BudgetTally())
        trainer = attached_trainer(self)
        if trainer is not None and trainer.sanity_checking:
            return
        tally = tally.synced(self.device)
        message = tally.message(self.max_new_tokens, stage, 2 * self.config.num_mask_points + 3)
        if message is not None:
            rank_zero_warn(message)

    def predict_step(self, batch: VistaLLMBatch, batch_idx: int, dataloader_idx: int = 0) -> list[Prediction]:
        return self.predict_batch(batch)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained to write another answer format (``--ckpt_path`` with a changed
        ``num_bins``, ``num_mask_points`` or ``prompt_template``): its weights fit, but its coordinate tokens
        and prompts would be read with other meanings, silently.

        Raises:
            InputError: Naming each such field, with both values.
        """
        saved = (checkpoint.get("hyper_parameters") or {}).get("config")
        if not isinstance(saved, dict):
            return  # a saved folder's path, or a checkpoint without its config: nothing to compare
        differ = [k for k in OUTPUT_FORMAT_FIELDS if k in saved and saved[k] != getattr(self.config, k)]
        if differ:
            listing = ", ".join(f"{k}={getattr(self.config, k)!r} (checkpoint: {saved[k]!r})" for k in differ)
            raise InputError(
                f"the checkpoint's model writes another answer format than this one: {listing}; leave "
                "these config fields as the checkpoint has them"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        hp = self.hparams
        optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = math.ceil(hp.warmup_ratio * total)

        def factor(step: int) -> float:
            return warmup_cosine(step, total_steps=total, warmup_steps=warmup, min_ratio=hp.min_lr_ratio)

        scheduler = LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------------------
    # Evaluation

    def _evaluate(self, batch: VistaLLMBatch, stage: str, batch_idx: int, dataloader_idx: int) -> None:
        evaluator = self.evaluators[stage]
        has_labels = bool((batch.labels != IGNORE_INDEX).any())
        # Under FSDP a forward gathers shards with every rank: run it on all ranks or on none.
        if any_rank(has_labels, self.device):
            loss = self(batch).loss.detach()
            if has_labels:
                evaluator.update_losses(dataloader_idx, {"loss": loss}, weight=len(batch))
        predictions, cut = self._predict(batch)
        # The labels are the answer's tokens and its end token. An empty target (hidden annotations, a
        # no-target expression) is no answer to measure the budget by.
        lengths = [
            int(n) if t.text or t.answers or len(t.boxes) or t.masks else None
            for n, t in zip((batch.labels != IGNORE_INDEX).sum(dim=1).tolist(), batch.targets)
        ]
        tally = self._budget_tallies.setdefault(stage, BudgetTally())
        tally.update([p.task for p in predictions], cut, lengths, self.max_new_tokens)
        metadata = batch.metadata if batch.metadata is not None else [{} for _ in predictions]
        items = [
            EvalItem(p, t, tuple(tuple(size) for size in sizes), m)
            for p, t, sizes, m in zip(predictions, batch.targets, batch.image_sizes, metadata)
        ]
        evaluator.update(dataloader_idx, items)
        finish_loader(self, evaluator, stage, batch_idx, dataloader_idx)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Tasks with an evaluation metric."""
        return tuple(self.evaluators["val"].table)
