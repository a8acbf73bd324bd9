"""NLVR2, co-segmentation (three layouts) and AttCoSeg."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.attcoseg import AttCosegDataModule
from datamodules.coseg import CosegDataModule, CosegOptions
from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.nlvr2 import Nlvr2DataModule
from lightning_gpv.tasks.catalogue import Task


def test_nlvr2(nlvr2_root: Path) -> None:
    dm = Nlvr2DataModule(str(nlvr2_root), test_split="test1")
    train = dm.dataset("train")
    s = train[0]
    assert s.task == Task.NLVR2 and s.question == "There are two dogs." and s.target.text == "True"
    assert s.images[0].endswith("images/train/7/train-10-0-img0.png") and s.images[1].endswith("-img1.png")
    assert s.metadata["consistency_key"] == "train-10-0"
    assert train[1].target.text == "False"
    dev = dm.dataset("dev")
    assert [dev[i].sample_id for i in range(2)] == ["nlvr2-dev-850-0-0", "nlvr2-dev-850-1-0"]
    with pytest.raises(UnknownSplitError, match="unknown split 'test3'"):
        dm.dataset("test3")


def test_nlvr2_bad_lines(nlvr2_root: Path) -> None:
    path = nlvr2_root / "data" / "dev.json"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["label"] = "maybe"
    path.write_text(
        "\n".join([json.dumps(bad), lines[1][: len(lines[1]) // 2]]) + "\n"
    )  # bad label; truncated
    with pytest.raises(
        DataFormatError, match=r"dev\.json: field 'line 1\.label': expected 'True' or 'False'"
    ):
        Nlvr2DataModule(str(nlvr2_root)).dataset("dev")
    dm = Nlvr2DataModule(str(nlvr2_root), on_bad_sample="skip")
    assert len(dm.dataset("dev")) == 0 and dm.num_skipped == 2
    (nlvr2_root / "data" / "train.json").unlink()
    with pytest.raises(DataFormatError, match=r"train\.json: annotation file not found"):
        dm.dataset("train")


def test_nlvr2_missing_image(nlvr2_root: Path) -> None:
    (nlvr2_root / "images" / "dev" / "dev-850-1-img1.png").unlink()
    dm = Nlvr2DataModule(str(nlvr2_root))
    with pytest.raises(
        DataFormatError, match=r"dev-850-1-img1\.png: field 'images\[1\]': image file not found"
    ):
        dm.dataset("dev")[1]


def test_shapesworld_nlvr2(shapes_root: Path) -> None:
    dm = Nlvr2DataModule(str(shapes_root / "nlvr2"), test_split="test1")
    for split in ("train", "dev", "test1"):
        ds = dm.dataset(split)
        assert len(ds) > 0
        s = ds[len(ds) - 1]
        assert s.target.text in {"True", "False"} and all(Path(p).is_file() for p in s.images)


@pytest.mark.parametrize("layout", ["pascal", "msrc", "icoseg"])
def test_coseg_layouts(tmp_path: Path, build, layout: str) -> None:  # type: ignore[no-untyped-def]
    root = build.coseg(tmp_path / layout, layout)
    dm = CosegDataModule(str(root), CosegOptions(layout, group_size=2))  # type: ignore[arg-type]
    ds = dm.dataset("all")
    assert len(ds) == 4  # 5 images per class -> groups of 2 and 3
    s = ds[1]
    assert s.task == Task.COSEG and s.num_images == 3 and s.metadata["group"] == "cat"
    assert list(s.target.mask_image) == [0, 1, 2]
    arr = s.target.masks[0].to_array()
    assert arr.shape == s.image_sizes[0] == (22, 24)  # image cat_02
    assert arr[4:12, 3:12].all() and arr.sum() == 72
    whole_classes = CosegDataModule(str(root), CosegOptions(layout, group_size=0))  # type: ignore[arg-type]
    whole = whole_classes.dataset("all")
    assert [whole[i].num_images for i in range(len(whole))] == [5, 5]
    parts = len(whole_classes.dataset("train").records[0].images)
    assert parts >= 2


def test_coseg_bad_input(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    root = build.coseg(tmp_path / "p", "pascal")
    (root / "GT" / "cat" / "cat_00.png").unlink()
    (root / "GT" / "plane" / "plane_01.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"cat_00\.jpg: field 'ground truth': no ground-truth mask"):
        CosegDataModule(str(root)).dataset("all")
    dm = CosegDataModule(str(root), CosegOptions(group_size=2), on_bad_sample="skip")
    ds = dm.dataset("all")
    got = [ds[i] for i in range(len(ds))]
    assert dm.num_skipped == 2  # cat_00 at setup; the plane group holding the corrupt mask in __getitem__
    assert all("plane_01" not in " ".join(s.images) for s in got)
    with pytest.raises(ValueError, match="group_size"):
        CosegOptions(group_size=1)
    with pytest.raises(
        DataFormatError, match=r"ground_truth: ground-truth folder of the icoseg layout not found"
    ):
        CosegDataModule(str(root), CosegOptions("icoseg")).dataset("all")


def test_shapesworld_coseg(shapes_root: Path) -> None:
    ds = CosegDataModule(str(shapes_root / "coseg" / "pascal")).dataset("all")
    assert len(ds) == 12  # one group per shape
    s = ds[0]
    assert all(m.area > 0 for m in s.target.masks) and len(s.target.masks) == s.num_images


def test_attcoseg(attcoseg_root: Path) -> None:
    dm = AttCosegDataModule(str(attcoseg_root))
    s = dm.dataset("train")[0]
    assert s.task == Task.ATTCOSEG and s.num_images == 3 and s.target.selected_images == [0, 2]
    assert list(s.target.mask_image) == [0, 2] and list(s.target.box_image) == [0, 2]
    np.testing.assert_allclose(s.target.boxes, [[10, 5, 20, 15]] * 2)
    assert s.target.masks[0].to_array()[5:15, 10:20].all() and s.metadata["attributes"]["shape"] == "square"
    assert len(dm.dataset("val")) == 1 and len(dm.dataset("test")) == 1


def test_attcoseg_mask_files_and_bad_groups(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    root = build.attcoseg(tmp_path / "a", with_ann_ids=False)
    s = AttCosegDataModule(str(root)).dataset("train")[1]
    assert len(s.target.masks) == 2 and s.target.masks[1].area == 100 and s.target.boxes.shape == (0, 4)
    path = root / "attcoseg_train.json"
    doc = json.loads(path.read_text())
    doc["groups"][0]["positive_indices"] = [0, 7]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"attcoseg_train\.json: field 'groups\[0\]\.positive_indices'"):
        AttCosegDataModule(str(root)).dataset("train")
    dm = AttCosegDataModule(str(root), on_bad_sample="skip")
    assert len(dm.dataset("train")) == 1 and dm.num_skipped == 1
    doc["groups"][0]["positive_indices"] = [0, 1]
    doc["groups"][0]["ann_ids"] = 5  # not a list: a clear error, not a TypeError
    path.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"field 'groups\[0\]\.ann_ids': expected a list of integers"):
        AttCosegDataModule(str(root)).dataset("train")


def test_shapesworld_attcoseg(shapes_root: Path) -> None:
    dm = AttCosegDataModule(str(shapes_root / "attcoseg"))
    ds = dm.dataset("train")
    for i in range(len(ds)):
        s = ds[i]
        assert len(s.target.selected_images) == 2 and len(s.target.masks) == 2
        for m, k in zip(s.target.masks, s.target.mask_image):
            assert (m.height, m.width) == s.image_sizes[k] and m.area > 0
