"""Fuzzing the annotation readers: damaged files give a DataFormatError or valid samples, nothing else.

Each test starts from the small valid file set of ``conftest.py`` (COCO instances and captions, VQAv2
questions and annotations, RefCOCO ``refs(unc).p`` + ``instances.json``, gRefCOCO ``grefs(unc).json`` +
``instances.json``), applies 1-3 random mutations (delete a key or item, replace a value by ``None``, NaN,
a negative, huge or ill-typed one, scale a number, truncate a list, repeat an item or a record, point an id
elsewhere, break a polygon, an RLE or a box, blank a text, cut the file's text) and reads every split, in
training and evaluation mode, through the data module, with ``on_bad_sample`` ``"raise"`` and ``"skip"``.
Then either

* a :class:`DataFormatError` naming a file came out (with ``"skip"``, only for damage to the file as a
  whole: its text, its top-level fields or the split), or
* every sample the module yields is valid: built without error, a non-empty target of the kind its task needs
  (text, boxes inside the image, masks of the image's size covering pixels; an empty target only for
  gRefCOCO's no-target expressions), and sample ids unique.

Any other exception fails the test. The runs are derandomized (the same examples every time) and keep no
example database; ``READER_FUZZ_EXAMPLES=2000`` runs more examples per reader (300 by default).
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as coco_mask

from datamodules.base import TaskDataModule
from datamodules.coco import CocoDataModule
from datamodules.errors import DataFormatError
from datamodules.grefcoco import GRefCocoDataModule, GRefCocoOptions
from datamodules.io import checked_segmentation
from datamodules.refcoco import RefCocoDataModule, RefCocoOptions
from datamodules.safe_pickle import safe_load_pickle
from datamodules.vqav2 import VQAv2DataModule
from lightning_gpv.geometry.masks import Mask
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import TaskSample

FUZZ = settings(
    max_examples=int(os.environ.get("READER_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    # ``build`` only holds the fixture writers and ``tmp_path`` the pristine files; each example writes its
    # own folder, so nothing carries over between examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OPERATIONS = [
    *["delete", "replace", "scale", "truncate", "duplicate", "foreign"] * 2,
    "cut",
    *["break_mask"] * 4,
    *["break_box", "blank_text", "repeat_record"] * 2,
]
"""Mutations: generic ones on any node; ``cut`` (the file's text: fatal for the whole file) less often;
``break_mask``, ``break_box``, ``blank_text`` and ``repeat_record`` aim at a ``segmentation``, a ``bbox``, a
text or a list of records (ids then repeat), which random paths rarely hit."""

WEIRD_VALUES: list[Any] = [
    None,
    math.nan,
    math.inf,
    -math.inf,
    -1,
    0,
    1,
    -7.5,
    0.3,
    10**6,
    2**70,
    10**400,
    1e300,
    True,
    "",
    "   ",
    "x",
    "12",
    "!!garbage",
    [],
    [0],
    [1, 2, 3],
    {},
    {"counts": "!!garbage", "size": [40, 60]},
]

TEXT_FIELDS = {"caption", "question", "multiple_choice_answer", "answer", "sent", "raw", "name", "file_name"}
"""Strings that become a target, a prompt or a path: ``blank_text`` empties one of them."""

BROKEN_MASKS: list[Any] = [
    [],
    [[]],
    [[1, 2, 3]],  # odd length
    [[2, 3, 12, 3]],  # 2 points (pycocotools would read it as a box)
    [[2, 3, 2, 3, 2, 3, 2, 3]],  # one distinct point
    [[2, 3, 12, 3, 22, 3]],  # collinear
    [[2.1, 3.1, 2.4, 3.1, 2.2, 3.4]],  # a sliver between pixel centres: no pixel
    [[2, 3, 12, 3, math.nan, 23]],
    [[2, 3, 12, 3, 12, 1e6]],  # far outside
    [[2, 3, 12, 3, 12, 23], [2, 3]],  # a degenerate extra part (dropped)
    [[-1, -1, 70, -1, 70, 60, -1, 60]],  # just past every border (clipped)
    [["2", 3, 12, 3, 12, 23]],
    {"counts": "!!garbage", "size": [40, 60]},
    {"counts": "0", "size": [40, 60]},
    {"counts": "", "size": [40, 60]},
    {"counts": "0o", "size": [40, 60]},  # cut inside a run
    {"counts": [2400], "size": [40, 60]},  # no foreground
    {"counts": [0, 2400], "size": [60, 40]},  # size of another image
    {"counts": [0, 2400], "size": [40, 60]},  # all foreground (valid where the image is 40x60)
    {"counts": [-5, 2405], "size": [40, 60]},
    {"counts": [0, 2400]},
    {"size": [40, 60]},
]

BROKEN_BOXES: list[Any] = [
    [2, 3, 0, 20],
    [2, 3, -5, 20],
    [2, 3, 10, math.nan],
    [2, 3, 10, 1e300],
    [1000, 3, 10, 20],
    [-20, -20, 10, 10],
    [-1, -1, 200, 200],
    [59, 39, 1.5, 1.5],  # a small overshoot of a 40x60 image (clipped)
    [0, 0, 1e-4, 1e-4],
    [2, 3, 10],
    [2, 3, 10, "20"],
]


# -- the files and their mutation ----------------------------------------------------------------------------


class FileSet:
    """Annotation files of one data set: ``{relative path: (kind, content)}``, kind ``json`` or ``pickle``."""

    def __init__(self, files: dict[str, tuple[str, Any]], folders: list[str]) -> None:
        self.files = files
        self.folders = folders  # image folders the readers look for (no image is read)
        self.cut: dict[str, int] = {}  # file -> keep this many bytes of its text

    def copy(self) -> FileSet:
        return FileSet({k: (kind, copy.deepcopy(v)) for k, (kind, v) in self.files.items()}, self.folders)

    def write(self, root: Path) -> None:
        for rel, (kind, content) in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps(content).encode() if kind == "json" else pickle.dumps(content, protocol=2)
            if rel in self.cut:
                data = data[: self.cut[rel] % max(len(data), 1)]
            path.write_bytes(data)
        for folder in self.folders:
            (root / folder).mkdir(parents=True, exist_ok=True)


def _nodes(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths (key and index sequences) of every node of a JSON-like tree, the root included."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _nodes(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _nodes(v, (*prefix, i))
    return out


def _ints(obj: Any) -> list[int]:
    return [v for v in (_get(obj, p) for p in _nodes(obj)) if type(v) is int]


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _records(value: Any) -> bool:
    """Whether ``value`` is a non-empty list of JSON objects (images, annotations, refs, sentences, ...)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _pick(data: st.DataObject, items: list[Any], label: str) -> Any:
    """One of ``items``, drawn uniformly and noted for the failure report (``sampled_from`` favours the first
    items: the last annotations of a file, and their masks, would hardly ever be touched)."""
    rnd = data.draw(st.randoms(use_true_random=False), label=label)
    item = items[rnd.randrange(len(items))]
    note(f"{label}: {item!r:.120}")
    return item


def _mutate(files: FileSet, data: st.DataObject) -> None:
    """Apply one random mutation to one file of ``files`` (in place)."""
    rel = data.draw(st.sampled_from(sorted(files.files)), label="file")
    kind, content = files.files[rel]
    op = data.draw(st.sampled_from(OPERATIONS), label="op")
    if op == "cut":
        files.cut[rel] = data.draw(st.integers(0, 10**6), label="cut at")
        return
    if op == "repeat_record":
        lists = [p for p in _nodes(content) if _records(_get(content, p))]
        if lists:
            records = _get(content, _pick(data, lists, "records"))
            at = data.draw(st.integers(0, len(records)), label="at")
            records.insert(at, copy.deepcopy(_pick(data, records, "record")))
            return
    if op in ("break_mask", "break_box", "blank_text"):
        if op == "blank_text":
            targets = [p for p in _nodes(content) if p and p[-1] in TEXT_FIELDS]
            values: list[Any] = ["", "   ", "\t\n"]
        else:
            key, values = ("segmentation", BROKEN_MASKS) if op == "break_mask" else ("bbox", BROKEN_BOXES)
            targets = [p for p in _nodes(content) if p and p[-1] == key]
        if targets:
            path = _pick(data, targets, "path")
            value = copy.deepcopy(_pick(data, values, "value"))
            _get(content, path[:-1])[path[-1]] = value
            return
    path = _pick(data, _nodes(content), "path")
    if not path:  # the root: replace the whole document
        files.files[rel] = (kind, copy.deepcopy(_pick(data, WEIRD_VALUES, "value")))
        return
    parent, key = _get(content, path[:-1]), path[-1]
    value = parent[key]
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = copy.deepcopy(_pick(data, WEIRD_VALUES, "value"))
    elif op == "scale" and type(value) in (int, float) and abs(value) < 1e300:
        factor = data.draw(st.sampled_from([-1, 0, 0.5, 1000, 1e-3]), label="factor")
        offset = data.draw(st.sampled_from([0, 0.4, -3, 50, 1000]), label="offset")
        parent[key] = value * factor + offset
    elif op == "truncate" and isinstance(value, list):
        parent[key] = value[: data.draw(st.integers(0, max(len(value) - 1, 0)), label="keep")]
    elif op == "duplicate" and isinstance(value, list) and value:
        j = data.draw(st.integers(0, len(value) - 1), label="item")
        value.insert(data.draw(st.integers(0, len(value)), label="at"), copy.deepcopy(value[j]))
    elif op == "foreign" and type(value) is int:  # another id of the file, or a dangling one
        parent[key] = _pick(data, [*_ints(content), 987654], "id")
    else:  # the operation does not apply to this node: replace it instead
        parent[key] = copy.deepcopy(_pick(data, WEIRD_VALUES, "value"))


# -- what a valid sample is ----------------------------------------------------------------------------------


def _check_boxes_inside(boxes: np.ndarray, hw: tuple[int, int]) -> None:
    h, w = hw
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and np.isfinite(boxes).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all(), boxes
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all(), (boxes, hw)
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all(), boxes


def _check_text(text: Any) -> None:
    assert isinstance(text, str) and text.strip(), f"empty target text {text!r}"


def check_sample(s: TaskSample) -> None:
    """Assert that ``s`` has a non-empty target of the kind its task needs (see the module docstring)."""
    t = s.target
    hw = s.image_sizes[0] if s.image_sizes else None
    if hw is not None:
        assert all(isinstance(v, int) and v > 0 for v in hw)
    if s.task in (Task.CAPTIONING, Task.CLASSIFICATION, Task.VQA, Task.REG):
        _check_text(t.text)
        assert t.answers and all(isinstance(a, str) for a in t.answers)
    if s.task == Task.CAPTIONING:
        assert all(a.strip() for a in t.answers)
    if s.task in (Task.CLASSIFICATION, Task.REG):
        _check_boxes_inside(s.region[None], hw)
    if s.task == Task.VQA:
        _check_text(s.question)
    if s.task == Task.LOCALIZATION:
        _check_text(s.category)
        assert len(t.boxes) >= 1
        _check_boxes_inside(t.boxes, hw)
    if s.task in (Task.REC, Task.RES, Task.GREC, Task.GRES):
        _check_text(s.expression)
        _check_boxes_inside(t.boxes, hw)
    if s.task in (Task.REC, Task.RES):
        assert len(t.boxes) == 1
    if s.task in (Task.GREC, Task.GRES):
        assert s.metadata["no_target"] == (len(t.boxes) == 0)  # the only legitimately empty target
    if s.task in (Task.RES, Task.GRES):
        assert len(t.masks) == len(t.boxes) and (len(t.masks) == 1 or s.task == Task.GRES)
        for m in t.masks:
            assert (m.height, m.width) == hw
            assert m.area > 0, "empty mask"
            if hw[0] * hw[1] <= 10**7:  # decode only what fits in memory easily (sizes go up to 65535)
                assert m.to_array().shape == hw


def read_all(dm: TaskDataModule, splits: tuple[str, ...]) -> None:
    """Read every split of ``dm`` in training and evaluation mode and check its samples; a DataFormatError
    must name a file."""
    for split, train in ((split, train) for split in splits for train in (True, False)):
        try:
            ds = dm.dataset(split, train)
        except DataFormatError as err:
            event(f"{dm.on_bad_sample}: DataFormatError")
            assert err.path, f"no file named: {err}"
            if dm.on_bad_sample == "skip":  # only damage to a whole file may stop a skipping reader
                assert err.field is None or "[" not in err.field, f"record error not skipped: {err}"
            continue
        event(f"{dm.on_bad_sample}: {'samples' if len(ds) else 'no sample'}")
        ids = set()
        for i in range(len(ds)):
            s = ds.sample(i)  # built without the skip wrapper: reading must have caught every bad record
            check_sample(s)
            assert s.sample_id not in ids, f"repeated sample id {s.sample_id}"
            ids.add(s.sample_id)


def fuzz(
    files: FileSet,
    data: st.DataObject,
    workdir: Path,
    make: Callable[[Path, str], TaskDataModule],
    splits: tuple[str, ...],
) -> None:
    """Mutate a copy of ``files``, write it to a new folder and read ``splits`` of ``make(folder, mode)``."""
    files = files.copy()
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        _mutate(files, data)
    root = Path(tempfile.mkdtemp(dir=workdir))
    files.write(root)
    for mode in ("raise", "skip"):
        read_all(make(root, mode), splits)


# -- the four readers ----------------------------------------------------------------------------------------


def _load(root: Path, rel: str) -> tuple[str, Any]:
    path = root / rel
    if path.suffix == ".p":
        return "pickle", safe_load_pickle(path)
    return "json", json.loads(path.read_text())


@pytest.fixture
def coco_files(tmp_path: Path, build: SimpleNamespace) -> FileSet:
    root = build.coco(tmp_path / "base", images=False)
    rels = ["annotations/instances_train2014.json", "annotations/captions_train2014.json"]
    return FileSet({rel: _load(root, rel) for rel in rels}, ["train2014"])


@given(data=st.data())
@FUZZ
def test_fuzz_coco(coco_files: FileSet, tmp_path: Path, data: st.DataObject) -> None:
    def make(root: Path, mode: str) -> TaskDataModule:
        return CocoDataModule(str(root), on_bad_sample=mode, verify_images=False)  # type: ignore[arg-type]

    fuzz(coco_files, data, tmp_path, make, ("train2014",))


@pytest.fixture
def vqa_files(tmp_path: Path, build: SimpleNamespace) -> FileSet:
    root = build.vqa(tmp_path / "base", images=False)
    rels = ["v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json"]
    return FileSet({rel: _load(root, rel) for rel in rels}, ["images/train2014"])


@given(data=st.data())
@FUZZ
def test_fuzz_vqav2(vqa_files: FileSet, tmp_path: Path, data: st.DataObject) -> None:
    def make(root: Path, mode: str) -> TaskDataModule:
        return VQAv2DataModule(str(root), on_bad_sample=mode, verify_images=False)  # type: ignore[arg-type]

    fuzz(vqa_files, data, tmp_path, make, ("train2014",))


@pytest.fixture
def refcoco_files(tmp_path: Path, build: SimpleNamespace) -> FileSet:
    root = build.refcoco(tmp_path / "base", images=False)
    rels = ["refcoco/instances.json", "refcoco/refs(unc).p"]
    return FileSet({rel: _load(root, rel) for rel in rels}, ["images/train2014"])


@given(data=st.data())
@FUZZ
def test_fuzz_refcoco(refcoco_files: FileSet, tmp_path: Path, data: st.DataObject) -> None:
    def make(root: Path, mode: str) -> TaskDataModule:
        options = RefCocoOptions(tasks=("rec", "res", "reg"))
        return RefCocoDataModule(str(root), options, on_bad_sample=mode, verify_images=False)  # type: ignore[arg-type]

    fuzz(refcoco_files, data, tmp_path, make, ("train", "val", "testA", "testB"))


@pytest.fixture
def grefcoco_files(tmp_path: Path, build: SimpleNamespace) -> FileSet:
    build.grefcoco(tmp_path / "base", images=False)
    root = tmp_path / "base"
    rels = ["grefcoco/instances.json", "grefcoco/grefs(unc).json"]
    return FileSet({rel: _load(root, rel) for rel in rels}, ["images/train2014"])


@given(data=st.data())
@FUZZ
def test_fuzz_grefcoco(grefcoco_files: FileSet, tmp_path: Path, data: st.DataObject) -> None:
    def make(root: Path, mode: str) -> TaskDataModule:
        options = GRefCocoOptions(tasks=("grec", "gres"))
        folder = str(root / "grefcoco")
        return GRefCocoDataModule(folder, options, on_bad_sample=mode, verify_images=False)  # type: ignore[arg-type]

    fuzz(grefcoco_files, data, tmp_path, make, ("train", "val", "testA"))


def test_pristine_files_are_valid(
    coco_files: FileSet, vqa_files: FileSet, refcoco_files: FileSet, grefcoco_files: FileSet, tmp_path: Path
) -> None:
    """The fuzzers' starting points read without error and yield samples of every task (so a fuzz run that
    only ever sees errors cannot pass for a reader that rejects everything)."""
    got: dict[Task, int] = {}
    makers = [
        (coco_files, lambda r: CocoDataModule(str(r), verify_images=False), ("train2014",)),
        (vqa_files, lambda r: VQAv2DataModule(str(r), verify_images=False), ("train2014",)),
        (
            refcoco_files,
            lambda r: RefCocoDataModule(
                str(r), RefCocoOptions(tasks=("rec", "res", "reg")), verify_images=False
            ),
            ("train", "val", "testA", "testB"),
        ),
        (
            grefcoco_files,
            lambda r: GRefCocoDataModule(str(r / "grefcoco"), verify_images=False),
            ("train", "val"),
        ),
    ]
    for files, make, splits in makers:
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        files.write(root)
        dm = make(root)
        for split in splits:
            ds = dm.dataset(split)
            for i in range(len(ds)):
                s = ds.sample(i)
                check_sample(s)
                got[s.task] = got.get(s.task, 0) + 1
        assert dm.num_skipped == 0
    assert set(got) == {
        Task.CAPTIONING,
        Task.LOCALIZATION,
        Task.CLASSIFICATION,
        Task.VQA,
        Task.REC,
        Task.RES,
        Task.REG,
        Task.GREC,
        Task.GRES,
    }


@given(
    mask=hnp.arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))),
    garbage=st.text(alphabet=[chr(c) for c in range(40, 120)], max_size=12),
)
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
def test_compressed_rle_is_read_like_pycocotools(mask: np.ndarray, garbage: str) -> None:
    """A COCO-compressed RLE string is decoded as ``pycocotools`` encodes it, and a random string is either
    refused or decodes to a mask of the right size (never handed to the C decoder unchecked)."""
    h, w = mask.shape
    counts = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
    rle = {"size": [h, w], "counts": counts}
    if not mask.any():
        with pytest.raises(DataFormatError, match="no foreground pixel"):
            checked_segmentation(rle, h, w, "f.json", "seg")
    else:
        assert (
            Mask.from_coco(checked_segmentation(rle, h, w, "f.json", "seg"), h, w).to_array() == mask
        ).all()
    try:
        seg = checked_segmentation({"size": [h, w], "counts": garbage}, h, w, "f.json", "seg")
    except DataFormatError as err:
        assert err.path == "f.json" and err.field == "seg.counts"
    else:
        m = Mask.from_coco(seg, h, w)
        assert m.to_array().shape == (h, w) and m.area == m.to_array().sum() > 0
