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
    """Segmentations are checked when read: a malformed one names instances.json and the field, and with
    skip only the RES samples of the refs on it are dropped (counted once per ref)."""
    path = refcoco_root / "refcoco" / "instances.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = [[1, 2, 3]]  # odd number of coordinates
    bad_id = data["annotations"][0]["id"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataFormatError, match=r"instances\.json: field 'annotations\[0\]\.segmentation\[0\]': .*even number"
    ):
        RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res",))).dataset("train")
    # REC does not read the segmentation
    assert len(RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("rec",))).dataset("train")) == 3
    dm = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("rec", "res")), on_bad_sample="skip")
    ds = dm.dataset("train")
    got = [ds[i] for i in range(len(ds))]
    assert dm.num_skipped == 1  # ref 1 (two sentences) on annotation 11
    assert sum(s.task == Task.REC for s in got) == 3
    res = [s for s in got if s.task == Task.RES]
    assert len(res) == 1 and all(s.metadata["ann_id"] != bad_id for s in res)


def _write_refcoco_annotation(root: Path, index: int, **changes: object) -> None:
    path = root / "refcoco" / "instances.json"
    data = json.loads(path.read_text())
    data["annotations"][index].update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("segmentation", "field_name", "message"),
    [
        ([[2, 3, 12, 3, 2, 3]], r"segmentation", "no polygon with at least 3 distinct vertices"),
        (
            [[2, 3, 12, 3, 22, 3]],
            r"segmentation",
            "no polygon with at least 3 distinct vertices",
        ),  # collinear
        ([[2.1, 3.1, 2.4, 3.1, 2.2, 3.4]], r"segmentation", "cover no pixel centre"),
        ([[2, 3, 12, float("nan"), 12, 23]], r"segmentation\[0\]", "finite"),
        ([[2, 3, 12, 3, 12, 230]], r"segmentation\[0\]", "outside the 60x40"),
        ([], r"segmentation", "no polygon"),
        ([["2", 3, 12, 3, 12, 23]], r"segmentation\[0\]", "flat list of numbers"),
        ({"counts": "!!garbage", "size": [40, 60]}, r"segmentation\.counts", "invalid character '!'"),
        ({"counts": "0", "size": [40, 60]}, r"segmentation\.counts", "cover 0 pixels"),
        ({"counts": [2400], "size": [40, 60]}, r"segmentation\.counts", "no foreground"),
        ({"counts": [-1, 2401], "size": [40, 60]}, r"segmentation\.counts", "non-negative"),
        ({"counts": [0, 2400], "size": [60, 40]}, r"segmentation\.size", r"\[40, 60\]"),
        ({"counts": [0, 2400]}, r"segmentation\.size", "missing field"),
    ],
)
def test_degenerate_and_garbage_masks_are_refused_when_read(
    refcoco_root: Path, segmentation: object, field_name: str, message: str
) -> None:
    _write_refcoco_annotation(refcoco_root, 0, segmentation=segmentation)  # annotation 11 of image 1 (40x60)
    dm = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res",)))
    with pytest.raises(
        DataFormatError, match=rf"instances\.json: field 'annotations\[0\]\.{field_name}': .*{message}"
    ):
        dm.dataset("train")
    skip = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res",)), on_bad_sample="skip")
    ds = skip.dataset("train")
    assert [ds[i].metadata["ann_id"] for i in range(len(ds))] == [12] and skip.num_skipped == 1


def test_polygons_are_cleaned_and_rle_accepted(refcoco_root: Path) -> None:
    # A degenerate extra polygon is dropped, a vertex 1 px past the border is clipped; valid RLE passes.
    _write_refcoco_annotation(refcoco_root, 0, segmentation=[[2, 3, 2, 3], [2, 3, 61, 3, 61, 23, 2, 23]])
    mask = np.zeros((40, 60), np.uint8)
    mask[5:35, 20:50] = 1
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    _write_refcoco_annotation(refcoco_root, 1, segmentation={"size": [40, 60], "counts": runs}, iscrowd=1)
    ds = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("res",))).dataset("train")
    by_ann = {ds[i].metadata["ann_id"]: ds[i] for i in range(len(ds))}
    (poly,) = by_ann[11].target.masks
    assert len(poly.polygons) == 1 and poly.polygons[0][:, 0].max() == 60  # clipped to W
    assert poly.to_array()[3:23, 2:60].all()
    (rle,) = by_ann[12].target.masks
    assert (rle.to_array() == mask.astype(bool)).all()


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([2, 3, 0, 20], "w, h > 0"),
        ([2, 3, -5, 20], "w, h > 0"),
        ([2, 3, float("inf"), 20], "finite"),
        ([2, 3, 1e300, 20], "finite"),
        ([2, 3, 10, "20"], "expected 4 numbers"),
        ([100, 3, 10, 20], "outside the 60x40"),
        ([-30, 3, 10, 20], "outside the 60x40"),
    ],
)
def test_bad_boxes_are_refused(refcoco_root: Path, bbox: list, message: str) -> None:
    _write_refcoco_annotation(refcoco_root, 0, bbox=bbox)
    with pytest.raises(
        DataFormatError, match=rf"instances\.json: field 'annotations\[0\]\.bbox': .*{message}"
    ):
        RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("rec",))).dataset("train")
    dm = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("rec",)), on_bad_sample="skip")
    assert len(dm.dataset("train")) == 1 and dm.num_skipped == 1


def test_small_box_overshoot_is_clipped(refcoco_root: Path) -> None:
    _write_refcoco_annotation(refcoco_root, 0, bbox=[-1, 3, 62, 20])  # 1 px past both sides of W = 60
    ds = RefCocoDataModule(str(refcoco_root), RefCocoOptions(tasks=("rec", "reg"))).dataset("train")
    rec = next(ds[i] for i in range(len(ds)) if ds[i].metadata["ann_id"] == 11 and ds[i].task == Task.REC)
    np.testing.assert_allclose(rec.target.boxes, [[0, 3, 60, 23]])
    reg = next(ds[i] for i in range(len(ds)) if ds[i].metadata["ann_id"] == 11 and ds[i].task == Task.REG)
    np.testing.assert_allclose(reg.region, [0, 3, 60, 23])


def test_refs_need_sentences_unique_ids_and_their_own_image(refcoco_root: Path) -> None:
    path = refcoco_root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    refs[0]["sentences"][1]["sent"] = "   "
    refs[1]["ref_id"] = refs[0]["ref_id"]
    path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(DataFormatError, match=r"field '\[0\]\.sentences\[1\]\.sent': empty sentence"):
        RefCocoDataModule(str(refcoco_root)).dataset("train")
    refs[0]["sentences"][1]["sent"] = "left person"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(DataFormatError, match=r"field '\[1\]\.ref_id': duplicate ref id 1"):
        RefCocoDataModule(str(refcoco_root)).dataset("train")
    refs[1]["ref_id"], refs[1]["image_id"] = 2, 2  # annotation 12 is of image 1
    refs[0]["sentences"] = []
    path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(DataFormatError, match=r"field '\[0\]\.sentences': a ref needs at least one sentence"):
        RefCocoDataModule(str(refcoco_root)).dataset("train")
    dm = RefCocoDataModule(str(refcoco_root), on_bad_sample="skip")
    assert len(dm.dataset("train")) == 0 and dm.num_skipped == 2
    assert "annotation 12 is of image 1, the ref's is 2" in dm.reader.bad.reasons[1]


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


def _edit_grefs(root: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = root / "grefs(unc).json"
    refs = json.loads(path.read_text())
    change(refs)
    path.write_text(json.dumps(refs))


@pytest.mark.parametrize(
    ("index", "changes", "message"),
    [
        (2, {"no_target": False}, r"'\[2\]\.no_target': no_target is false but ann_id is \[-1\]"),
        (0, {"no_target": True}, r"'\[0\]\.no_target': no_target is true but ann_id is \[11\]"),
        (2, {"no_target": "yes"}, r"'\[2\]\.no_target': expected true or false"),
        (1, {"ann_id": [21, 21]}, r"'\[1\]\.ann_id': repeated annotation id"),
        (1, {"ann_id": [21, -1]}, r"'\[1\]\.ann_id': annotation -1 not in instances\.json"),
        (1, {"ann_id": []}, r"'\[1\]\.ann_id': expected an integer or a list"),
        (0, {"image_id": 2}, r"'\[0\]\.ann_id': annotation 11 is of image 1, the ref's is 2"),
    ],
)
def test_grefcoco_targets_are_consistent(
    grefcoco_root: Path, index: int, changes: dict, message: str
) -> None:
    _edit_grefs(grefcoco_root, lambda refs: refs[index].update(changes))
    with pytest.raises(DataFormatError, match=rf"grefs\(unc\)\.json: field {message}"):
        GRefCocoDataModule(str(grefcoco_root)).dataset("train")
    dm = GRefCocoDataModule(str(grefcoco_root), GRefCocoOptions(tasks=("grec",)), on_bad_sample="skip")
    ds = dm.dataset("train")
    got = [ds[i] for i in range(len(ds))]
    assert dm.num_skipped == 1 and all(s.metadata["ref_id"] != index + 1 for s in got)
    assert all(s.metadata["no_target"] == (len(s.target.boxes) == 0) for s in got)


def test_grefcoco_bad_mask_drops_only_gres(grefcoco_root: Path) -> None:
    path = grefcoco_root / "instances.json"
    data = json.loads(path.read_text())
    data["annotations"][3]["segmentation"] = {"counts": "!!garbage", "size": [50, 50]}  # annotation 22
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataFormatError, match=r"instances\.json: field 'annotations\[3\]\.segmentation\.counts'"
    ):
        GRefCocoDataModule(str(grefcoco_root)).dataset("train")
    dm = GRefCocoDataModule(str(grefcoco_root), on_bad_sample="skip")
    ds = dm.dataset("train")
    got = {(s.task, s.expression) for s in (ds[i] for i in range(len(ds)))}
    assert (Task.GREC, "both dogs") in got and (Task.GRES, "both dogs") not in got
    assert (Task.GRES, "the cat") in got and dm.num_skipped == 1  # ref 2 (two sentences), counted once
