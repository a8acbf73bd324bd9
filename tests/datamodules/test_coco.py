"""COCO captioning / localization / classification: GPV-1 sample construction, COCO-SCE and bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datamodules.coco import CocoDataModule, CocoOptions, CocoSceDataModule
from datamodules.concepts import tokenize
from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.sce import HELD_FROM_CLS_LOC, HELD_FROM_VQA_CAP, SceOptions
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import TaskSample


def samples(dm: CocoDataModule, split: str) -> list[TaskSample]:
    ds = dm.dataset(split)
    return [ds[i] for i in range(len(ds))]


def test_gpv1_sample_construction(coco_root: Path) -> None:
    dm = CocoDataModule(str(coco_root))
    got = samples(dm, "train2014")
    by_task = Counter(s.task for s in got)
    # 5 captions; image x category pairs: (1, person), (1, horse), (2, dog), (2, banana), (3, bench)
    assert by_task == {Task.CAPTIONING: 5, Task.LOCALIZATION: 5, Task.CLASSIFICATION: 5}
    loc = {s.sample_id: s for s in got if s.task == Task.LOCALIZATION}
    people = loc["loc-1-1"]
    assert people.category == "person" and people.image_sizes == [(40, 60)]
    # all three instances, in annotation id order (100, 101, 102), xywh -> xyxy
    np.testing.assert_allclose(people.target.boxes, [[40, 10, 50, 20], [2, 3, 12, 23], [20, 5, 28, 17]])
    assert people.metadata["ann_ids"] == [100, 101, 102]
    cls = {s.sample_id: s for s in got if s.task == Task.CLASSIFICATION}
    crop = cls["cls-100"]  # the smallest instance id of (image 1, person)
    assert crop.target.text == "person" and crop.target.answers == ["person"]
    np.testing.assert_allclose(crop.metadata["instance_box"], [40, 10, 50, 20])
    np.testing.assert_allclose(crop.region, [38, 8, 52, 22])  # grown by 20% of w and h per side
    caps = [s for s in got if s.task == Task.CAPTIONING and s.image_ids == [1]]
    assert {s.target.text for s in caps} == {"Three people stand near a horse.", "A group of people outside."}
    assert all(len(s.target.answers) == 2 for s in caps)
    assert all(Path(s.images[0]).is_file() for s in got)
    ds = dm.dataset("train2014")
    k = [s.sample_id for s in got].index("loc-1-1")
    ds[k].target.boxes *= 0  # a processor scaling boxes in place must not change the records
    np.testing.assert_allclose(ds[k].target.boxes, people.target.boxes)


def test_crowd_caption_unit_and_test_split(coco_root: Path) -> None:
    with_crowd = CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",)))
    assert "loc-3-15" in {s.sample_id for s in samples(with_crowd, "train2014")}
    no_crowd = CocoDataModule(str(coco_root), CocoOptions(("localization",), include_crowd=False))
    assert "loc-3-15" not in {s.sample_id for s in samples(no_crowd, "train2014")}
    per_image = CocoDataModule(str(coco_root), CocoOptions(("captioning",), caption_unit="image"))
    caps = samples(per_image, "val2014")
    assert len(caps) == 2 and sorted(len(s.target.answers) for s in caps) == [1, 2]
    test = CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",)), test_split="test2014")
    (only,) = samples(test, "test2014")
    assert only.target.text is None and only.image_sizes == [(20, 20)]


def test_sce_drops_held_out_concepts_in_train_and_tags_test(coco_root: Path) -> None:
    dm = CocoSceDataModule(
        str(coco_root), sce=SceOptions(val_fraction=0.01)
    )  # keeps all 3 train images in train
    train = samples(dm, "train")
    texts = [s.target.text for s in train if s.task == Task.CAPTIONING]
    assert "Three people stand near a horse." not in texts  # horse is held out from captioning
    assert "An empty bench in the park." not in texts and "A group of people outside." in texts
    cats = {s.category for s in train if s.task == Task.LOCALIZATION}
    assert "banana" not in cats and "horse" in cats  # banana is held out from localization only
    assert all(s.metadata["sce"] == "seen" for s in train)
    test = samples(dm, "test")
    assert len(test) == len(samples(CocoDataModule(str(coco_root)), "val2014"))
    tags = {s.sample_id: s.metadata for s in test}
    assert tags["loc-10-52"]["sce"] == "unseen" and tags["loc-10-52"]["coco_categories"]["unseen"] == [
        "banana"
    ]
    assert tags["loc-10-19"]["sce"] == "seen"
    assert tags["cap-6"]["coco_categories"] == {"seen": ["banana"], "unseen": ["horse"]}


def test_sce_image_partition_file(coco_root: Path, tmp_path: Path) -> None:
    split = tmp_path / "split_images.json"
    split.write_text(json.dumps({"train": [1, 2], "val": [3]}))
    dm = CocoSceDataModule(
        str(coco_root), CocoOptions(tasks=("localization",)), SceOptions(image_split=str(split))
    )
    assert {s.image_ids[0] for s in samples(dm, "train")} == {1, 2}
    assert {s.image_ids[0] for s in samples(dm, "val")} == {3}


def test_unknown_split_and_missing_files(coco_root: Path) -> None:
    dm = CocoDataModule(str(coco_root))
    with pytest.raises(UnknownSplitError, match="unknown split 'train2019'.*train2014"):
        dm.dataset("train2019")
    with pytest.raises(UnknownSplitError):
        CocoSceDataModule(str(coco_root)).dataset("train2014")
    (coco_root / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(DataFormatError, match=r"instances_val2014\.json: annotation file not found"):
        dm.dataset("val2014")


def test_truncated_and_malformed_annotation_files(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    dm = CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",)), on_bad_sample="skip")
    with pytest.raises(
        DataFormatError, match=r"instances_train2014\.json: malformed or truncated JSON at line 1"
    ):
        dm.dataset("train2014")  # a file that cannot be parsed raises even when skipping
    path.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="top level must be an object"):
        CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",))).dataset("train2014")


def test_captions_file_without_annotations_raises(coco_root: Path) -> None:
    path = coco_root / "annotations" / "captions_train2014.json"
    data = json.loads(path.read_text())
    del data["annotations"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataFormatError, match=r"captions_train2014\.json: field 'annotations': missing field"
    ):
        CocoDataModule(str(coco_root), CocoOptions(tasks=("captioning",))).dataset("train2014")


def test_missing_and_bad_fields_raise_or_skip(coco_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    del data["annotations"][3]["bbox"]
    data["annotations"][4]["bbox"] = [1, 2, 3]
    del data["images"][2]["height"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataFormatError, match=r"instances_train2014\.json: field 'images\[2\]\.height': missing field"
    ):
        CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",))).dataset("train2014")
    with caplog.at_level("WARNING", logger="datamodules"):
        dm = CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",)), on_bad_sample="skip")
        got = samples(dm, "train2014")
    assert dm.num_skipped == 3  # image 3, annotations[3] (no bbox), annotations[4] (3 numbers)
    assert {s.sample_id for s in got} == {"loc-1-1", "loc-2-52"}
    assert len([r for r in caplog.records if "skipping bad sample" in r.message]) == 1
    del data["images"][2]  # image 3 gone: the first error is now annotations[3]'s bbox
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"field 'annotations\[3\]\.bbox': missing field"):
        CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",))).dataset("train2014")
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 3 and "bbox" in a]
    data["annotations"][3]["bbox"] = [1, 1, 20, 20]
    data["annotations"][0]["image_id"] = 77
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"field 'annotations\[0\]\.image_id': unknown image id 77"):
        CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",))).dataset("train2014")


def test_nothing_written_to_data_folder(coco_root: Path, build) -> None:  # type: ignore[no-untyped-def]
    before = build.snapshot(coco_root)
    dm = CocoDataModule(str(coco_root), num_workers=0)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        assert batch
    assert build.snapshot(coco_root) == before


def test_shapesworld_coco(shapes_root: Path) -> None:
    dm = CocoDataModule(str(shapes_root / "coco"))
    got = samples(dm, "train2014")
    assert {s.task for s in got} == {Task.CAPTIONING, Task.LOCALIZATION, Task.CLASSIFICATION}
    for s in got:
        h, w = s.image_sizes[0]
        boxes = s.target.boxes if s.task != Task.CLASSIFICATION else s.region[None]
        assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all() and (boxes >= 0).all()
    loc = next(s for s in got if s.task == Task.LOCALIZATION)
    from PIL import Image

    with Image.open(loc.images[0]) as img:
        assert (img.height, img.width) == loc.image_sizes[0]


def test_shapesworld_coco_sce(shapes_root: Path) -> None:
    sce = shapes_root / "coco_sce"
    definition = json.loads((sce / "split_categories.json").read_text())
    dm = CocoSceDataModule(
        str(shapes_root / "coco"),
        sce=SceOptions(str(sce / "split_categories.json"), str(sce / "split_images.json")),
    )
    vc, cl = set(definition["held_out_vqa_cap"]), set(definition["held_out_cls_loc"])
    train = samples(dm, "train") + samples(dm, "val")
    assert not {s.category for s in train if s.task == Task.LOCALIZATION} & cl
    words = {w for s in train if s.task == Task.CAPTIONING for w in tokenize(s.target.text)}
    assert not words & vc
    test = samples(dm, "test")
    assert {s.metadata["sce"] for s in test} == {"seen", "unseen"}
    assert not set(HELD_FROM_VQA_CAP) & vc and not set(HELD_FROM_CLS_LOC) & cl  # not the COCO lists


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_captions_never_give_an_empty_target(coco_root: Path) -> None:
    path = coco_root / "annotations" / "captions_train2014.json"
    _edit(path, lambda d: d["annotations"][0].update(caption="   "))
    opts = CocoOptions(tasks=("captioning",))
    with pytest.raises(
        DataFormatError, match=r"captions_train2014\.json: field 'annotations\[0\]\.caption': empty"
    ):
        CocoDataModule(str(coco_root), opts).dataset("train2014")
    dm = CocoDataModule(str(coco_root), opts, on_bad_sample="skip")
    texts = [s.target.text for s in samples(dm, "train2014")]
    assert len(texts) == 4 and all(t.strip() for t in texts) and dm.num_skipped == 1
    # An image of a captions file without any caption would be a sample without a target.
    _edit(
        path,
        lambda d: d.update(
            annotations=[
                dict(a, caption="x") if a["id"] == 1 else a for a in d["annotations"] if a["image_id"] != 3
            ]
        ),
    )
    with pytest.raises(
        DataFormatError, match="captions_train2014.json: field 'annotations': no caption of image id 3"
    ):
        CocoDataModule(str(coco_root), opts).dataset("train2014")
    dm = CocoDataModule(str(coco_root), opts, on_bad_sample="skip")
    assert {s.image_ids[0] for s in samples(dm, "train2014")} == {1, 2} and dm.num_skipped == 1
    _edit(path, lambda d: d["annotations"].append(dict(d["annotations"][1], caption="again")))
    with pytest.raises(DataFormatError, match=r"'annotations\[3\]\.id': duplicate caption id 2"):
        CocoDataModule(str(coco_root), opts).dataset("train2014")


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([2, 3, 0, 20], r"w, h > 0"),
        ([2, 3, float("nan"), 20], r"finite"),
        ([2, 3, 10, 1e300], r"finite"),  # beyond float32
        ([2, 3, 10, 2**70], r"outside the 60x40"),
        ([2, 3, 10**400, 20], r"expected 4 numbers"),
        ([2, 3, 10, "20"], r"expected 4 numbers"),
        ([55, 3, 10, 20], r"outside the 60x40 \(WxH\) image"),
        ([-10, 3, 5, 20], r"outside the 60x40 \(WxH\) image"),
    ],
)
def test_localization_boxes_are_checked_against_the_image(coco_root: Path, bbox: list, message: str) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    _edit(path, lambda d: d["annotations"][1].update(bbox=bbox))  # annotation 102 of image 1 (40x60)
    opts = CocoOptions(tasks=("localization",))
    with pytest.raises(DataFormatError, match=rf"field 'annotations\[1\]\.bbox': .*{message}"):
        CocoDataModule(str(coco_root), opts).dataset("train2014")
    dm = CocoDataModule(str(coco_root), opts, on_bad_sample="skip")
    people = next(s for s in samples(dm, "train2014") if s.sample_id == "loc-1-1")
    assert people.metadata["ann_ids"] == [100, 101] and dm.num_skipped == 1


def test_small_overshoot_is_clipped_and_ids_are_unique(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    _edit(path, lambda d: d["annotations"][1].update(bbox=[50, 30, 11, 11.5]))  # 1 px past W = 60, H = 40
    loc = {s.sample_id: s for s in samples(CocoDataModule(str(coco_root)), "train2014")}
    np.testing.assert_allclose(loc["loc-1-1"].target.boxes[2], [50, 30, 60, 40])
    _edit(path, lambda d: d["annotations"].append(dict(d["annotations"][0], bbox=[1, 1, 5, 5])))
    with pytest.raises(DataFormatError, match=r"'annotations\[7\]\.id': duplicate annotation id 101"):
        CocoDataModule(str(coco_root), CocoOptions(tasks=("localization",))).dataset("train2014")
    _edit(path, lambda d: (d["annotations"].pop(), d["categories"][1].update(name=" ")))
    with pytest.raises(DataFormatError, match=r"'categories\[1\]\.name': empty category name"):
        CocoDataModule(str(coco_root)).dataset("train2014")
    dm = CocoDataModule(str(coco_root), CocoOptions(tasks=("classification",)), on_bad_sample="skip")
    assert "horse" not in {s.target.text for s in samples(dm, "train2014")} and dm.num_skipped == 1


def test_images_need_a_usable_size_and_a_unique_id(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    opts = CocoOptions(tasks=("localization",))
    _edit(path, lambda d: d["images"][0].update(height=70000))
    with pytest.raises(DataFormatError, match=r"'images\[0\]\.height': image height must be in 1\.\.65535"):
        CocoDataModule(str(coco_root), opts).dataset("train2014")
    _edit(path, lambda d: (d["images"][0].update(height=40), d["images"].append(dict(d["images"][1]))))
    with pytest.raises(DataFormatError, match=r"'images\[3\]\.id': duplicate image id 2"):
        CocoDataModule(str(coco_root), opts).dataset("train2014")
    dm = CocoDataModule(str(coco_root), opts, on_bad_sample="skip")
    assert len(samples(dm, "train2014")) == 5 and dm.num_skipped == 1  # the first entry of image 2 stands


def test_no_usable_instance_gives_no_sample(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    _edit(path, lambda d: d.update(annotations=[]))
    assert (
        samples(CocoDataModule(str(coco_root), CocoOptions(("localization", "classification"))), "train2014")
        == []
    )
