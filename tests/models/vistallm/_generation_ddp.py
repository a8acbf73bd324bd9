"""Worker of the two-process generation test (importable by spawned children through ``sys.path``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.model import VistaLLM
from lightning_gpv.models.vistallm.processor import VistaLLMProcessor
from lightning_gpv.models.vistallm.tokenization import load_llm_tokenizer, load_qformer_tokenizer
from lightning_gpv.tasks import Target, Task, TaskSample

MAX_NEW_TOKENS = 6


def worker(rank: int, world: int, init_file: str, out_dir: str, synced: bool) -> None:
    """Rank 0 ends its sample on the first token (its eos is that token); rank 1 never ends early."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        config = VistaLLMConfig.tiny()
        tokenizer = load_llm_tokenizer(config.llm, config.codec)
        processor = VistaLLMProcessor(config, tokenizer, load_qformer_tokenizer(config.qformer, config.llm))
        torch.manual_seed(0)
        model = VistaLLM.from_config(config, tokenizer=tokenizer).eval()
        image = np.random.default_rng(rank).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        sample = TaskSample(Task.VQA, [image], Target(text="red"), question="Color?", sample_id=f"s{rank}")
        batch = processor.collate([processor.encode(sample, train=False)])
        calls = []
        model.llm.register_forward_hook(lambda *_: calls.append(1))
        with torch.no_grad():
            first = model.generate(**batch.generation_inputs(), max_new_tokens=1, eos_token_id=-1,
                                   pad_token_id=0, synced_ranks=False)  # fmt: skip
            calls.clear()
            eos = int(first[0, 0]) if rank == 0 else -1
            out = model.generate(**batch.generation_inputs(), max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos,
                                 pad_token_id=0, synced_ranks=None if synced else False)  # fmt: skip
        torch.save({"ids": out, "forwards": len(calls), "eos": eos}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
