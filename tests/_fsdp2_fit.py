"""Worker of the two-process FSDP2 tests: ``python _fsdp2_fit.py RANK WORLD INIT_FILE OUT_DIR FAMILY``.

Per family (``vistallm`` or ``gpv1``), on CPU with gloo, with the real LightningModule and processor batches:

1. a ``bf16-mixed`` fit with the reference strategy: VistaLLM's FSDP1 preset, DDP for GPV-1;
2. the same fit with the FSDP2 preset (gradient clipping on, activation checkpointing on), the groups it
   made, the model's ``generate`` (and GPV-1's ``encode``) called from outside ``forward``, a checkpoint;
3. a fresh module of other weights restored from that checkpoint by a new Trainer: the same full weights
   and the same step.

Writes ``OUT_DIR/RANK.json`` (losses, groups, checkpoint kind) and prints ``rank N ok``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch.utils.data import DataLoader

from lightning_gpv.tasks import Target, Task, TaskSample

STEPS = 3


class _Losses(Callback):
    """The training loss of every step on this rank."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, outputs: Any, *args: Any) -> None:
        self.values.append(float(outputs["loss"]))


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(n)]


def _vistallm_samples(n: int) -> list[TaskSample]:
    words = ["red", "blue", "green", "two"]
    return [
        TaskSample(Task.VQA, [image], Target(text=words[i % 4], answers=[words[i % 4]] * 10),
                   question="What color is it?", sample_id=f"vqa-{i}")
        if i % 2 else
        TaskSample(Task.REC, [image], Target(boxes=[[10, 8, 40, 30 + i]]), expression="the square",
                   sample_id=f"rec-{i}")
        for i, image in enumerate(_images(n))
    ]  # fmt: skip


def _gpv1_samples(n: int) -> list[TaskSample]:
    texts = ["a red circle", "a blue square", "two", "red"]
    return [
        TaskSample(Task.VQA, [image], Target(text=texts[i % 4], answers=[texts[i % 4]] * 10),
                   question="What color?", sample_id=f"v{i}")
        if i % 2 else
        TaskSample(Task.CAPTIONING, [image], Target(text=texts[i % 4], answers=[texts[i % 4]]),
                   sample_id=f"c{i}")
        for i, image in enumerate(_images(n))
    ]  # fmt: skip


def build(family: str, seed: int, work: Path) -> tuple[LightningModule, DataLoader]:
    """The tiny module of ``family`` (weights from ``seed``) and a loader of 2 batches per rank."""
    seed_everything(seed)
    if family == "vistallm":
        from lightning_gpv.systems.vistallm import VistaLLMModule

        module: Any = VistaLLMModule("tiny", load_weights=False, lr=1e-3, warmup_ratio=0.0)
        samples = _vistallm_samples(8)
    else:
        from lightning_gpv.models.gpv1 import GPV1Config, write_wordpiece_vocab
        from lightning_gpv.models.gpv1.text import build_vocabulary
        from lightning_gpv.systems.gpv1 import GPV1Module

        texts = ["what color", "a red circle", "a blue square", "two", "red"]
        tokens = write_wordpiece_vocab(texts, work / "vocab.txt")
        size = len(tokens.read_text().splitlines())
        config = GPV1Config.from_name(
            "tiny", text={"tokenizer_name_or_path": str(tokens), "vocab_size": size}
        )
        build_vocabulary(work / "answers", lambda: texts[1:], config.text)
        # DETR frozen in the first epoch, trained in the second: requires_grad changes on sharded weights.
        module = GPV1Module(
            config, vocab_path=str(work / "answers"), lr=1e-3, warmup_fraction=0.0, frozen_epochs=1
        )
        samples = _gpv1_samples(8)
    items = [module.processor.encode(s, train=True) for s in samples]
    seed_everything(seed)
    return module, DataLoader(items, batch_size=2, collate_fn=module.processor.collate)


def trainer(strategy: Any, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    # Two epochs of two batches per rank, at most STEPS steps.
    options = dict(accelerator="cpu", devices=2, precision="bf16-mixed", max_epochs=2, max_steps=STEPS,
                   gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    return Trainer(strategy=strategy, callbacks=callbacks, **{**options, **kwargs})


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    return {key: value.detach().float().clone() for key, value in state.items()}


def first_batch(module: Any, loader: DataLoader) -> Any:
    return next(iter(loader)).to(module.device)


def check_out_of_forward_calls(family: str, run: Trainer, module: Any, batch: Any) -> None:
    """The methods called from outside ``forward`` gather the root's parameters (same inputs on both ranks,
    so greedy decoding stops at the same step on both); under autocast, as Lightning's steps run."""
    module.eval()
    with torch.no_grad(), run.precision_plugin.forward_context():
        if family == "vistallm":
            inputs = batch.generation_inputs()
            tokens = module.model.generate(**inputs, max_new_tokens=3, eos_token_id=-1, pad_token_id=0)
            assert tokens.shape == (len(batch), 3), tokens.shape
        else:
            encoding = module.model.encode(batch.pixel_values, batch.input_ids, batch.attention_mask)
            tokens, _ = module.model.generate(encoding, max_len=3)
            assert tokens.shape[0] == len(batch), tokens.shape
    module.train()


def check_subset_clipping(strategy: Any, run: Trainer, module: Any, batch: Any) -> None:
    """The preset's ``clip_grad_norm_`` of a parameter subset: the norm of the full gradients."""
    with run.precision_plugin.forward_context():
        out = module(batch)
        loss = out.loss if hasattr(out, "loss") else module._losses(batch, out)["loss"]
    loss.backward()
    params = [p for p in module.parameters() if p.grad is not None][::2]
    expected = torch.linalg.vector_norm(torch.stack([p.grad.full_tensor().float().norm() for p in params]))
    total = strategy.clip_grad_norm_(params, max_norm=1e-3)
    assert torch.allclose(total, expected, rtol=1e-4), (total, expected)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.full_tensor().float().norm() for p in params]))
    assert torch.allclose(clipped, torch.tensor(1e-3), rtol=1e-3), clipped
    module.zero_grad(set_to_none=True)


def main() -> None:
    rank, world, init, out, family = sys.argv[1:6]
    rank, world, out = int(rank), int(world), Path(out)
    torch.set_num_threads(1)
    # The processes exist already: Lightning reads the rank from LOCAL_RANK and finds the group initialised.
    os.environ.update({"LOCAL_RANK": str(rank), "NODE_RANK": "0", "WORLD_SIZE": str(world)})
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    from torch.distributed.fsdp import FSDPModule

    from lightning_gpv import strategies, strategies_fsdp2

    # The reference: VistaLLM's FSDP1 preset; DDP for GPV-1 (its recipes' strategy).
    reference: Any = "ddp_find_unused_parameters_true"
    fsdp2: Any = strategies_fsdp2.GPV1FSDP2Strategy
    if family == "vistallm":
        reference, fsdp2 = strategies.VistaLLMFSDPStrategy(), strategies_fsdp2.VistaLLMFSDP2Strategy
    work = out / f"work{rank}"
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}

    module, loader = build(family, 0, work)
    losses = _Losses()
    trainer(reference, [losses]).fit(module, loader)
    report["reference"] = losses.values

    module, loader = build(family, 0, work)
    losses = _Losses()
    strategy = fsdp2(activation_checkpointing=True)
    run = trainer(strategy, [losses])
    run.fit(module, loader)
    report["fsdp2"] = losses.values
    report["groups"] = list(strategy.plan.groups)
    report["checkpointed"] = list(strategy.plan.checkpointed)
    assert sum(isinstance(m, FSDPModule) for m in module.modules()) == len(strategy.plan.groups)
    grads = [p for p in module.parameters() if p.requires_grad]
    assert grads and all(type(p).__name__ == "DTensor" for p in grads)
    batch = first_batch(module, loader)
    check_out_of_forward_calls(family, run, module, batch)
    check_subset_clipping(strategy, run, module, batch)
    saved = full_state(module)
    ckpt = out / "last.ckpt"
    run.save_checkpoint(ckpt)
    dist.barrier()
    report["checkpoint"] = "folder" if ckpt.is_dir() else "file"
    if ckpt.is_file() and rank == 0:  # an ordinary Lightning checkpoint: the plain module's keys
        plain = torch.load(ckpt, map_location="cpu", weights_only=False)
        fresh, _ = build(family, 1, work)
        assert set(plain["state_dict"]) == set(fresh.state_dict()), set(plain["state_dict"]) ^ set(
            fresh.state_dict()
        )

    module, loader = build(family, 1, work)
    assert any(not torch.equal(saved[k], v.float()) for k, v in module.state_dict().items() if k in saved)
    # VistaLLM's folder is read into hybrid sharding (2 replicas of 1 shard): resharded on load.
    shard_size = 1 if family == "vistallm" else None
    restored = trainer(fsdp2(activation_checkpointing=True, shard_size=shard_size), [])
    restored.fit(module, loader, ckpt_path=ckpt)  # max_steps reached: restores, trains no further step
    assert restored.global_step == STEPS, restored.global_step
    again = full_state(module)
    assert again.keys() == saved.keys()
    different = [k for k in saved if not torch.equal(saved[k], again[k])]
    assert not different, different
    report["restored"] = True

    if family == "gpv1":  # fp32 weights gathered, as DDP computes under autocast: the same numbers
        module, loader = build(family, 0, work)
        losses = _Losses()
        trainer(fsdp2(param_dtype="fp32"), [losses]).fit(module, loader)
        report["fsdp2_fp32_params"] = losses.values

    (out / f"{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    print(f"rank {rank} ok", flush=True)
    dist.destroy_process_group()
    # Skip the interpreter's teardown: a gloo worker thread still being destroyed there can abort the process.
    os._exit(0)


if __name__ == "__main__":
    main()
