"""PredictionWriter: JSON lines and pictures from Trainer.predict on a folder of images (tiny GPV-1 and
VistaLLM), earlier results moved aside, DDP rank files merged, and ``lightning-gpv predict`` end to end."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datamodules.folder import ImageFolderDataModule  # noqa: E402
from lightning_gpv.cli import main  # noqa: E402
from lightning_gpv.demo import tiny_recipe  # noqa: E402
from lightning_gpv.errors import InputError  # noqa: E402
from lightning_gpv.models.gpv1 import GPV1Config  # noqa: E402
from lightning_gpv.models.gpv1.text import build_vocabulary, write_wordpiece_vocab  # noqa: E402
from lightning_gpv.prediction_writer import PredictionWriter, merge_rank_files  # noqa: E402
from lightning_gpv.systems.gpv1 import GPV1Module  # noqa: E402
from lightning_gpv.systems.vistallm import VistaLLMModule  # noqa: E402
from lightning_gpv.tasks import GPV1_PROMPTS, Task  # noqa: E402

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
QUESTION = "What color is the shape?"


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread."""


def _make_images(root: Path) -> Path:
    """Three 48 x 64 pictures of a coloured square (one in a subfolder) and a text file to ignore."""
    for k, (name, color) in enumerate(COLORS.items()):
        image = Image.new("RGB", (64, 48), (250, 250, 250))
        image.paste(color, (8 + 4 * k, 6, 40 + 4 * k, 38))
        path = root / ("more" if name == "blue" else "") / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    (root / "readme.txt").write_text("not an image")
    return root


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return _make_images(tmp_path / "images")


@pytest.fixture(scope="module")
def gpv1(tmp_path_factory: pytest.TempPathFactory) -> GPV1Module:
    """Tiny random GPV-1 with a WordPiece vocabulary of its prompts and a few answer words."""
    work = tmp_path_factory.mktemp("gpv1")
    texts = [GPV1_PROMPTS.render(t, index=i, category="square") for t in (Task.LOCALIZATION, Task.CAPTIONING)
             for i in range(len(GPV1_PROMPTS.templates_for(t)))]  # fmt: skip
    vocab_txt = write_wordpiece_vocab([*texts, QUESTION, *COLORS], work / "vocab.txt")
    config = GPV1Config.tiny(
        text={"tokenizer_name_or_path": str(vocab_txt), "vocab_size": len(vocab_txt.read_text().splitlines())}
    )
    build_vocabulary(work / "answers", lambda: [*COLORS, "square", "a red square"], config.text)
    L.seed_everything(0)
    return GPV1Module(config=config, vocab_path=str(work / "answers")).eval()


def _trainer(*callbacks: L.Callback) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     callbacks=list(callbacks))  # fmt: skip


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(("task", "prompt"), [("vqa", QUESTION), ("localization", "square")])
def test_gpv1_predict_writes_one_line_and_picture_per_image(
    gpv1: GPV1Module, images: Path, tmp_path: Path, task: str, prompt: str
) -> None:
    out = tmp_path / "predict"
    dm = ImageFolderDataModule(
        str(images), task, prompt, recursive=True, batch_size=2, processor=gpv1.processor
    )
    _trainer(PredictionWriter(str(out), scale=2.0)).predict(gpv1, datamodule=dm, return_predictions=False)

    lines = _lines(out / "predictions.jsonl")
    assert [line["sample_id"] for line in lines] == ["green.png", "more/blue.png", "red.png"]
    for line in lines:
        assert line["task"] == task and line["prompt"] == prompt and isinstance(line["text"], str)
        assert line["images"] == [str((images / line["sample_id"]).resolve())]
        assert len(line["boxes"]) == 10 and len(line["scores"]) == 10  # GPV-1 ranks all of its regions
        assert all(0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 48 for x0, y0, x1, y1 in line["boxes"])
        picture = out / line["picture"]
        assert picture.is_file() and picture.parent == out / "pictures"
        with Image.open(picture) as im:
            assert im.width == 128 and im.height > 96  # scale 2, plus the title and text bars
    assert [line["picture"] for line in lines] == [
        f"pictures/{task}_{n}.png" for n in ("green", "more_blue", "red")
    ]


def test_earlier_predictions_are_moved_aside_never_overwritten(
    gpv1: GPV1Module, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predict"
    dm = ImageFolderDataModule(str(images), "captioning", processor=gpv1.processor)
    writer = PredictionWriter(str(out), pictures=False)
    out.mkdir()
    (out / "predictions.rank1.jsonl").write_text("{}\n")  # left over from a DDP run: moved aside too
    _trainer(writer).predict(gpv1, datamodule=dm, return_predictions=False)
    first = (out / "predictions.jsonl").read_text()
    assert len(first.splitlines()) == 2 and not (out / "pictures").exists()
    _trainer(writer).predict(gpv1, datamodule=dm, return_predictions=False)
    (old,) = out.glob("predictions-*.jsonl")
    assert old.read_text() == first and len(_lines(out / "predictions.jsonl")) == 2
    assert all(line["picture"] is None and line["prompt"] is None for line in _lines(old))
    assert (
        len(list(out.glob("predictions.rank1-*.jsonl"))) == 1
        and not (out / "predictions.rank1.jsonl").exists()
    )


def test_output_inside_the_input_folder_is_not_read_back(gpv1: GPV1Module, images: Path) -> None:
    out = images / "more" / "predict"  # a recursive listing of the folder would find its pictures
    for _ in range(2):
        dm = ImageFolderDataModule(str(images), "captioning", recursive=True, processor=gpv1.processor)
        _trainer(PredictionWriter(str(out))).predict(gpv1, datamodule=dm, return_predictions=False)
        lines = _lines(out / "predictions.jsonl")
        assert [line["sample_id"] for line in lines] == ["green.png", "more/blue.png", "red.png"]
    assert len(list(out.glob("pictures*"))) == 2  # the first run's moved aside, neither read


def test_a_failed_run_leaves_no_empty_predictions_file(
    gpv1: GPV1Module, images: Path, tmp_path: Path
) -> None:
    (images / "broken.png").write_text("not an image")
    out = tmp_path / "predict"
    dm = ImageFolderDataModule(str(images), "captioning", processor=gpv1.processor)
    with pytest.raises(ValueError, match="broken.png"):
        _trainer(PredictionWriter(str(out))).predict(gpv1, datamodule=dm, return_predictions=False)
    assert not (out / "predictions.jsonl").exists()


@pytest.mark.slow
def test_ddp_ranks_write_their_files_and_rank0_merges(gpv1: GPV1Module, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "predict"
    dm = ImageFolderDataModule(
        str(images), "vqa", QUESTION, recursive=True, batch_size=1, processor=gpv1.processor
    )
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[PredictionWriter(str(out), scale=1.0)])  # fmt: skip
    trainer.predict(gpv1, datamodule=dm, return_predictions=False)
    lines = _lines(out / "predictions.jsonl")
    assert sorted(line["sample_id"] for line in lines) == ["green.png", "more/blue.png", "red.png"]
    assert not list(out.glob("predictions.rank*")) and len(list((out / "pictures").iterdir())) == 3


def test_vistallm_predictions_find_their_samples(images: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    module = VistaLLMModule("tiny", load_weights=False, max_new_tokens=8).eval()
    out = tmp_path / "predict"
    dm = ImageFolderDataModule(str(images), "rec", "the red square", recursive=True, batch_size=2)
    _trainer(PredictionWriter(str(out))).predict(module, datamodule=dm, return_predictions=False)

    lines = _lines(out / "predictions.jsonl")
    assert [line["sample_id"] for line in lines] == ["green.png", "more/blue.png", "red.png"]
    for line in lines:  # VistaLLMBatch has no samples: they come back from the dataset by index
        assert line["task"] == "rec" and line["prompt"] == "the red square"
        assert line["images"] == [str((images / line["sample_id"]).resolve())]
        with Image.open(out / line["picture"]) as im:
            assert im.width == 256  # scale=None: a 64 px wide image is enlarged 4 times
        assert all(len(box) == 4 for box in line.get("boxes", []))


def test_predict_returns_masks(images: Path) -> None:
    """``Trainer.predict`` with its default ``return_predictions`` copies the outputs to the CPU field by
    field (Lightning's ``move_data_to_device``), which a frozen dataclass in a prediction would make fail."""
    L.seed_everything(0)
    module = VistaLLMModule("tiny", load_weights=False, max_new_tokens=30, constrained_decoding=True).eval()
    dm = ImageFolderDataModule(str(images), "res", "the red square", batch_size=2)
    batches = _trainer().predict(module, datamodule=dm)
    predictions = [p for batch in batches for p in batch]
    assert [p.sample_id for p in predictions] == ["green.png", "red.png"]
    for p in predictions:  # the grammar makes RES answer one whole mask
        assert len(p.masks) == 1 and p.masks[0].to_array().shape == (48, 64)


def test_rank_files_are_merged_in_rank_order(tmp_path: Path) -> None:
    (tmp_path / "predictions.rank0.jsonl").write_text('{"sample_id": "a"}\n')
    (tmp_path / "predictions.rank1.jsonl").write_text('{"sample_id": "b"}\n{"sample_id": "c"}\n')
    assert merge_rank_files(tmp_path, 3) is None  # rank 2's file is not visible: leave everything
    assert merge_rank_files(tmp_path, 2) == tmp_path / "predictions.jsonl"
    assert [line["sample_id"] for line in _lines(tmp_path / "predictions.jsonl")] == ["a", "b", "c"]
    assert not list(tmp_path.glob("predictions.rank*"))


def test_bad_predictions_and_arguments_are_refused(gpv1: GPV1Module, images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale must be positive"):
        PredictionWriter(str(tmp_path), scale=0)

    class Raw(L.LightningModule):
        def predict_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            return [{"text": "x"} for _ in batch]

    dm = ImageFolderDataModule(str(images), "captioning")
    with pytest.raises(TypeError, match="must return a list of Prediction"):
        _trainer(PredictionWriter(str(tmp_path / "p"))).predict(Raw(), datamodule=dm)
    taken = images / "red.png"
    with pytest.raises(InputError, match=f"output_dir {taken} is a file, not a folder"):
        _trainer(PredictionWriter(str(taken))).predict(Raw(), datamodule=dm)


def test_cli_predict_on_a_folder_from_a_checkpoint(
    shapes_and_vocab: tuple[Path, Path],
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, vocab = shapes_and_vocab
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
    main(["fit", "-c", str(recipe), "--trainer.max_steps=2", "--trainer.default_root_dir=run",
          "--trainer.logger=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("last.ckpt")
    args = ["predict", "-c", str(recipe), "--ckpt_path", str(ckpt), "--trainer.default_root_dir=predict_run",
            "--trainer.enable_progress_bar=false",
            "--data", "datamodules.folder.ImageFolderDataModule", "--data.folder", str(images),
            "--data.task", "vqa", "--data.prompt", QUESTION, "--data.recursive", "true",
            "--trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter",
            "--trainer.callbacks.output_dir", "outputs/predict"]  # fmt: skip
    main(args)
    out = tmp_path / "outputs" / "predict"
    lines = _lines(out / "predictions.jsonl")
    assert [line["sample_id"] for line in lines] == ["green.png", "more/blue.png", "red.png"]
    assert all(line["task"] == "vqa" and line["prompt"] == QUESTION for line in lines)
    assert all((out / line["picture"]).is_file() for line in lines)

    # Without a writer the predictions go nowhere: said, not silent (the weights are the checkpoint's).
    with pytest.warns(UserWarning, match="no prediction writer among the trainer's callbacks") as record:
        main(args[: args.index("--trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter")])
    assert not [w for w in record if "no --ckpt_path" in str(w.message)]

    # A wrong task is one line naming the argument, and the earlier predictions stay as they were.
    written = (out / "predictions.jsonl").read_bytes()
    capsys.readouterr()
    bad = [*args[: args.index("--data.task")], "--data.task", "detection", "--data.prompt", QUESTION]
    with pytest.raises(SystemExit) as exit_info:
        main(bad)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lightning-gpv: error: ImageFolderDataModule: argument `task`: unknown task 'detection'" in err
    assert "Traceback" not in err
    assert (out / "predictions.jsonl").read_bytes() == written


def test_cli_predict_with_vistallm(images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "vistallm_shapes.yaml"
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="no --ckpt_path or --init_weights, so the model answers with the"):
        main(["predict", "-c", str(recipe), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              "--model.init_args.max_new_tokens=4",
              "--data", "datamodules.folder.ImageFolderDataModule", "--data.folder", str(images),
              "--data.task", "captioning", "--data.batch_size", "2",
              "--trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter",
              "--trainer.callbacks.output_dir", "out", "--trainer.callbacks.scale", "2"])  # fmt: skip
    lines = _lines(tmp_path / "out" / "predictions.jsonl")
    assert [(line["task"], line["sample_id"], line["prompt"]) for line in lines] == [
        ("captioning", "green.png", None),
        ("captioning", "red.png", None),
    ]
    assert all((tmp_path / "out" / line["picture"]).is_file() for line in lines)


def test_cli_predict_from_a_saved_folder_equals_the_predictor(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_gpv import Predictor

    L.seed_everything(0, verbose=False)
    folder = VistaLLMModule("tiny", load_weights=False).save_pretrained(tmp_path / "model")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "vistallm_shapes.yaml"
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        main(["predict", "-c", str(recipe), "--model.init_args.config", str(folder),
              "--model.init_args.max_new_tokens=12", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false",
              "--data", "datamodules.folder.ImageFolderDataModule", "--data.folder", str(images),
              "--data.task", "rec", "--data.prompt", "the red shape", "--data.recursive", "true",
              "--trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter",
              "--trainer.callbacks.output_dir", "out", "--trainer.callbacks.pictures", "false"])  # fmt: skip
    assert not [w for w in record if str(w.message).startswith("predict:")]  # the folder holds the weights
    lines = _lines(tmp_path / "out" / "predictions.jsonl")
    paths = [images / line["sample_id"] for line in lines]
    predictor = Predictor.from_pretrained(folder, max_new_tokens=12)
    predictions = predictor(paths, "rec", "the red shape")
    assert [p.text for p in predictions] == [line["text"] for line in lines]
    for prediction, line in zip(predictions, lines):
        assert prediction.to_json().get("boxes") == line.get("boxes")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("bad", ["text", "truncated"])
@pytest.mark.parametrize("family", ["gpv1", "vistallm"])
def test_cli_predict_skips_a_bad_file_in_place(
    shapes_and_vocab: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    family: str,
    bad: str,
) -> None:
    """``--data.on_bad_sample skip`` on a folder with a file that is not an image: one line per input, in
    order, the bad one an error naming the file; no picture twice; nothing earlier overwritten."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("green", "red"):
        Image.new("RGB", (64, 48), COLORS[name]).save(images / f"{name}.png")
    photo = images / "photo.jpg"  # sorted between the two
    if bad == "text":
        photo.write_text("notes, not a photo")  # fails the header check
    else:
        noise = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(noise).save(photo)
        photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])  # fails only when decoded
    out = tmp_path / "out"
    (out / "pictures").mkdir(parents=True)
    (out / "predictions.jsonl").write_text('{"sample_id": "earlier"}\n')
    Image.new("RGB", (4, 4)).save(out / "pictures" / "earlier.png")
    (out / "notes.md").write_text("my notes")
    before_inputs, before_outputs = _snapshot(images), _snapshot(out)

    monkeypatch.chdir(tmp_path)
    if family == "gpv1":
        data, vocab = shapes_and_vocab
        recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
        task = ["--data.task", "vqa", "--data.prompt", QUESTION]
    else:
        recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "vistallm_shapes.yaml"
        task = ["--data.task", "rec", "--data.prompt", "the red square", "--model.init_args.max_new_tokens=4"]
    main(["predict", "-c", str(recipe), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--data", "datamodules.folder.ImageFolderDataModule", "--data.folder", str(images), *task,
          "--data.batch_size", "2", "--data.on_bad_sample", "skip",
          "--trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter",
          "--trainer.callbacks.output_dir", str(out)])  # fmt: skip

    lines = _lines(out / "predictions.jsonl")
    assert [line["sample_id"] for line in lines] == ["green.png", "photo.jpg", "red.png"]
    error = lines[1]
    assert str(photo.resolve()) in error["error"] and error["images"] == [str(photo.resolve())]
    assert error["picture"] is None and "text" not in error and "boxes" not in error
    for line in (lines[0], lines[2]):
        assert "error" not in line and isinstance(line["text"], str)
        assert line["images"] == [str((images / line["sample_id"]).resolve())]
        assert (out / line["picture"]).is_file()
    assert sorted(p.name for p in (out / "pictures").iterdir()) == sorted(
        Path(line["picture"]).name for line in (lines[0], lines[2])
    )
    assert _snapshot(images) == before_inputs
    (old_lines,) = out.glob("predictions-*.jsonl")
    (old_pictures,) = (p for p in out.glob("pictures-*") if p.is_dir())
    assert old_lines.read_bytes() == before_outputs["predictions.jsonl"]
    assert (old_pictures / "earlier.png").read_bytes() == before_outputs["pictures/earlier.png"]
    assert (out / "notes.md").read_bytes() == before_outputs["notes.md"]
