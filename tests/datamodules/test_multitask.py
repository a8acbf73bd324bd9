"""Mixing data modules: GPV-1's uniform concatenation and weighted mixing, deterministic given a seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from datamodules.coco import CocoDataModule, CocoOptions
from datamodules.multitask import MultiTaskDataModule, mixing_weights
from datamodules.nlvr2 import Nlvr2DataModule
from datamodules.vqav2 import VQAv2DataModule
from lightning_gpv.tasks.catalogue import Task


def children(coco_root: Path, vqa_root: Path) -> list:  # type: ignore[type-arg]
    return [CocoDataModule(str(coco_root)), VQAv2DataModule(str(vqa_root))]


def test_uniform_concatenation(coco_root: Path, vqa_root: Path) -> None:
    dm = MultiTaskDataModule(children(coco_root, vqa_root), batch_size=4, seed=3)
    dm.setup("fit")
    ids = [s.sample_id for b in dm.train_dataloader() for s in b]
    assert len(ids) == len(set(ids)) == 15 + 4  # every sample once per epoch (COCO 15, VQA 4)
    again = MultiTaskDataModule(children(coco_root, vqa_root), batch_size=4, seed=3)
    assert [s.sample_id for b in again.train_dataloader() for s in b] == ids
    other = MultiTaskDataModule(children(coco_root, vqa_root), batch_size=4, seed=4)
    assert [s.sample_id for b in other.train_dataloader() for s in b] != ids
    vals = dm.val_dataloader()
    assert len(vals) == 2 and dm.loader_names() == ["CocoDataModule[0]:val2014", "VQAv2DataModule[1]:val2014"]
    assert {s.task for b in vals[1] for s in b} == {Task.VQA}


def test_uniform_shuffles_honour_samples_per_epoch(coco_root: Path, vqa_root: Path) -> None:
    dm = MultiTaskDataModule(children(coco_root, vqa_root), samples_per_epoch=50, batch_size=10, seed=1)
    dm.setup("fit")
    ids = [s.sample_id for b in dm.train_dataloader() for s in b]
    assert len(ids) == 50
    # Whole shuffles of the 19 samples first: each appears 2 or 3 times, never twice within a shuffle.
    assert set(Counter(ids).values()) == {2, 3} and len(set(ids[:19])) == len(set(ids[19:38])) == 19


@pytest.mark.parametrize("weights", [None, [1.0, 3.0]])
def test_ddp_keeps_samples_per_epoch_and_the_seeded_draw(
    weights: list[float] | None, coco_root: Path, vqa_root: Path
) -> None:
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler

    kids = children(coco_root, vqa_root)
    dm = MultiTaskDataModule(kids, weights=weights, samples_per_epoch=50, batch_size=5, seed=1)
    dm.setup("fit")
    whole = list(dm.train_dataloader().sampler)
    shares = []
    for rank in range(2):  # what Lightning puts in each process's loader under DDP on 2 processes
        loader = dm.train_dataloader()  # each process seeds its own generator alike
        sampler = _get_distributed_sampler(loader, shuffle=True, overfit_batches=0, num_replicas=2, rank=rank)
        shares.append(list(sampler))
    assert [len(share) for share in shares] == [25, 25]
    assert sorted(shares[0] + shares[1]) == sorted(whole)  # the same draw, split between the ranks


def test_weighted_mixing(coco_root: Path, vqa_root: Path) -> None:
    dm = MultiTaskDataModule(
        children(coco_root, vqa_root), weights=[1.0, 3.0], samples_per_epoch=4000, batch_size=100
    )
    got = Counter(s.task == Task.VQA for b in dm.train_dataloader() for s in b)
    assert sum(got.values()) == 4000
    assert got[True] / 4000 == pytest.approx(0.75, abs=0.03)
    w = mixing_weights([15, 4], None)
    assert torch.allclose(w, torch.ones(19, dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        mixing_weights([3, 4], [0.0, 0.0])
    with pytest.raises(ValueError, match="2 weights for 1"):
        MultiTaskDataModule([CocoDataModule(str(coco_root))], weights=[1, 2])


def test_processor_reaches_every_child(coco_root: Path, nlvr2_root: Path) -> None:
    class P:
        def encode(self, sample, *, train):  # type: ignore[no-untyped-def]
            return (sample.task.value, train)

        def collate(self, items):  # type: ignore[no-untyped-def]
            return items

    kids = [
        CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",))),
        Nlvr2DataModule(str(nlvr2_root), val_split=None),
    ]
    dm = MultiTaskDataModule(kids, batch_size=64)
    dm.connect(P())
    (batch,) = list(dm.train_dataloader())
    assert Counter(batch) == {("captioning", True): 5, ("nlvr2", True): 2}
    assert len(dm.val_dataloader()) == 1 and dm.loader_names("validate") == ["CocoDataModule[0]:val2014"]
    assert dm.num_skipped == 0


@pytest.mark.parametrize("weights", [None, [1.0, 3.0]])
def test_bucketing_regroups_the_same_draw(
    weights: list[float] | None, coco_root: Path, nlvr2_root: Path, vqa_root: Path
) -> None:
    def module(bucketing: bool) -> MultiTaskDataModule:
        kids = [*children(coco_root, vqa_root), Nlvr2DataModule(str(nlvr2_root))]
        w = None if weights is None else [*weights, 1.0]
        return MultiTaskDataModule(kids, weights=w, samples_per_epoch=60, batch_size=4, seed=2,
                                   bucketing=bucketing, bucket_pool=5)  # fmt: skip

    plain = [[s.sample_id for s in b] for b in module(False).train_dataloader()]
    dm = module(True)
    loader = dm.train_dataloader()
    bucketed = [[s.sample_id for s in b] for b in loader]
    # The first epoch draws what the unbucketed loader draws (same seed), in other batches.
    assert Counter(i for b in bucketed for i in b) == Counter(i for b in plain for i in b)
    assert len(bucketed) == len(plain) == len(loader) == 15 and bucketed != plain
    # Within a pool (5 batches), the NLVR2 (two-image) samples fill as few batches as they can.
    for pool in range(0, 15, 5):
        nlvr2 = [sum(i.startswith("nlvr2") for i in b) for b in bucketed[pool : pool + 5]]
        assert sum(n > 0 for n in nlvr2) <= -(-sum(nlvr2) // 4) + 1
    # The position survives a data module state round trip (what checkpoints hold).
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = dm.state_dict()
    assert state["train_batches"]["next_batch"] == 4
    again = module(True)
    again.load_state_dict(state)
    assert [[s.sample_id for s in b] for b in again.train_dataloader()] == bucketed[4:]
    assert module(False).state_dict() == {}
    with pytest.raises(ValueError, match="bucket_pool"):
        MultiTaskDataModule(children(coco_root, vqa_root), bucket_pool=0)
