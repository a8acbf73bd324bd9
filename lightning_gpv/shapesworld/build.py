"""``make_shapes``: generate the whole ShapesWorld data set atomically.

Everything is written into a hidden temporary folder next to ``root``
(``.<name>.tmp-XXXXXXXX``); the manifest ``shapesworld.json`` is written last and only then is
the folder renamed into place. An interrupted run therefore never leaves a set at ``root`` that
looks complete, and with ``overwrite=True`` the previous set is removed only after the new one is
complete. Only a folder with a ShapesWorld manifest is ever overwritten; any other non-empty folder is
refused untouched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lightning_gpv.shapesworld import coco
from lightning_gpv.shapesworld.coseg import build_attcoseg, build_coseg
from lightning_gpv.shapesworld.files import file_list, sha256, write_jpeg, write_json, write_pickle
from lightning_gpv.shapesworld.language import captions
from lightning_gpv.shapesworld.nlvr2 import PAIRS_PER_SET, build_nlvr2
from lightning_gpv.shapesworld.questions import annotate, questions
from lightning_gpv.shapesworld.refcoco import REFER_FILES, image_grefs, image_part, image_refs, split_name
from lightning_gpv.shapesworld.render import render_record
from lightning_gpv.shapesworld.sample import DEFAULT_STYLE, SceneStyle, sample_scene
from lightning_gpv.shapesworld.sce import split_categories, split_images
from lightning_gpv.shapesworld.scene import GENERATOR_VERSION, SHAPES, STREAMS, seed_rng

MANIFEST = "shapesworld.json"
MIN_IMAGES = 10
"""Fewer images would leave some split (COCO val2014, RefCOCO val/test) empty."""

SUBSETS = ("train2014", "val2014")


def coco_subset(index: int) -> str:
    """COCO subset of the ``index``-th image: every fifth image (``i % 5 == 4``) is ``val2014``."""
    return "val2014" if index % 5 == 4 else "train2014"


def plan(num_images: int) -> dict[str, int]:
    """How many NLVR2 sets, co-seg images per class and AttCoSeg groups go with ``num_images``."""
    return {
        "images": num_images,
        "nlvr2_sets": max(10, math.ceil(num_images / 8)),
        "coseg_per_class": max(2, math.ceil(num_images / 40)),
        "attcoseg_groups": max(10, math.ceil(num_images / 10)),
    }


class _Collector:
    """Per-subset lists of everything the COCO-image loop produces."""

    def __init__(self) -> None:
        self.images: dict[str, list[dict[str, Any]]] = {s: [] for s in SUBSETS}
        self.anns: dict[str, list[dict[str, Any]]] = {s: [] for s in SUBSETS}
        self.captions: dict[str, list[dict[str, Any]]] = {s: [] for s in SUBSETS}
        self.questions: dict[str, list[dict[str, Any]]] = {s: [] for s in SUBSETS}
        self.answers: dict[str, list[dict[str, Any]]] = {s: [] for s in SUBSETS}
        self.refs: dict[str, list[tuple[dict[str, Any], tuple[str, ...], int]]] = {d: [] for d in REFER_FILES}
        self.grefs: list[tuple[dict[str, Any], tuple[str, ...], int]] = []
        self.index: list[tuple[int, int, str]] = []


def _coco_image(out: Path, seed: int, i: int, col: _Collector, style: SceneStyle) -> None:
    """Render image ``i`` and collect its COCO, caption, VQA and referring annotations."""
    image_id, subset = i + 1, coco_subset(i)
    image, record, _ = render_record(sample_scene(seed_rng(seed, STREAMS["scenes"], i), style=style))
    entry = coco.image_entry(image_id, coco.coco_file_name(subset, image_id), record)
    write_jpeg(out / "coco" / "images" / subset / entry["file_name"], image)
    col.index.append((i, image_id, subset))
    col.images[subset].append(entry)
    col.anns[subset].extend(coco.annotation_entries(record, image_id))
    for c, text in enumerate(captions(record, seed_rng(seed, STREAMS["captions"], i))):
        col.captions[subset].append({"caption": text, "id": image_id * 10 + c, "image_id": image_id})
    rng = seed_rng(seed, STREAMS["vqa"], i)
    for q, question in enumerate(questions(record, rng)):
        qid = image_id * 1000 + q
        answers, mc = annotate(question, rng)
        col.questions[subset].append(
            {"image_id": image_id, "question": question.question, "question_id": qid}
        )
        col.answers[subset].append(
            {
                "answer_type": question.answer_type,
                "answers": answers,
                "image_id": image_id,
                "multiple_choice_answer": mc,
                "question_id": qid,
                "question_type": question.question_type,
            }
        )
    if subset != "train2014":
        return
    for dataset in REFER_FILES:
        for ref, shapes in image_refs(record, image_id, dataset, seed_rng(seed, STREAMS[dataset], i)):
            col.refs[dataset].append((ref, shapes, i))
    for ref, shapes in image_grefs(record, image_id, seed_rng(seed, STREAMS["grefcoco"], i)):
        col.grefs.append((ref, shapes, i))


def _write_coco_family(out: Path, seed: int, col: _Collector) -> dict[str, Any]:
    """Write COCO, VQAv2, the RefCOCO family and gRefCOCO; return their counts."""
    counts: dict[str, Any] = {}
    for subset in SUBSETS:
        ann_dir = out / "coco" / "annotations"
        doc = coco.instances_json(
            seed, col.images[subset], col.anns[subset], f"COCO-style instances {subset}"
        )
        write_json(ann_dir / f"instances_{subset}.json", doc)
        write_json(
            ann_dir / f"captions_{subset}.json",
            coco.captions_json(seed, col.images[subset], col.captions[subset], subset),
        )
        vqa = out / "vqav2"
        write_json(
            vqa / f"v2_OpenEnded_mscoco_{subset}_questions.json",
            coco.vqa_questions_json(seed, subset, col.questions[subset]),
        )
        write_json(
            vqa / f"v2_mscoco_{subset}_annotations.json",
            coco.vqa_annotations_json(seed, subset, col.answers[subset]),
        )
        counts[f"coco_{subset}"] = {
            "images": len(col.images[subset]),
            "instances": len(col.anns[subset]),
            "captions": len(col.captions[subset]),
            "questions": len(col.questions[subset]),
        }
    train = coco.instances_json(
        seed, col.images["train2014"], col.anns["train2014"], "RefCOCO-style instances"
    )
    for dataset, schemes in REFER_FILES.items():
        write_json(out / "refcoco" / dataset / "instances.json", train)
        for scheme in schemes:
            refs = []
            for ref, shapes, i in col.refs[dataset]:
                refs.append({**ref, "split": split_name(image_part(i), shapes, dataset, scheme)})
            write_pickle(out / "refcoco" / dataset / f"refs({scheme}).p", refs)
        counts[dataset] = len(col.refs[dataset])
    grefs = [
        {**ref, "split": split_name(image_part(i), shapes, "grefcoco", "unc")} for ref, shapes, i in col.grefs
    ]
    write_json(out / "grefcoco" / "instances.json", train)
    write_json(out / "grefcoco" / "grefs(unc).json", grefs)
    counts["grefcoco"] = len(grefs)
    return counts


def generate(
    out: Path, num_images: int, seed: int, progress: bool = True, style: SceneStyle = DEFAULT_STYLE
) -> dict[str, Any]:
    """Write every file of the data set (but not the manifest) under ``out``; return counts."""
    sizes = plan(num_images)
    total = num_images + 2 * PAIRS_PER_SET * sizes["nlvr2_sets"]
    total += len(SHAPES) * sizes["coseg_per_class"] + sizes["attcoseg_groups"]
    col = _Collector()
    with tqdm(total=total, desc="make-shapes", unit="item", disable=not progress, dynamic_ncols=True) as bar:
        bar.set_postfix_str("coco")
        for i in range(num_images):
            _coco_image(out, seed, i, col, style)
            bar.update(1)
        counts = _write_coco_family(out, seed, col)
        bar.set_postfix_str("nlvr2")
        counts["nlvr2"] = build_nlvr2(out / "nlvr2", seed, sizes["nlvr2_sets"], bar.update, style)
        bar.set_postfix_str("coseg")
        counts["coseg_images"] = build_coseg(
            out / "coseg" / "pascal", seed, sizes["coseg_per_class"], bar.update, style
        )
        bar.set_postfix_str("attcoseg")
        counts["attcoseg_groups"] = build_attcoseg(
            out / "attcoseg", seed, sizes["attcoseg_groups"], bar.update, style
        )
    write_json(out / "coco_sce" / "split_categories.json", split_categories())
    write_json(out / "coco_sce" / "split_images.json", split_images(col.index))
    return counts


def is_shapes_world(root: Path) -> bool:
    """Whether ``root`` carries a ShapesWorld manifest (``shapesworld.json`` naming ``ShapesWorld``)."""
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("name") == "ShapesWorld"


def _check_target(root: Path, overwrite: bool) -> None:
    """Refuse a ``root`` that is a file, or non-empty unless ``overwrite`` and it holds a ShapesWorld set."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"refusing to write into the non-empty directory {root}; "
                "pass overwrite=True (--overwrite on the command line) to replace it"
            )
        if not is_shapes_world(root):
            raise FileExistsError(
                f"refusing to overwrite {root}: it is not empty and has no ShapesWorld manifest "
                f"({MANIFEST}), so it was not written by make-shapes; nothing in it was touched"
            )
        cwd = Path.cwd().resolve()
        real = root.resolve()
        if real == Path(real.anchor) or real == Path.home().resolve() or real == cwd or real in cwd.parents:
            raise ValueError(
                f"refusing to overwrite {root}: it is the filesystem root, the home or working directory"
            )


def _swap(tmp: Path, root: Path) -> None:
    """Move the finished ``tmp`` to ``root``; an existing ``root`` is deleted only afterwards."""
    if not root.exists():
        os.replace(tmp, root)
        return
    if not any(root.iterdir()):
        root.rmdir()
        os.replace(tmp, root)
        return
    old = root.parent / f".{root.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
    os.replace(root, old)
    try:
        os.replace(tmp, root)
    except BaseException:
        os.replace(old, root)
        raise
    shutil.rmtree(old, ignore_errors=True)


def make_shapes(
    root: str | os.PathLike[str],
    num_images: int,
    seed: int,
    overwrite: bool = False,
    progress: bool = True,
    style: SceneStyle = DEFAULT_STYLE,
) -> Path:
    """Generate ShapesWorld at ``root`` and return its path.

    Args:
        root: Output folder. It must be absent or empty, or with ``overwrite`` hold a ShapesWorld set
            (a ``shapesworld.json`` manifest at its root); any other non-empty folder is refused.
        num_images: Number of COCO-style scenes (at least :data:`MIN_IMAGES`); NLVR2, co-seg and
            AttCoSeg sizes follow from it (see :func:`plan`).
        seed: Non-negative seed; the same seed, ``num_images`` and ``style`` give byte-identical files.
        overwrite: Replace a ShapesWorld set at ``root`` (only once the new set is complete).
        progress: Show a tqdm progress bar.
        style: How cluttered the scenes are (default: the full ShapesWorld); recorded in the manifest.

    Raises:
        FileExistsError: ``root`` is a file, or is non-empty and ``overwrite`` is false or it has no
            ShapesWorld manifest.
        ValueError: Bad ``num_images`` or ``seed``.
    """
    if num_images < MIN_IMAGES:
        raise ValueError(f"num_images must be at least {MIN_IMAGES}, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    root = Path(root).expanduser().absolute()
    _check_target(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        # mkdtemp makes the folder private (0700); the finished set gets a normal folder's mode instead.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        counts = generate(tmp, num_images, seed, progress, style)
        manifest = {
            "counts": counts,
            "files": file_list(tmp),
            "generator_version": GENERATOR_VERSION,
            "name": "ShapesWorld",
            "num_images": num_images,
            "plan": plan(num_images),
            "seed": seed,
            "style": style.to_json(),
        }
        write_json(tmp / MANIFEST, manifest)
        _check_target(root, overwrite)  # again: root may have changed while the set was written
        _swap(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def verify(root: str | os.PathLike[str], hashes: bool = True) -> dict[str, Any]:
    """Check that ``root`` holds a complete set: the manifest exists and lists exactly the files there.

    Returns the manifest. Raises ``FileNotFoundError`` without a manifest and ``ValueError`` on a
    missing, extra or (with ``hashes``) modified file.
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a complete ShapesWorld set: {MANIFEST} is missing")
    manifest = json.loads(path.read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(listed):
        diff = sorted(present ^ set(listed))[:5]
        raise ValueError(f"{root}: files differ from the manifest, e.g. {diff}")
    if hashes:
        for rel, entry in listed.items():
            if sha256(root / rel) != entry["sha256"]:
                raise ValueError(f"{root / rel}: sha256 differs from the manifest")
    return manifest
