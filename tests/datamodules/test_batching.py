"""Bucketed batches: the same draw regrouped by number of images and length, sharded among ranks, resumable
(also through a Lightning fit resumed from a mid-epoch checkpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from datamodules.batching import BucketBatchSampler, BucketLoader, LengthEstimate, epoch_seed, sample_keys
from datamodules.coco import CocoDataModule, CocoOptions
from datamodules.multitask import MultiTaskDataModule
from datamodules.nlvr2 import Nlvr2DataModule
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from lightning_gpv.tasks.catalogue import Task

ROOT = Path(__file__).resolve().parents[2]


def mixed_keys(n: int = 600, seed: int = 0) -> np.ndarray:
    """``(n, 2)`` keys: 80% one image, 20% two; lengths from 2 (VQA) to 130 (masks)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice([1, 2], n, p=[0.8, 0.2]), rng.integers(2, 131, n)], 1)


def draw(sampler: Any, seed: int, epoch: int) -> list[int]:
    """What ``sampler`` draws for ``epoch`` of a bucketed loader seeded with ``seed``."""
    sampler.generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return list(sampler)


def padding(batches: list[list[int]], keys: np.ndarray) -> float:
    """Padded share of the positions when every batch is padded to its longest sample."""
    total = sum(len(b) * int(keys[b, 1].max()) for b in batches)
    return 1 - sum(int(keys[b, 1].sum()) for b in batches) / total


@pytest.mark.parametrize("kind", ["uniform", "weighted"])
def test_same_draw_regrouped(kind: str) -> None:
    keys = mixed_keys()
    if kind == "uniform":
        sampler: Any = RandomSampler(range(len(keys)), num_samples=1000)
    else:
        sampler = WeightedRandomSampler(torch.rand(len(keys), dtype=torch.float64), 1000, replacement=True)
    buckets = BucketBatchSampler(sampler, 16, keys, pool_batches=8, seed=3)
    for epoch in (0, 1):
        buckets.set_epoch(epoch)
        batches = list(buckets)
        assert len(batches) == len(buckets) == 63 and [len(b) for b in batches[-2:]] == [16, 1000 - 62 * 16]
        assert Counter(i for b in batches for i in b) == Counter(draw(sampler, 3, epoch))


def test_batches_are_homogeneous_and_lean() -> None:
    # 48 one-image and 16 two-image samples, one pool: every batch holds one kind.
    keys = np.array([(1 + (i % 4 == 0), (i * 37) % 100) for i in range(64)])
    batches = list(BucketBatchSampler(SequentialSampler(range(64)), 8, keys, pool_batches=8))
    assert all(len({int(keys[i, 0]) for i in b}) == 1 for b in batches) and len(batches) == 8
    # Random pools hold counts that are not multiples of the batch size: at most one mixed batch per
    # boundary between groups in a pool.
    keys = mixed_keys()
    sampler = RandomSampler(range(len(keys)), generator=torch.Generator().manual_seed(0))
    bucketed = list(BucketBatchSampler(sampler, 16, keys, pool_batches=10))
    mixed = sum(len({int(keys[i, 0]) for i in b}) > 1 for b in bucketed)
    assert mixed <= 4  # 600 samples: 4 pools of 160, 2 groups
    plain = draw(sampler, 0, 0)
    unbucketed = [plain[i : i + 16] for i in range(0, len(plain), 16)]
    assert padding(bucketed, keys) < padding(unbucketed, keys) / 2


def test_deterministic_by_seed_and_epoch() -> None:
    keys = mixed_keys()

    def batches(seed: int, epoch: int) -> list[list[int]]:
        buckets = BucketBatchSampler(RandomSampler(range(len(keys))), 8, keys, pool_batches=5, seed=seed)
        buckets.set_epoch(epoch)
        return list(buckets)

    assert batches(1, 0) == batches(1, 0) and batches(1, 2) == batches(1, 2)
    assert batches(1, 0) != batches(1, 1) and batches(1, 0) != batches(2, 0)
    # Iterating again without set_epoch replays the epoch (as DistributedSampler does).
    buckets = BucketBatchSampler(RandomSampler(range(len(keys))), 8, keys, pool_batches=5, seed=1)
    assert list(buckets) == list(buckets) == batches(1, 0)


@pytest.mark.parametrize(("num", "world", "drop_last"), [(480, 4, False), (500, 4, False), (500, 4, True)])
def test_ranks_get_equal_shares(num: int, world: int, drop_last: bool) -> None:
    keys = mixed_keys()
    sampler = RandomSampler(range(len(keys)), num_samples=num)
    options: dict[str, Any] = {"pool_batches": 6, "seed": 7, "drop_last": drop_last}
    ranks = [BucketBatchSampler(sampler, 8, keys, rank=r, world_size=world, **options) for r in range(world)]
    shares = [list(r) for r in ranks]
    assert len({len(s) for s in shares}) == 1 and all(len(s) == len(r) for s, r in zip(shares, ranks))
    assert all(sum(map(len, s)) == r.num_indices() for s, r in zip(shares, ranks))
    drawn = Counter(draw(sampler, 7, 0))
    seen = Counter(i for s in shares for b in s for i in b)
    whole = BucketBatchSampler(sampler, 8, keys, world_size=1, **options)
    epoch = list(whole)
    if num % (8 * world) == 0:  # 60 batches over 4 ranks: disjoint shares that cover the draw
        assert seen == drawn
        assert sorted(b for s in shares for b in s) == sorted(epoch)
    elif drop_last:  # 62 full batches, 60 kept (15 per rank)
        assert not seen - drawn and sum(seen.values()) == 60 * 8
    else:  # 63 batches (the last one of 4) and the first one repeated: 16 per rank
        assert not drawn - seen and sum(seen.values()) == 500 + 8
        assert shares[2][-1] == epoch[-1] and len(epoch[-1]) == 4  # the partial batch, last of its rank


def test_state_dict_resumes_with_the_next_batch() -> None:
    keys = mixed_keys()

    def make(**kw: Any) -> BucketBatchSampler:
        return BucketBatchSampler(RandomSampler(range(len(keys))), 8, keys, pool_batches=5, seed=2, **kw)

    first = make()
    first.set_epoch(1)
    whole = list(first)
    it = iter(first)
    done = [next(it) for _ in range(11)]
    state = first.state_dict()
    assert state["epoch"] == 1 and state["next_batch"] == 11
    again = make()
    again.load_state_dict(state)
    again.set_epoch(1)  # what Lightning calls on resume: the same epoch keeps the position
    assert done + list(again) == whole
    assert list(again) == whole  # the resumed epoch then replays from its start
    again.set_epoch(2)
    assert again.state_dict()["next_batch"] == 0 and len(list(again)) == len(whole)
    # Another world size keeps the global progress: 11 batches on 1 rank = 5 of 2 ranks' batches.
    half = make(rank=0, world_size=2)
    half.load_state_dict(state)
    assert half.start == 5
    with pytest.warns(UserWarning, match="different seed"):
        make().load_state_dict({**state, "seed": 9})


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_counts_the_batches_it_hands_out(workers: int) -> None:
    keys = mixed_keys(200)

    def loader() -> BucketLoader:
        buckets = BucketBatchSampler(RandomSampler(range(200)), 8, keys, pool_batches=4, seed=1)
        return BucketLoader(range(200), buckets, num_workers=workers, collate_fn=list)

    whole = [list(b) for b in loader()]
    assert len(whole) == 25 and [list(b) for b in loader()] == whole
    first = loader()
    it = iter(first)
    got = [next(it) for _ in range(6)]  # workers have prefetched more: not counted
    state = first.state_dict()
    assert state["next_batch"] == 6
    resumed = loader()
    resumed.load_state_dict(state)
    assert got + [list(b) for b in resumed] == whole
    # A restore while iterating restarts from the restored batch (Lightning restores after iter()).
    late = loader()
    it = iter(late)
    next(it)
    late.load_state_dict(state)
    assert [list(b) for b in it] == whole[6:]
    del it


def test_lightning_leaves_the_loader_alone() -> None:
    keys = mixed_keys(64)
    weights = torch.ones(64, dtype=torch.float64)
    buckets = BucketBatchSampler(WeightedRandomSampler(weights, 64), 8, keys, rank=1, world_size=2)
    loader = BucketLoader(range(64), buckets)
    assert isinstance(loader.sampler, DistributedSampler) and len(loader) == 4
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    # What Lightning applies to a training loader under DDP with use_distributed_sampler (the default).
    prepare = trainer._data_connector._prepare_dataloader
    assert prepare(loader, shuffle=True, mode=RunningStage.TRAINING) is loader
    # The batch sampler in a plain DataLoader: Lightning tries to rebuild it around a DistributedSampler.
    with pytest.raises(TypeError):
        prepare(DataLoader(range(64), batch_sampler=buckets), shuffle=True, mode=RunningStage.TRAINING)


def test_sample_keys(coco_root: Path, nlvr2_root: Path, refcoco_root: Path) -> None:
    coco = CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",))).dataset("train2014")
    nlvr2 = Nlvr2DataModule(str(nlvr2_root)).dataset("train")
    res = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res", "rec"))).dataset("train")
    keys = sample_keys(torch.utils.data.ConcatDataset([coco, nlvr2, res]))
    assert keys.shape == (len(coco) + len(nlvr2) + len(res), 2) and keys.dtype == np.int64
    assert set(keys[: len(coco), 0]) == {1} and set(keys[len(coco) : len(coco) + 2, 0]) == {2}
    tasks = [res.sample(i).task for i in range(len(res))]
    lengths = keys[len(coco) + 2 :, 1]
    masks = [int(n) for n, t in zip(lengths, tasks) if t is Task.RES]
    boxes = [int(n) for n, t in zip(lengths, tasks) if t is Task.REC]
    assert min(masks) > 66 > max(boxes) > 6  # a mask's 66 tokens, a box's 6, plus the expression
    assert LengthEstimate.for_mask_points(16).tokens_per_mask == 34
    with pytest.raises(TypeError, match="TaskDataset"):
        sample_keys(range(3))  # type: ignore[arg-type]


# -- Lightning -----------------------------------------------------------------------------------------------


class _Ids:
    """A processor whose items are sample ids (the batches are lists of ids)."""

    def encode(self, sample: Any, *, train: bool) -> str:
        return sample.sample_id

    def collate(self, items: list[str]) -> list[str]:
        return list(items)


class _Recorder(LightningModule):
    """Records its training batches; ``estimate`` reads ``estimated_stepping_batches`` as the systems do."""

    def __init__(self, estimate: bool) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.estimate = estimate
        self.seen: list[tuple[str, ...]] = []

    def training_step(self, batch: list[str], batch_idx: int) -> torch.Tensor:
        self.seen.append(tuple(batch))
        return (self.w**2).sum() + 1.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.estimate:
            assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _bucketed(coco_root: Path, nlvr2_root: Path) -> MultiTaskDataModule:
    kids = [
        CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",)), val_split=None),
        Nlvr2DataModule(str(nlvr2_root), val_split=None),
    ]
    dm = MultiTaskDataModule(kids, weights=[1, 1], samples_per_epoch=24, batch_size=4, bucketing=True,
                             bucket_pool=2, seed=5)  # fmt: skip
    dm.connect(_Ids())
    return dm


def _fit(module: LightningModule, dm: MultiTaskDataModule, root: Path, **kwargs: Any) -> None:
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root, limit_val_batches=0,
                      num_sanity_val_steps=0, max_epochs=2, **kwargs)  # fmt: skip
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)


@pytest.mark.parametrize(
    ("estimate", "keep"),
    # The systems read estimated_stepping_batches: Lightning then skips the loader's own state and only
    # the data module's restores it; without that read the loader's state alone suffices.
    [(True, "MultiTaskDataModule"), (False, "combined_loader")],
)
def test_fit_resumes_mid_epoch(
    estimate: bool, keep: str, coco_root: Path, nlvr2_root: Path, tmp_path: Path
) -> None:
    whole = _Recorder(estimate)
    _fit(whole, _bucketed(coco_root, nlvr2_root), tmp_path / "whole", enable_checkpointing=False)
    assert len(whole.seen) == 12  # 2 epochs of 6 batches
    first = _Recorder(estimate)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=8, save_top_k=-1)
    _fit(first, _bucketed(coco_root, nlvr2_root), tmp_path / "first", max_steps=8, callbacks=[saver])
    (path,) = (tmp_path / "ckpt").glob("*.ckpt")
    checkpoint = torch.load(path, weights_only=False)
    if keep == "MultiTaskDataModule":
        del checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    else:
        del checkpoint["MultiTaskDataModule"]
    torch.save(checkpoint, path)
    rest = _Recorder(estimate)
    dm = _bucketed(coco_root, nlvr2_root)
    _fit(rest, dm, tmp_path / "rest", enable_checkpointing=False, ckpt_path=path)
    assert first.seen + rest.seen == whole.seen and len(rest.seen) == 4


_DDP_SCRIPT = """
import json, sys, torch
from pathlib import Path
from lightning.pytorch import LightningModule, Trainer
from datamodules.coco import CocoDataModule, CocoOptions
from datamodules.multitask import MultiTaskDataModule
from datamodules.nlvr2 import Nlvr2DataModule

coco, nlvr2, out = sys.argv[1:4]

class Ids:
    def encode(self, sample, *, train): return sample.sample_id
    def collate(self, items): return list(items)

class Recorder(LightningModule):
    def __init__(self):
        super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1)); self.seen = []
    def training_step(self, batch, batch_idx):
        self.seen.append(list(batch)); return (self.w ** 2).sum() + 1.0
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

kids = [CocoDataModule(coco, CocoOptions(tasks=("captioning",)), val_split=None),
        Nlvr2DataModule(nlvr2, val_split=None)]
dm = MultiTaskDataModule(kids, weights=[1, 1], samples_per_epoch=32, batch_size=4, bucketing=True,
                         bucket_pool=2, seed=5)
dm.connect(Ids())
module = Recorder()
trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False, max_epochs=1)
trainer.fit(module, datamodule=dm)
Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps(module.seen))
# Without this, gloo's threads can outlive the interpreter and abort it ("terminate called without an
# active exception", exit -6) after a successful fit.
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_fit_shares_the_epoch(coco_root: Path, nlvr2_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), str(coco_root), str(nlvr2_root), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shares = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 4  # 32 draws = 8 batches of 4, 4 per rank
    single = _bucketed(coco_root, nlvr2_root)
    single.samples_per_epoch = 32
    whole = [list(b) for b in single.train_dataloader()]
    assert sorted(shares[0] + shares[1]) == sorted(whole)  # the single-process epoch, split between ranks
