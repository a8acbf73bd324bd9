"""RefCOCO family (refer API files) and gRefCOCO."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.grefcoco import GRefCocoDataModule, GRefCocoOptions
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import TaskSample


def all_samples(dm, split: str) -> list[TaskSample]:  # type: ignore[no-untyped-def]
    ds = dm.dataset(split)
    return [ds[i] for i in range(len(ds))]


def test_rec_res_reg(refcoco_root: Path) -> None:
    dm = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("rec", "res", "reg")), test_split="testA")
    train = all_samples(dm, "train")
    assert [s.task for s in train].count(Task.REC) == 3  # one per sentence
    rec = next(s for s in train if s.task == Task.REC)
    assert rec.expression == "man on the left" and rec.sample_id == "rec-100"
    np.testing.assert_allclose(rec.target.boxes, [[2, 3, 12, 23]])
    assert rec.image_sizes == [(40, 60)] and rec.images[0].endswith("COCO_train2014_000000000001.jpg")
    res = next(s for s in train if s.task == Task.RES)
    (mask,) = res.target.masks
    arr = mask.to_array()
    assert arr.shape == (40, 60) and arr[3:23, 2:12].all() and arr.sum() == 200
    reg_train = [s for s in train if s.task == Task.REG]
    assert len(reg_train) == 3 and reg_train[0].target.text == "man on the left"
    np.testing.assert_allclose(reg_train[0].region, [2, 3, 12, 23])
    val = all_samples(dm, "val")
    (reg_val,) = [s for s in val if s.task == Task.REG]  # one per ref with every sentence as answers
    assert reg_val.target.answers == ["dog top left", "upper dog"]
    assert [s.expression for s in all_samples(dm, "testA") if s.task == Task.REC] == ["dog bottom right"]
    assert set(dm.reader._cache) == {"refs", "instances"}  # parsed once for all splits ...
    assert "_cache" not in pickle.loads(pickle.dumps(dm.dataset("train"))).reader.__dict__  # ... not pickled


def test_split_schemes(refcoco_root: Path, build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="split_by"):
        RefCocoOptions(dataset="refcoco+", split_by="google")
    with pytest.raises(UnknownSplitError, match="unknown split 'testC'.*testA, testB"):
        RefCocoDataModule(str(refcoco_root)).dataset("testC")
    build.refcoco(refcoco_root, images=False, dataset="refcocog", split_by="umd")
    dm = RefCocoDataModule(str(refcoco_root), RefCocoOptions(dataset="refcocog", split_by="umd"))
    with pytest.raises(UnknownSplitError, match="unknown split 'testA'"):
        dm.dataset("testA")  # umd has train/val/test
    assert len(dm.dataset("train")) == 6


def test_bad_refs(refcoco_root: Path) -> None:
    path = refcoco_root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    refs[0]["ann_id"] = 999
    del refs[1]["sentences"]
    path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(
        DataFormatError, match=r"refs\(unc\)\.p: field '\[0\]\.ann_id': annotation 999 not in"
    ):
        RefCocoDataModule(str(refcoco_root)).dataset("train")
    dm = RefCocoDataModule(str(refcoco_root), on_bad_sample="skip")
    assert len(dm.dataset("train")) == 0 and dm.num_skipped == 2


def test_bad_segmentation_names_file_and_field(refcoco_root: Path) -> None:
    """Segmentations are decoded in __getitem__: a malformed one names instances.json and can be skipped."""
    path = refcoco_root / "refcoco" / "instances.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = [[1, 2, 3]]  # odd number of coordinates
    bad_id = data["annotations"][0]["id"]
    path.write_text(json.dumps(data))
    ds = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res",))).dataset("train")
    bad = [i for i in range(len(ds)) if ds.records[i].ann_id == bad_id]
    assert bad
    with pytest.raises(
        DataFormatError, match=rf"instances\.json: field 'annotations\[id={bad_id}\]\.segmentation'"
    ):
        ds[bad[0]]
    dm = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res",)), on_bad_sample="skip")
    ds = dm.dataset("train")
    got = [ds[i] for i in range(len(ds))]
    assert all(s.metadata["ann_id"] != bad_id for s in got) and dm.num_skipped == len(bad)


def test_shapesworld_refcoco_family(shapes_root: Path) -> None:
    root = str(shapes_root / "refcoco")
    for dataset, split_by, test in [("refcoco", "unc", "testB"), ("refcoco", "google", "test"),
                                    ("refcoco+", "unc", "testA"), ("refcocog", "umd", "test")]:  # fmt: skip
        options = RefCocoOptions(dataset, split_by, ("rec", "res", "reg"))  # type: ignore[arg-type]
        dm = RefCocoDataModule(root, options, test_split=test)
        for split in ("train", "val", test):
            ds = dm.dataset(split)
            assert len(ds) > 0, (dataset, split_by, split)
        s = next(ds[i] for i in range(len(ds)) if ds[i].task == Task.RES)
        h, w = s.image_sizes[0]
        box = s.target.masks[0].bbox
        assert abs(box - s.target.boxes[0]).max() <= 1.5 and box[2] <= w and box[3] <= h


def test_grefcoco(grefcoco_root: Path) -> None:
    dm = GRefCocoDataModule(str(grefcoco_root), test_split="testA")
    train = all_samples(dm, "train")
    grec = {s.expression: s for s in train if s.task == Task.GREC}
    assert set(grec) == {"the person", "both dogs", "two dogs", "the cat"}
    assert grec["both dogs"].target.boxes.shape == (2, 4) and grec["both dogs"].metadata["ann_ids"] == [
        21,
        22,
    ]
    cat = grec["the cat"]
    assert cat.target.boxes.shape == (0, 4) and cat.metadata["no_target"] is True
    gres = {s.expression: s for s in train if s.task == Task.GRES}
    assert len(gres["two dogs"].target.masks) == 2 and gres["the cat"].target.masks == []
    (val,) = [s for s in all_samples(dm, "val") if s.task == Task.GREC]
    assert val.target.boxes.shape == (1, 4)  # an int ann_id
    assert all(s.metadata["no_target"] for s in all_samples(dm, "testA"))
    with pytest.raises(UnknownSplitError, match="testB"):
        dm.dataset("testB")  # a known split that the file does not hold lists those it has


def test_grefcoco_pickle_and_bad_input(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    root = build.grefcoco(tmp_path, as_pickle=True)
    assert len(GRefCocoDataModule(str(root), GRefCocoOptions(tasks=("grec",))).dataset("train")) == 4
    (root / "grefs(unc).p").unlink()
    refs_path = build.grefcoco(tmp_path / "b", images=False) / "grefs(unc).json"
    refs = json.loads(refs_path.read_text())
    refs[1]["ann_id"] = ["21"]
    refs_path.write_text(json.dumps(refs))
    dm = GRefCocoDataModule(
        str(refs_path.parent), GRefCocoOptions(image_dir=str(tmp_path / "images" / "train2014"))
    )
    with pytest.raises(
        DataFormatError, match=r"grefs\(unc\)\.json: field '\[1\]\.ann_id': expected an integer"
    ):
        dm.dataset("train")


def test_shapesworld_grefcoco(shapes_root: Path) -> None:
    dm = GRefCocoDataModule(str(shapes_root / "grefcoco"), test_split="testB")
    got = all_samples(dm, "train")
    sizes = {len(s.target.boxes) for s in got}
    assert 0 in sizes and max(sizes) >= 2  # no-target and multi-target expressions
    assert all(len(s.target.masks) == len(s.target.boxes) for s in got if s.task == Task.GRES)
