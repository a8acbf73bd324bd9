"""The evaluation layer: per-loader keys, subsets, rates, losses, records, and ranks that agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from lightning_gpv.metrics.evaluation import Evaluator, flatten_results
from lightning_gpv.metrics.tables import EvalItem, evaluation_table
from lightning_gpv.tasks import Prediction, Target, Task
from lightning_gpv.tasks.catalogue import Family

BOX = [10.0, 10.0, 50.0, 50.0]


def _vqa(sample_id: str, answer: str, dropped: bool = False, **meta: str) -> EvalItem:
    prediction = Prediction(Task.VQA, sample_id, text=answer, dropped=["x"] if dropped else [])
    return EvalItem(prediction, Target(text="red", answers=["red"] * 10), ((64, 64),), meta)


def _rec(sample_id: str, box: list[float] | None) -> EvalItem:
    boxes = np.zeros((0, 4), np.float32) if box is None else np.asarray([box], np.float32)
    return EvalItem(Prediction(Task.REC, sample_id, boxes=boxes), Target(boxes=[BOX]), ((64, 64),))


def test_metrics_are_kept_per_loader_under_uniform_keys() -> None:
    evaluator = Evaluator(evaluation_table(Family.VISTALLM))
    evaluator.start(["coco.val2014", "refcoco_unc.val"])
    evaluator.update(0, [_vqa("a", "red"), _vqa("b", "blue", dropped=True)])
    evaluator.update(1, [_rec("c", BOX), _rec("d", None)])
    evaluator.update_losses(0, {"loss": torch.tensor(2.0)}, weight=2)
    evaluator.update_losses(0, {"loss": 5.0}, weight=1)
    first = evaluator.compute(0, "test")
    assert first == {
        "test/coco.val2014/loss": pytest.approx(3.0),
        "test/coco.val2014/vqa/accuracy": pytest.approx(0.5),
        "test/coco.val2014/vqa/parse_failure": pytest.approx(0.5),
    }
    assert evaluator.pending() == [1]
    second = evaluator.compute(1, "test")
    assert second == {"test/refcoco_unc.val/rec/acc@0.5": 0.5, "test/refcoco_unc.val/rec/parse_failure": 0.0}
    assert evaluator.pending() == []
    with pytest.raises(KeyError, match="loss_bbox"):
        evaluator.update_losses(0, {"loss_bbox": 1.0}, weight=1)


def test_sce_subsets_and_family_tables() -> None:
    evaluator = Evaluator(evaluation_table(Family.GPV1), checks={"short": lambda p: len(p.text) < 4})
    evaluator.start(["coco"])
    evaluator.update(0, [_vqa("a", "red", sce="seen"), _vqa("b", "blue", sce="unseen"), _vqa("c", "red")])
    out = evaluator.compute(0, "val")
    assert out["val/coco/vqa/accuracy"] == pytest.approx(2 / 3)
    assert out["val/coco/vqa_seen/accuracy"] == 1.0 and out["val/coco/vqa_unseen/accuracy"] == 0.0
    assert out["val/coco/vqa/short"] == pytest.approx(2 / 3)
    # GPV-1 scores REC by per-query AP over its ranked boxes, VistaLLM by top-1 Acc@0.5.
    assert [s.factory().__class__.__name__ for s in evaluation_table(Family.GPV1)[Task.REC]] == [
        "LocalizationAP"
    ]
    assert [s.name for s in evaluation_table(Family.VISTALLM)[Task.REC]] == ["acc@0.5"]


def test_records_are_written_once_per_sample(tmp_path: Path) -> None:
    evaluator = Evaluator(evaluation_table(Family.VISTALLM), records_dir=tmp_path)
    evaluator.start(["refcoco_unc.val"])
    evaluator.update(0, [_rec("c", BOX), _rec("d", [30.0, 30.0, 60.0, 60.0]), _rec("c", BOX)])
    evaluator.compute(0, "test")
    path = tmp_path / "test" / "refcoco_unc.val.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == ["c", "d"]  # the repeated sample once
    assert records[0]["score"] == 1.0 and 0.0 < records[1]["score"] < 0.5  # the IoU
    assert records[0]["target"]["boxes"] == [BOX] and records[0]["prediction"]["boxes"] == [BOX]
    assert not list(path.parent.glob(".*tmp*"))


def test_flatten_results_drops_the_dataloader_suffix() -> None:
    results = [{"test/a/vqa/accuracy/dataloader_idx_0": 0.5}, {"test/b/rec/acc@0.5/dataloader_idx_1": 1.0}]
    assert flatten_results(results) == {"test/a/vqa/accuracy": 0.5, "test/b/rec/acc@0.5": 1.0}


# ------------------------------------------------------------------------------------------------------
# Two processes (gloo): a rank that saw no sample of a task still computes, and the numbers equal one
# process's.

ITEMS = [_vqa("a", "red"), _vqa("b", "blue"), _rec("c", BOX), _rec("d", None), _vqa("e", "red")]


def _evaluate(items: list[EvalItem], records: Path | None = None) -> dict[str, float]:
    evaluator = Evaluator(evaluation_table(Family.VISTALLM), records_dir=records)
    evaluator.start(["d0", "d1"])
    evaluator.update(0, items)
    evaluator.update(1, [it for it in items if it.prediction.sample_id == "a"])  # one rank sees nothing
    return {**evaluator.compute(0, "val"), **evaluator.compute(1, "val")}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # Rank 0 gets every VQA sample, rank 1 only the REC ones: each rank misses a task.
        mine = [it for it in ITEMS if (it.prediction.task is Task.REC) == (rank == 1)]
        out = _evaluate(mine, Path(out_dir) / "records")
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_two_processes_agree_with_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = _evaluate(ITEMS)
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(single)
    lines = (tmp_path / "records" / "val" / "d0.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ["a", "b", "c", "d", "e"]
