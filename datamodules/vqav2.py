"""VQAv2 (official JSON files), on the original or the COCO-SCE split.

Files (``root`` is the VQAv2 folder; each file is also found under ``root/questions/`` or
``root/annotations/``)::

    root/v2_OpenEnded_mscoco_{split}_questions.json   {questions: [{image_id, question, question_id}]}
    root/v2_mscoco_{split}_annotations.json           {annotations: [{question_id, image_id, answers: [10 x
                                                       {answer, answer_confidence, answer_id}],
                                                       multiple_choice_answer, question_type, answer_type}]}
    root/images/{image_split}/COCO_{image_split}_{image_id:012d}.jpg   (also root/{image_split}/...)

Test splits (``test-dev2015``, ``test2015``) have no annotation file: samples have no target. Their images are
in ``test2015``.

Training target (GPV-1 ``CocoVqa.__getitem__``): drawn at every ``__getitem__`` among the raw answers given by
more than 2 annotators, with probability proportional to their count; the ``multiple_choice_answer`` when
none is. The draw uses Python's ``random`` module, which PyTorch reseeds in every loader worker. Evaluation
samples use the ``multiple_choice_answer``. ``target.answers`` always holds the 10 raw answers.

Checked when reading (a failure is a :class:`~datamodules.errors.DataFormatError` naming the file and the
field; ``on_bad_sample="skip"`` drops the question and counts it once): questions are non-empty with unique
ids; an annotation has a non-empty ``multiple_choice_answer``, at least one raw answer, a unique question id
and, if it gives one, the question's ``image_id``. An empty raw answer is kept for evaluation but never drawn
as a training target.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from datamodules.base import Reader, TaskDataModule
from datamodules.errors import DataFormatError, OnBadSample
from datamodules.io import check_new_id, coco_image_dirs, field, first_existing, read_json
from datamodules.sce import PAPER_SCE, SceOptions
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.samples import Target, TaskSample

VQA_SPLITS: tuple[str, ...] = ("train2014", "val2014", "test-dev2015", "test2015")
_IMAGE_SPLIT = {"test-dev2015": "test2015"}


@dataclass(frozen=True)
class VQAv2Options:
    """Where a VQAv2 reader finds the images.

    Args:
        image_dir: Image folder pattern with ``{split}``, the COCO image split (e.g. ``train2014``; default:
            ``root/images/{split}``, ``root/{split}`` or the sibling ``../coco/images/{split}``).
    """

    image_dir: str | None = None


class VqaRecord(NamedTuple):
    """One question: ``answers`` are the raw human answers (empty on test splits)."""

    image_path: str
    image_id: int
    question_id: int
    question: str
    answers: tuple[str, ...] = ()
    mc_answer: str | None = None
    metadata: dict[str, Any] | None = None


def training_answer(
    answers: tuple[str, ...] | list[str], fallback: str | None, rng: random.Random | None = None
) -> str | None:
    """GPV-1's training target: a raw answer given by more than 2 annotators, drawn ∝ its count.

    Returns ``fallback`` (the multiple-choice answer) when no non-empty answer has more than 2 votes.
    """
    counts = Counter(answers)
    # An empty raw answer counts for evaluation but is never a training target.
    frequent = [(a, c) for a, c in counts.items() if c > 2 and a.strip()]
    if not frequent:
        return fallback
    choice = (rng or random).choices([a for a, _ in frequent], weights=[c for _, c in frequent], k=1)
    return choice[0]


class VQAv2Reader(Reader):
    """Reads VQAv2 question and annotation files into :class:`VqaRecord` s.

    Args:
        root: The VQAv2 folder.
        options: Where the images are.
        sce: Read the COCO-SCE splits ``train``/``val``/``test`` instead of VQAv2's.
        on_bad_sample: ``"raise"`` or ``"skip"`` bad records.
    """

    name = "vqav2"

    def __init__(
        self,
        root: str | Path,
        options: VQAv2Options = VQAv2Options(),
        sce: SceOptions | None = None,
        on_bad_sample: OnBadSample = "raise",
    ) -> None:
        super().__init__(root, on_bad_sample)
        self.options = options
        self.sce = sce.protocol() if sce is not None else None

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.sce is not None else VQA_SPLITS

    def _file(self, name: str) -> Path:
        for sub in ("", "questions", "annotations"):
            p = self.root / sub / name
            if p.is_file():
                return p
        return self.root / name

    def question_file(self, split: str) -> Path:
        return self._file(f"v2_OpenEnded_mscoco_{split}_questions.json")

    def annotation_file(self, split: str) -> Path:
        return self._file(f"v2_mscoco_{split}_annotations.json")

    def images_folder(self, image_split: str) -> Path:
        if self.options.image_dir is not None:
            return Path(self.options.image_dir.format(split=image_split)).expanduser()
        return first_existing(
            coco_image_dirs(self.root, image_split), f"image folder of {image_split}", self.root
        )

    def read(self, split: str, *, train: bool) -> list[VqaRecord]:
        self.check_split(split)
        source = self.sce.source_split(split) if self.sce is not None else split
        qpath = self.question_file(source)
        questions = field(read_json(qpath, dict), "questions", list, qpath, "")
        annotations, reported = self._annotations(source)
        image_split = _IMAGE_SPLIT.get(source, source)
        folder = self.images_folder(image_split)
        parsed: list[tuple[int, int, str]] = []
        first: dict[int, int] = {}  # question id -> its index (the id makes the sample id)
        for i, q in enumerate(questions):
            where = f"questions[{i}]"
            try:
                image_id = field(q, "image_id", int, qpath, where)
                qid = field(q, "question_id", int, qpath, where)
                question = field(q, "question", str, qpath, where)
                check_new_id(first, qid, qpath, where, "question id", "question_id")
                if not question.strip():
                    raise DataFormatError(qpath, f"{where}.question", "empty question")
            except DataFormatError as err:
                self.report(err)
                continue
            first[qid] = i
            parsed.append((image_id, qid, question))
        keep = self.sce.image_mask(split, [p[0] for p in parsed]) if self.sce is not None else None
        records: list[VqaRecord] = []
        for k, (image_id, qid, question) in enumerate(parsed):
            if keep is not None and not keep[k]:
                continue
            answers: tuple[str, ...] = ()
            mc: str | None = None
            meta: dict[str, Any] = {"question_id": qid}
            if annotations is not None:
                if qid in reported:  # its annotation was reported as bad
                    continue
                if qid not in annotations:
                    self.report(
                        DataFormatError(
                            self.annotation_file(source),
                            "annotations",
                            f"no annotation for question_id {qid}",
                        )
                    )
                    continue
                answers, mc, extra = annotations[qid]
                if extra.get("image_id", image_id) != image_id:
                    self.report(
                        DataFormatError(
                            self.annotation_file(source),
                            "annotations",
                            f"question_id {qid} is of image {extra['image_id']} here, "
                            f"of image {image_id} in {qpath.name}",
                        )
                    )
                    continue
                meta.update((k, v) for k, v in extra.items() if k != "image_id")
            if self.sce is not None:
                texts = [question, mc or "", *(a for a, c in Counter(answers).items() if c > 2)]
                judged = self.sce.judge(split, Task.VQA, self.sce.split.concepts(texts))
                if judged is None:
                    continue
                meta.update(judged)
            name = f"COCO_{image_split}_{image_id:012d}.jpg"
            records.append(VqaRecord(str(folder / name), image_id, qid, question, answers, mc, meta))
        return records

    def _annotations(
        self, split: str
    ) -> tuple[dict[int, tuple[tuple[str, ...], str, dict[str, Any]]] | None, set[int]]:
        """``{question_id: (raw answers, multiple-choice answer, extra fields)}`` (``None`` on a test split
        without annotations) and the question ids whose annotation was reported as bad."""
        path = self.annotation_file(split)
        if split.startswith("test") and not path.is_file():
            return None, set()
        anns = field(read_json(path, dict), "annotations", list, path, "")
        out: dict[int, tuple[tuple[str, ...], str, dict[str, Any]]] = {}
        reported: set[int] = set()
        first: dict[int, int] = {}
        for i, ann in enumerate(anns):
            where = f"annotations[{i}]"
            try:
                qid = field(ann, "question_id", int, path, where)
                check_new_id(first, qid, path, where, "question id", "question_id")
                raw = field(ann, "answers", list, path, where)
                if not raw:  # VQA accuracy compares with the human answers: none makes every answer wrong
                    raise DataFormatError(path, f"{where}.answers", "no answers")
                answers = tuple(
                    field(a, "answer", str, path, f"{where}.answers[{j}]") for j, a in enumerate(raw)
                )
                mc = field(ann, "multiple_choice_answer", str, path, where)
                if not mc.strip():  # the evaluation target, and the training one when no answer is frequent
                    raise DataFormatError(path, f"{where}.multiple_choice_answer", "empty answer")
                image_id = field(ann, "image_id", int, path, where) if "image_id" in ann else None
            except DataFormatError as err:
                self.report(err)
                if isinstance(ann, dict) and type(ann.get("question_id")) is int:
                    first.setdefault(ann["question_id"], i)
                    if ann["question_id"] not in out:
                        reported.add(ann["question_id"])
                continue
            first[qid] = i
            extra: dict[str, Any] = {
                k: ann[k] for k in ("question_type", "answer_type") if isinstance(ann.get(k), str)
            }
            if image_id is not None:
                extra["image_id"] = image_id
            out[qid] = (answers, mc, extra)
        return out, reported

    def sample(self, record: VqaRecord, *, train: bool) -> TaskSample:
        if record.mc_answer is None:
            target = Target()
        else:
            text = training_answer(record.answers, record.mc_answer) if train else record.mc_answer
            target = Target(text=text, answers=list(record.answers))
        meta = dict(record.metadata or {})
        if record.mc_answer is not None:
            meta["multiple_choice_answer"] = record.mc_answer
        return TaskSample(
            Task.VQA,
            [record.image_path],
            target,
            question=record.question,
            sample_id=f"vqa-{record.question_id}",
            image_ids=[record.image_id],
            metadata=meta,
        )


class VQAv2DataModule(TaskDataModule):
    """VQAv2 on its official splits (``train2014``, ``val2014``, ``test-dev2015``, ``test2015``).

    Args:
        root: The VQAv2 folder (question/annotation JSON files and ``images/{split}``).
        options: Where the images are.
        train_split: E.g. ``train2014``.
        val_split: E.g. ``val2014``.
        test_split: E.g. ``test-dev2015`` (no targets).
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: VQAv2Options = VQAv2Options(),
        train_split: str | None = "train2014",
        val_split: str | None = "val2014",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, train_split, val_split, test_split, **kwargs)
        self.options = options

    def make_reader(self) -> VQAv2Reader:
        return VQAv2Reader(self.root, self.options, on_bad_sample=self.on_bad_sample)


class VQAv2SceDataModule(VQAv2DataModule):
    """VQAv2 on COCO-SCE: ``train``/``val`` from ``train2014`` questions (same image partition as
    :class:`~datamodules.coco.CocoSceDataModule`), ``test`` = ``val2014``; a question whose text,
    multiple-choice answer or any answer given by more than 2 annotators mentions a concept of ``H_vqa,cap``
    is dropped from train/val and tagged ``unseen`` in test.

    Args:
        root: The VQAv2 folder.
        options: As :class:`VQAv2DataModule`.
        sce: The category split and image partition (default: the paper's Table 9, hash partition 80/20).
        train_split: ``train``.
        val_split: ``val``.
        test_split: ``test``.
        **kwargs: The loader and error options of :class:`~datamodules.base.TaskDataModule`.
    """

    def __init__(
        self,
        root: str,
        options: VQAv2Options = VQAv2Options(),
        sce: SceOptions = PAPER_SCE,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, options, train_split, val_split, test_split, **kwargs)
        self.sce = sce

    def make_reader(self) -> VQAv2Reader:
        return VQAv2Reader(self.root, self.options, self.sce, self.on_bad_sample)
