"""Worker of the two-process DDP test (importable by spawned children through ``sys.path``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from lightning_gpv.metrics import (
    CIDErD,
    ClassificationAccuracy,
    CoSegScore,
    GRECScore,
    GRESScore,
    LocalizationAP,
    MaskIoU,
    NLVRScore,
    ReferringAccuracy,
    VQAAccuracy,
)

N = 11  # odd: the DistributedSampler pads rank 1 with a repeat of sample 0
CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing with a frisbee in the park.",
    "A plate of food with broccoli and rice.",
    "A red bus parked next to a tall building.",
    "A cat sleeping on a laptop keyboard.",
    "Several zebras grazing in a dry field.",
    "A woman's umbrella isn't open (it's raining).",
    "A child eating a slice of pizza at a table.",
    "An airplane flying over a snowy mountain.",
    "Two men playing tennis on a clay court.",
    "A bowl of fruit: apples, bananas, and oranges.",
]


def sample(i: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    words = CAPTIONS[i].split()
    box = torch.tensor([[10.0 * i, 5.0, 10.0 * i + 40, 60.0]], dtype=torch.float64)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[: 1 + i % 7, : 2 + i % 5] = True
    pred_mask = mask.clone()
    pred_mask[0, :] = True
    jitter = torch.rand(3, 4, generator=g, dtype=torch.float64) * 20
    return {
        "id": i,
        "pred": " ".join(words[: max(2, len(words) - i % 4)]),
        "refs": [CAPTIONS[i], CAPTIONS[(i + 1) % N], " ".join(reversed(words))][: 1 + i % 3],
        "vqa_pred": ["yes", "2", "red"][i % 3],
        "vqa_answers": [["yes"] * 10, ["2"] * 3 + ["two"] * 7, ["red"] * 2 + ["blue"] * 8][i % 3],
        "answer_type": ["yes/no", "number", "other"][i % 3],
        "pred_boxes": torch.cat([box + jitter[:1], box + 100 + jitter[1:2], box + jitter[2:]]),
        "pred_scores": torch.rand(3, generator=g, dtype=torch.float64),
        "target_boxes": box if i % 4 else torch.zeros(0, 4, dtype=torch.float64),
        "pred_mask": pred_mask if i % 6 else None,
        "target_mask": mask if i % 5 else None,
        "group": f"group{i % 3}",
        "cls_pred": ["man", "dog", "cat"][i % 3],
        "cls_target": ["person", "dog", "dog"][i % 3],
        "nlvr_id": f"dev-{i // 2}-{i % 2}-0",
        "nlvr_pred": ["True", "False"][i % 2 if i < 6 else 0],
    }


def build_metrics() -> dict[str, Any]:
    return {
        "cider": CIDErD(),
        "cider_per_caption": CIDErD(per_caption=True),
        "vqa": VQAAccuracy(per_answer_type=True),
        "loc_ap": LocalizationAP(),
        "rec": ReferringAccuracy(),
        "grec": GRECScore(),
        "mask_iou": MaskIoU(),
        "gres": GRESScore(),
        "coseg": CoSegScore(),
        "cls": ClassificationAccuracy(synonyms={"person": ["man", "woman"]}),
        "nlvr": NLVRScore(),
        "rank0_only": VQAAccuracy(),  # the other rank never updates it: its states stay empty lists
    }


def feed(metrics: dict[str, Any], indices: list[int], rank: int = 0, batch: int = 4) -> None:
    for start in range(0, len(indices), batch):
        rows = [sample(i) for i in indices[start : start + batch]]
        ids = [r["id"] for r in rows]
        col = lambda key, rows=rows: [r[key] for r in rows]  # noqa: E731
        metrics["cider"].update(col("pred"), col("refs"), ids=[f"img{i}" for i in ids])
        metrics["cider_per_caption"].update(col("pred"), col("refs"), ids=ids)
        metrics["vqa"].update(col("vqa_pred"), col("vqa_answers"), ids=ids, answer_types=col("answer_type"))
        metrics["loc_ap"].update(col("pred_boxes"), col("pred_scores"), col("target_boxes"), ids=ids)
        with_target = [r for r in rows if r["target_boxes"].numel()]
        if with_target:
            metrics["rec"].update(
                torch.stack([r["pred_boxes"][0] for r in with_target]),
                torch.cat([r["target_boxes"] for r in with_target]),
                ids=[r["id"] for r in with_target],
            )
        metrics["grec"].update(
            col("pred_boxes"), col("target_boxes"), pred_scores=col("pred_scores"), ids=ids
        )
        metrics["mask_iou"].update(col("pred_mask"), col("target_mask"), ids=ids)
        metrics["gres"].update(col("pred_mask"), col("target_mask"), ids=ids)
        targets = [m if m is not None else torch.zeros(8, 8, dtype=torch.bool) for m in col("target_mask")]
        metrics["coseg"].update(col("pred_mask"), targets, groups=col("group"), ids=ids)
        metrics["cls"].update(col("cls_pred"), col("cls_target"), ids=ids)
        metrics["nlvr"].update(col("nlvr_pred"), ["True"] * len(rows), col("nlvr_id"))
        if rank == 0:
            metrics["rank0_only"].update(col("vqa_pred"), col("vqa_answers"), ids=ids)


def to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return float(value)


def shard(rank: int, world: int) -> list[int]:
    return list(DistributedSampler(range(N), num_replicas=world, rank=rank, shuffle=False))


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = build_metrics()
        feed(metrics, shard(rank, world), rank=rank)
        results = {name: to_plain(metric.compute()) for name, metric in metrics.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
