"""Hugging Face ``datasets`` copies, built locally with ``Dataset.from_dict`` (no hub access)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from datamodules.errors import DataFormatError, UnknownSplitError
from datamodules.hf import HFDataModule, HFOptions
from lightning_gpv.tasks.catalogue import Task


def pil(h: int = 20, w: int = 30) -> Image.Image:
    return Image.fromarray(np.full((h, w, 3), 90, np.uint8))


def vqa_rows() -> dict:  # type: ignore[type-arg]
    answers = [
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
        for i, a in enumerate(["red"] * 7 + ["blue"] * 3)
    ]
    return {
        "question_id": [1, 2],
        "question": ["What color?", "Is it big?"],
        "image_id": [7, 8],
        "image": [pil(), pil(10, 10)],
        "answers": [answers, []],
        "multiple_choice_answer": ["red", None],
        "question_type": ["what color", "is it"],
        "answer_type": ["other", "yes/no"],
    }


def test_vqav2_columns() -> None:
    ds = DatasetDict({"validation": Dataset.from_dict(vqa_rows())})
    dm = HFDataModule(dataset=ds, options=HFOptions("vqav2"))
    data = dm.dataset("validation")
    s = data[0]
    assert s.task == Task.VQA and s.question == "What color?" and s.target.text == "red"
    assert (
        isinstance(s.images[0], np.ndarray)
        and s.images[0].shape == (20, 30, 3)
        and s.image_sizes == [(20, 30)]
    )
    assert len(s.target.answers) == 10 and s.metadata["answer_type"] == "other" and s.sample_id == "vqa-1"
    assert data[1].target.text is None  # test-style row without answers
    train = dm.dataset("validation", train=True)
    assert {train[0].target.text for _ in range(20)} <= {"red", "blue"}
    with pytest.raises(UnknownSplitError, match="validation"):
        dm.dataset("train")


def test_coco_caption_columns() -> None:
    rows = {"question_id": ["a", "b"], "image": [pil(), pil()], "answer": [["A cat.", "A pet."], ["A dog."]],
            "file_name": ["x.jpg", "y.jpg"], "height": [20, 20], "width": [30, 30]}  # fmt: skip
    dm = HFDataModule(
        dataset=Dataset.from_dict(rows), options=HFOptions("coco_caption"), train_split="all", val_split="all"
    )
    evals = dm.dataset("all", train=False)
    assert len(evals) == 2 and evals[0].target.answers == ["A cat.", "A pet."]
    train = dm.dataset("all", train=True)  # one sample per caption
    assert [train[i].target.text for i in range(len(train))] == ["A cat.", "A pet.", "A dog."]


def test_refcoco_lmms_columns() -> None:
    rows = {"question_id": ["q1"], "image": [pil(40, 60)], "question": ["Describe the region."],
            "answer": [["left man", "man on left"]], "bbox": [[2.0, 3.0, 10.0, 20.0]],
            "segmentation": [[2.0, 3.0, 12.0, 3.0, 12.0, 23.0, 2.0, 23.0]], "iscrowd": [0],
            "file_name": ["COCO_train2014_000000000001_11.jpg"]}  # fmt: skip
    dm = HFDataModule(
        dataset=Dataset.from_dict(rows),
        options=HFOptions("refcoco_lmms", tasks=("rec", "res", "reg")),
        val_split="all",
    )
    ds = dm.dataset("all")
    got = [ds[i] for i in range(len(ds))]
    assert [s.task for s in got] == [Task.REC, Task.REC, Task.RES, Task.RES, Task.REG]
    np.testing.assert_allclose(got[0].target.boxes, [[2, 3, 12, 23]])
    assert got[1].expression == "man on left" and got[2].target.masks[0].area == 200
    assert got[4].target.answers == ["left man", "man on left"]


def test_refcoco_jxu124_columns(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    build.image(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000001.jpg", 40, 60, fmt="JPEG")
    ann = {"id": 11, "image_id": 1, "bbox": [2, 3, 10, 20], "segmentation": [[2, 3, 12, 3, 12, 23, 2, 23]]}
    info = {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 40, "width": 60}
    rows = {"ref_id": [5], "ann_id": [11], "image_id": [1], "split": ["train"],
            "sentences": [[{"raw": "Left man", "sent": "left man", "sent_id": 9, "tokens": ["left", "man"]}]],
            "raw_anns": [json.dumps(ann)], "raw_image_info": [json.dumps(info)],
            "image_path": ["coco/train2014/COCO_train2014_000000000001.jpg"]}  # fmt: skip
    options = HFOptions("refcoco_jxu124", tasks=("res",), image_root=str(tmp_path))
    data = DatasetDict({"train": Dataset.from_dict(rows)})
    dm = HFDataModule(dataset=data, options=options, train_split="train", val_split=None)
    (s,) = [dm.dataset("train")[0]]
    assert s.task == Task.RES and s.expression == "left man" and s.image_sizes == [(40, 60)]
    assert Path(s.images[0]).is_file() and s.target.masks[0].area == 200


def test_nlvr2_columns_and_disk_round_trip(tmp_path: Path) -> None:
    buf = io.BytesIO()
    pil().save(buf, format="PNG")
    rows = {"identifier": ["dev-1-0-0"], "sentence": ["Two dogs."], "label": ["True"],
            "left_image": [{"bytes": buf.getvalue(), "path": None}], "right_image": [pil(5, 5)]}  # fmt: skip
    path = tmp_path / "nlvr2_hf"
    DatasetDict({"validation": Dataset.from_dict(rows)}).save_to_disk(str(path))
    dm = HFDataModule(str(path), HFOptions("nlvr2"))
    ds = dm.dataset("validation")
    assert ds.reader._data is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.reader._data is None  # pickles small; reloads the memory-mapped table in the worker
    s = clone[0]
    assert (
        s.task == Task.NLVR2
        and s.target.text == "True"
        and [i.shape for i in s.images] == [(20, 30, 3), (5, 5, 3)]
    )


def test_missing_column_and_folder(tmp_path: Path) -> None:
    ds = Dataset.from_dict({"question": ["Why?"], "image": [pil()]})
    with pytest.raises(DataFormatError, match="column 'question_id'.*missing column"):
        HFDataModule(dataset=ds, options=HFOptions("vqav2"), val_split="all").dataset("all")
    with pytest.raises(DataFormatError, match="dataset folder not found"):
        HFDataModule(str(tmp_path / "nope"), HFOptions("vqav2")).dataset("validation")
    with pytest.raises(ValueError, match="format"):
        HFOptions("coco")  # type: ignore[arg-type]
    rows = {
        "identifier": ["dev-1-0-0"],
        "sentence": ["x"],
        "label": ["perhaps"],
        "left_image": [pil()],
        "right_image": [pil()],
    }
    dm = HFDataModule(dataset=Dataset.from_dict(rows), options=HFOptions("nlvr2"), val_split="all")
    with pytest.raises(DataFormatError, match=r"field 'all\[0\]\.label': expected 'True' or 'False'"):
        dm.dataset("all")[0]
    skip = HFDataModule(
        dataset=Dataset.from_dict(rows), options=HFOptions("nlvr2"), val_split="all", on_bad_sample="skip"
    )
    with pytest.raises(DataFormatError, match="every one of the 1 samples is unreadable"):
        skip.dataset("all")[0]
    assert skip.num_skipped == 1


@pytest.mark.parametrize(
    ("segmentation", "bbox"),
    [
        ([2.0, 3.0, 2.0, 3.0, 2.0, 3.0], [2.0, 3.0, 10.0, 20.0]),  # a polygon of one point: no mask
        ([2.0, 3.0, 12.0, 3.0, 12.0, 23.0, 2.0, 23.0], [2.0, 3.0, float("nan"), 20.0]),
    ],
)
def test_refcoco_lmms_bad_masks_and_boxes_are_named(segmentation: list, bbox: list) -> None:
    rows = {"question_id": ["q1"], "image": [pil(40, 60)], "question": ["Describe the region."],
            "answer": [["left man"]], "bbox": [bbox], "segmentation": [segmentation], "iscrowd": [0],
            "file_name": ["COCO_train2014_000000000001_11.jpg"]}  # fmt: skip
    options = HFOptions("refcoco_lmms", tasks=("res",))
    ds = HFDataModule(dataset=Dataset.from_dict(rows), options=options, val_split="all").dataset("all")
    with pytest.raises(DataFormatError, match=r"\[0\]\.(segmentation|bbox)"):
        ds[0]
