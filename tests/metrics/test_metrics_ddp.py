"""Two real processes (gloo on CPU): synced metrics equal single-process ones, DistributedSampler padding
included (sample 0 is seen twice and must count once)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from _metrics_ddp import N, build_metrics, feed, sample, shard, to_plain, worker

from lightning_gpv.metrics import CIDErD


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_sync_equals_single_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    world = 2
    assert sorted(shard(0, world) + shard(1, world)) == sorted([*range(N), 0])  # padding repeats sample 0
    mp.spawn(worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert results[0] == results[1]

    single = build_metrics()
    feed(single, list(range(N)))
    expected = {name: to_plain(metric.compute()) for name, metric in single.items()}
    rank0 = build_metrics()["rank0_only"]
    feed({**build_metrics(), "rank0_only": rank0}, shard(0, world), rank=0)
    expected["rank0_only"] = to_plain(rank0.compute())
    for name, value in expected.items():
        assert results[0][name] == pytest.approx(value, abs=1e-12), name

    # Without ids the padded repeat would be counted: the comparison above is not vacuous.
    padded = CIDErD()
    rows = [sample(i) for i in [*range(N), 0]]
    padded.update([r["pred"] for r in rows], [r["refs"] for r in rows])
    assert padded.compute().item() != pytest.approx(expected["cider"], abs=1e-9)
