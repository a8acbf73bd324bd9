"""make_shapes: determinism, refusal, overwrite, atomicity, manifest, CLI and rendering invariants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from lightning_gpv.shapesworld import MANIFEST, make_shapes, verify
from lightning_gpv.shapesworld import build as build_module
from lightning_gpv.shapesworld.cli import main
from lightning_gpv.shapesworld.language import captions, counted, is_extreme, relation, relation_holds, select
from lightning_gpv.shapesworld.render import render_record
from lightning_gpv.shapesworld.sample import ObjectSpec, SceneStyle, sample_scene
from lightning_gpv.shapesworld.scene import (
    BACKGROUNDS,
    MIN_VISIBLE_FRACTION,
    SIZES,
    STREAMS,
    Background,
    Instance,
    Scene,
    SceneRecord,
    ShapeObject,
    seed_rng,
)

NUM_IMAGES, SEED = 24, 3  # as in conftest.py


@pytest.fixture
def small_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the NLVR2 / co-seg / AttCoSeg parts to keep extra builds fast."""
    tiny = {"nlvr2_sets": 1, "coseg_per_class": 1, "attcoseg_groups": 1}
    monkeypatch.setattr(build_module, "plan", lambda n: {"images": n, **tiny})


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_manifest_lists_every_file(shapes_root: Path) -> None:
    manifest = verify(shapes_root)
    assert manifest["seed"] == SEED and manifest["num_images"] == NUM_IMAGES
    expected = {
        "coco/annotations/instances_train2014.json",
        "coco/annotations/captions_val2014.json",
        "vqav2/v2_OpenEnded_mscoco_val2014_questions.json",
        "vqav2/v2_mscoco_train2014_annotations.json",
        "refcoco/refcoco/refs(unc).p",
        "refcoco/refcoco/refs(google).p",
        "refcoco/refcoco+/refs(unc).p",
        "refcoco/refcocog/refs(umd).p",
        "refcoco/refcocog/refs(google).p",
        "refcoco/refcocog/instances.json",
        "grefcoco/grefs(unc).json",
        "grefcoco/instances.json",
        "nlvr2/data/train.json",
        "nlvr2/data/dev.json",
        "nlvr2/data/test1.json",
        "attcoseg/attcoseg_train.json",
        "coco_sce/split_categories.json",
        "coco_sce/split_images.json",
    }
    assert expected <= {f["path"] for f in manifest["files"]}
    assert _siblings(shapes_root) == []


def test_same_seed_gives_identical_bytes(shapes_root: Path, tmp_path: Path) -> None:
    """A second run in a fresh interpreter (other hash seed) writes byte-identical files."""
    out = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    cmd = [sys.executable, "-m", "lightning_gpv.shapesworld", "--root", str(out)]
    cmd += ["--num-images", str(NUM_IMAGES), "--seed", str(SEED), "--no-progress"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    # the manifest holds the sha256 of every file, so equal manifests mean equal data sets
    assert (out / MANIFEST).read_bytes() == (shapes_root / MANIFEST).read_bytes()
    verify(out)


def test_image_i_does_not_depend_on_num_images(shapes_root: Path, tmp_path: Path, small_plan: None) -> None:
    small = make_shapes(tmp_path / "small", 11, SEED, progress=False)
    files = {f["path"]: f["sha256"] for f in json.loads((small / MANIFEST).read_text())["files"]}
    big = {f["path"]: f["sha256"] for f in json.loads((shapes_root / MANIFEST).read_text())["files"]}
    images = [p for p in files if p.startswith("coco/images/")]
    assert len(images) == 11 and all(files[p] == big[p] for p in images)
    first = [sample_scene(seed_rng(s, STREAMS["scenes"], 0)) for s in (SEED, SEED, SEED + 1)]
    assert first[0] == first[1] != first[2]


def test_refuses_non_empty_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "busy"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(root)):
        make_shapes(root, 10, 0, progress=False)
    assert main(["--root", str(root), "--num-images", "10", "--seed", "0", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in root.iterdir()] == ["keep.txt"] and _siblings(root) == []
    with pytest.raises(ValueError):
        make_shapes(tmp_path / "tiny", 3, 0, progress=False)


@pytest.mark.parametrize("manifest", [None, "{}", '{"name": "Other"}', "not json"])
def test_overwrite_refuses_a_folder_without_shapesworld_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: str | None
) -> None:
    root = tmp_path / "thesis"
    (root / "chapters").mkdir(parents=True)
    files = {root / "thesis.tex": b"\\chapter{Mine}\n", root / "chapters" / "one.bin": bytes(range(256))}
    if manifest is not None:
        files[root / MANIFEST] = manifest.encode()
    for path, data in files.items():
        path.write_bytes(data)
    with pytest.raises(FileExistsError, match="no ShapesWorld manifest") as err:
        make_shapes(root, 10, 0, overwrite=True, progress=False)
    assert str(root) in str(err.value)
    args = ["--root", str(root), "--num-images", "10", "--seed", "0", "--overwrite", "--no-progress"]
    assert main(args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(root) in lines[0] and MANIFEST in lines[0]
    assert {p for p in root.rglob("*") if p.is_file()} == set(files)
    assert all(path.read_bytes() == data for path, data in files.items())
    assert _siblings(root) == []


def test_overwrite_accepts_an_empty_folder(tmp_path: Path, small_plan: None) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    make_shapes(root, 10, 0, overwrite=True, progress=False)
    verify(root)


def test_overwrite_and_failure_leave_no_half_written_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_plan: None
) -> None:
    root = tmp_path / "world"
    root.mkdir()
    (root / "old.txt").write_text("old")
    (root / MANIFEST).write_text('{"name": "ShapesWorld", "seed": 0}')  # an earlier set
    make_shapes(root, 10, 1, overwrite=True, progress=False)
    assert not (root / "old.txt").exists() and _siblings(root) == []
    assert json.loads((root / MANIFEST).read_text())["seed"] == 1
    before = (root / MANIFEST).read_bytes()

    def boom(*args: object, **kwargs: object) -> int:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(build_module, "build_coseg", boom)
    with pytest.raises(RuntimeError, match="injected"):
        make_shapes(root, 12, 2, overwrite=True, progress=False)
    assert (root / MANIFEST).read_bytes() == before and _siblings(root) == []
    verify(root)
    with open(root / "coco_sce" / "split_images.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(ValueError, match="sha256"):
        verify(root)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="injected"):
        make_shapes(fresh, 10, 2, progress=False)
    assert not fresh.exists() and _siblings(fresh) == []


def test_verify_requires_manifest(tmp_path: Path) -> None:
    root = tmp_path / "w"
    with pytest.raises(FileNotFoundError):
        verify(root)
    root.mkdir()
    (root / "x.json").write_text("{}")
    with pytest.raises(FileNotFoundError):
        verify(root)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_scene_invariants(index: int) -> None:
    """1-6 clearly visible objects; every COCO polygon reproduces its exact visible mask."""
    _, record, visible = render_record(sample_scene(seed_rng(0, STREAMS["scenes"], index)))
    assert 1 <= len(record.instances) <= 6
    for inst, mask in zip(record.instances, visible):
        assert inst.visible_fraction >= MIN_VISIBLE_FRACTION
        rle = mask_utils.frPyObjects([list(inst.polygon)], record.height, record.width)
        poly = mask_utils.decode(rle)[:, :, 0].astype(bool)
        exact = mask.astype(bool)
        assert (poly & exact).sum() / (poly | exact).sum() > 0.97
        assert poly.sum() == inst.area


def test_scene_style_bounds_objects_and_backgrounds() -> None:
    style = SceneStyle(max_objects=2, backgrounds=("plain", "striped"), sizes=("medium", "large"))
    scenes = [sample_scene(seed_rng(0, STREAMS["scenes"], i), style=style) for i in range(60)]
    assert {len(s.objects) for s in scenes} == {1, 2}
    assert {s.background.kind for s in scenes} == {"plain", "striped"}
    assert {o.size for s in scenes for o in s.objects} == {"medium", "large"}
    # Required objects are always placed, even beyond max_objects.
    rng = np.random.Generator(np.random.PCG64(1))
    required = (ObjectSpec(shape="star"), ObjectSpec(shape="heart"))
    scene = sample_scene(rng, required=required, style=SceneStyle(max_objects=1))
    assert sorted(o.shape for o in scene.objects) == ["heart", "star"]
    # The default style is the full world: 1 to 6 objects, every background kind and size.
    full = [sample_scene(seed_rng(0, STREAMS["scenes"], i)) for i in range(150)]
    assert {len(s.objects) for s in full} == set(range(1, 7))
    assert {s.background.kind for s in full} == set(BACKGROUNDS)
    assert {o.size for s in full for o in s.objects} == set(SIZES)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_objects": 0}, "max_objects"), ({"max_objects": 7}, "max_objects"),
     ({"backgrounds": ()}, "backgrounds"), ({"backgrounds": ("plain", "lava")}, "backgrounds"),
     ({"sizes": ("huge",)}, "sizes"), ({"sizes": ("large", "large")}, "sizes")],
)  # fmt: skip
def test_scene_style_rejects_bad_values(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=field):
        SceneStyle(**kwargs)


def test_cli_style_bounds_the_coco_scenes_and_is_in_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "sparse"
    argv = ["--root", str(root), "--num-images", "12", "--max-objects", "2", "--backgrounds", "plain"]
    assert main([*argv, "--sizes", "large", "--no-progress"]) == 0
    manifest = verify(root)
    assert manifest["style"] == {"backgrounds": ["plain"], "max_objects": 2, "sizes": ["large"]}
    for subset in ("train2014", "val2014"):
        doc = json.loads((root / "coco" / "annotations" / f"instances_{subset}.json").read_text())
        per_image = np.bincount([a["image_id"] for a in doc["annotations"]])
        assert per_image.max() <= 2
    assert main(["--root", str(tmp_path / "bad"), "--max-objects", "9", "--no-progress"]) == 2


def test_required_objects_are_on_top_and_in_place() -> None:
    rng = np.random.Generator(np.random.PCG64(7))
    for position in ("top left", "middle center", "bottom right"):
        spec = ObjectSpec("star", "red", "large", position)
        _, record, _ = render_record(sample_scene(rng, required=(spec,)))
        top = record.instances[-1]
        assert (top.obj.shape, top.obj.color, top.obj.size) == ("star", "red", "large")
        assert record.position(top) == position and top.visible_fraction == 1.0


def _inst(index: int, cx: float, cy: float, shape: str = "circle", color: str = "red") -> Instance:
    obj = ShapeObject(shape, color, "medium", (cx, cy), 20.0, 0.0, (0, 0, 0))
    return Instance(index, obj, (cx - 10, cy - 10, 20.0, 20.0), 400.0, (), 400, 1.0)


def test_spatial_language() -> None:
    a, b, c = _inst(0, 40, 100), _inst(1, 200, 110), _inst(2, 60, 20, "star", "blue")
    assert relation(a, b, 320, 240) == "left of" and relation(b, a, 320, 240) == "right of"
    assert relation(c, a, 320, 240) == "above"
    assert relation_holds(b, a, "left of", 320, 240) is False
    assert relation_holds(_inst(3, 52, 100), _inst(4, 70, 100), "left of", 320, 240) is None
    assert is_extreme(a, [a, b], "left", 320, 240) and not is_extreme(a, [a], "left", 320, 240)
    background = Background("plain", ((128, 128, 128), (128, 128, 128)), 0.0, 20.0, 0)
    record = SceneRecord(Scene(320, 240, background, (a.obj, b.obj, c.obj)), (a, b, c))
    assert counted(2, "red", "circle") == "two red circles" and counted(1, "orange") == "an orange shape"
    assert select(record, color="red") == [a, b]
    caps = captions(record, np.random.Generator(np.random.PCG64(0)))
    assert len(caps) >= 3 and "two red circles" in caps[0].lower() and "a blue star" in caps[0].lower()
