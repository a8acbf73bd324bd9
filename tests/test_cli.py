"""``lightning-gpv``: make-shapes and build-vocab through ``cli.main``; an interrupted fit resumes exactly."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_gpv.cli import main, run_lightning_cli  # noqa: E402
from lightning_gpv.demo import tiny_recipe  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread."""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ShapesWorld (20 images) and GPV-1's vocabularies, both made through ``cli.main``."""
    work = tmp_path_factory.mktemp("cli")
    data, vocab = work / "data", work / "vocab"
    with pytest.raises(SystemExit) as exit_:
        main(["make-shapes", "--root", str(data), "--num-images", "20", "--seed", "0", "--no-progress"])
    assert exit_.value.code == 0
    with pytest.raises(SystemExit) as exit_:
        main(["build-vocab", "--coco-root", str(data / "coco"), "--vqa-root", str(data / "vqav2"),
              "--out", str(vocab), "--tiny"])  # fmt: skip
    assert exit_.value.code == 0
    return data, vocab


def test_make_shapes_and_build_vocab_through_main(shapes: tuple[Path, Path]) -> None:
    data, vocab = shapes
    assert (data / "coco" / "annotations").is_dir() and (data / "vqav2").is_dir()
    assert (vocab / "vocab.txt").is_file() and (vocab / "answers" / "embeddings.pt").is_file()
    with pytest.raises(SystemExit) as exit_:  # never silently overwritten
        main(["make-shapes", "--root", str(data), "--num-images", "20", "--no-progress"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["build-vocab", "--coco-root", str(data / "coco"), "--out", str(vocab), "--tiny"])
    assert exit_.value.code == 2


def test_build_vocab_is_reproducible_whatever_the_random_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VQA training samples draw their answer with the global ``random``: ``build`` seeds that draw."""
    import random

    import numpy as np

    from lightning_gpv import build_vocab
    from lightning_gpv.tasks import Target, Task, TaskSample

    def draws(*_: object) -> list[TaskSample]:  # like VQAv2's training_answer: the global random
        image = np.zeros((4, 4, 3), np.uint8)
        words = [f"answer{i}" for i in range(50)]
        return [
            TaskSample(Task.VQA, [image], Target(text=random.choice(words)), question="q?") for _ in range(5)
        ]

    monkeypatch.setattr(build_vocab, "_train_samples", draws)
    vocabularies = []
    for state in (1, 2, 3):
        random.seed(state)
        out = build_vocab.build(tmp_path / f"v{state}", coco_root="unused", tiny=True, seed=0)
        vocabularies.append((out / "vocab.json").read_text())
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]
    other = build_vocab.build(tmp_path / "seed1", coco_root="unused", tiny=True, seed=1)
    assert (other / "vocab.json").read_text() != vocabularies[0]  # the seed does pick the draw
    random.seed(5)
    expected = random.random()
    random.seed(5)
    build_vocab.build(tmp_path / "v4", coco_root="unused", tiny=True, seed=0)
    assert random.random() == expected  # the caller's random state is given back


class _RecordRestored(L.Callback):
    """Copies the step, optimizer and scheduler state as training (re)starts."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.global_step = trainer.global_step
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.scheduler = copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict())


def test_interrupted_fit_resumes_with_the_same_state(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    data, vocab = shapes
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
    ckpt_dir = tmp_path / "ckpt"
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"""
trainer:
  default_root_dir: {tmp_path.as_posix()}
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        dirpath: {ckpt_dir.as_posix()}
        save_last: true
        save_top_k: -1
        every_n_train_steps: 2
data:
  init_args:
    samples_per_epoch: 64
""")
    # The interrupted run: stops at step 4 (checkpoints at steps 2 and 4, last.ckpt = step 4).
    run_lightning_cli(["fit", "-c", str(recipe), "-c", str(extra), "--trainer.max_steps=4"])
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4

    resumed = run_lightning_cli(
        ["-c", str(recipe), "-c", str(extra), "--trainer.max_steps=6"], run=False, overwrite_config=True
    )
    record = _RecordRestored()
    resumed.trainer.callbacks.append(record)
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path="last")

    assert record.global_step == 4
    saved_opt = last["optimizer_states"][0]
    assert record.optimizer["param_groups"] == saved_opt["param_groups"]
    assert record.optimizer["state"].keys() == saved_opt["state"].keys()
    for key, state in saved_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(record.optimizer["state"][key][name]), torch.as_tensor(value))
    saved_sched = last["lr_schedulers"][0]
    for name in ("last_epoch", "_step_count", "base_lrs", "_last_lr"):
        assert record.scheduler[name] == saved_sched[name], name
    assert resumed.trainer.global_step == 6
    assert torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 6


def test_init_weights_loads_the_model_weights_of_a_checkpoint(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, vocab = shapes_and_vocab
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
    common = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    run_lightning_cli(["fit", "-c", str(recipe), "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
                       f"--trainer.default_root_dir={tmp_path / 'a'}", *common])  # fmt: skip
    (ckpt,) = (tmp_path / "a").rglob("last.ckpt")
    cli = run_lightning_cli(["validate", "-c", str(recipe), "--init_weights", str(ckpt),
                             "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path / 'b'}",
                             *common])  # fmt: skip
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    loaded = cli.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)

    # A rerun of the earlier stage leaves a newer checkpoint beside the one a later recipe names.
    rerun = ckpt.parent / "last-v1.ckpt"
    rerun.write_bytes(ckpt.read_bytes())
    os.utime(rerun, (ckpt.stat().st_mtime + 60,) * 2)
    with pytest.warns(UserWarning, match=f"a newer checkpoint of a later run lies beside it \\({rerun}\\)"):
        run_lightning_cli(["validate", "-c", str(recipe), "--init_weights", str(ckpt),
                           "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path / 'c'}",
                           *common])  # fmt: skip

    # --ckpt_path holds the weights: the recipe's --init_weights (a checkpoint that does not exist here, as
    # on a machine that has only the later stage's checkpoint) is not read.
    refcocoplus = tiny_recipe("gpv1_shapes_refcocoplus", data, vocab, tmp_path / "refcocoplus.yaml")
    assert not Path(yaml.safe_load(refcocoplus.read_text())["init_weights"]).exists()
    cli = run_lightning_cli(["validate", "-c", str(refcocoplus), "--ckpt_path", str(ckpt),
                             "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path / 'd'}",
                             *common])  # fmt: skip
    assert all(torch.equal(saved[k], v) for k, v in cli.model.state_dict().items())


def test_init_weights_names_a_missing_or_unreadable_checkpoint(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, vocab = shapes_and_vocab
    # The RefCOCO+ stage names the mixture's last.ckpt, which does not exist before the mixture ran.
    recipe = tiny_recipe("gpv1_shapes_refcocoplus", data, vocab, tmp_path / "refcocoplus.yaml")
    missing = tmp_path / "gpv1" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    other = tmp_path / "other.ckpt"  # another model's weights
    torch.save({"state_dict": {"model.elsewhere.weight": torch.zeros(2)}}, other)
    unfit = f"--init_weights {other}: its weights do not fit the model this recipe builds (missing"
    cases = [([], f"--init_weights {missing}: no such checkpoint"),
             (["--init_weights", str(bad)], f"--init_weights {bad}: not a checkpoint file"),
             (["--init_weights", str(other)], unfit)]  # fmt: skip
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "-c", str(recipe), *extra, f"--trainer.default_root_dir={tmp_path / 'run'}"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("name", ["gpv1_shapes", "vistallm_shapes"])
def test_test_prints_each_metric_once_under_its_own_loader(
    name: str, shapes: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop

    printed: list[list[dict[str, float]]] = []
    monkeypatch.setattr(
        _EvaluationLoop, "_print_results", staticmethod(lambda results, stage: printed.append(results))
    )
    data, vocab = shapes
    recipe = tiny_recipe(name, data, vocab if name == "gpv1_shapes" else None, tmp_path / "recipe.yaml")
    extra = ["--model.init_args.max_new_tokens=8"] if name == "vistallm_shapes" else []
    args = [
        "--trainer.limit_test_batches=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = run_lightning_cli(["test", "-c", str(recipe), *args, *extra])
    (results,) = printed
    names = [loader.dataset.name for loader in cli.trainer.test_dataloaders]
    assert len(results) == len(names) > 1
    seen: dict[str, int] = {}
    for index, result in enumerate(results):
        for key in result:  # the uniform key, without Lightning's /dataloader_idx_N
            assert key not in seen, f"{key} under loaders {seen[key]} and {index}"
            seen[key] = index
            stage, dataset = key.split("/")[:2]
            assert stage == "test" and dataset.split("-")[0] == names[index], key
    tasks = {key.split("/")[2] for key in seen if key.count("/") == 3 and "loss" not in key}
    assert tasks == ({"localization", "classification", "captioning", "vqa", "rec"} if name == "gpv1_shapes"
                     else {"captioning", "vqa", "rec", "res", "grec", "gres"})  # fmt: skip


def test_bad_data_ends_with_a_one_line_error_or_a_traceback_with_debug(
    shapes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from datamodules.errors import DataFormatError

    data, vocab = shapes
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    captions = broken / "coco" / "annotations" / "captions_train2014.json"
    captions.write_text('{"images": [')  # cut short
    recipe = tiny_recipe("gpv1_shapes", broken, vocab, tmp_path / "recipe.yaml")
    root = tmp_path / "run"
    command = ["fit", "-c", str(recipe), f"--trainer.default_root_dir={root}", "--trainer.max_steps=1",
               "--trainer.logger=false", "--trainer.enable_progress_bar=false"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"lightning-gpv: error: {captions}" in err and "Traceback" not in err
    assert captions.read_text() == '{"images": ['  # the user's file is left as it was
    with pytest.raises(DataFormatError, match="captions_train2014.json"):
        main([*command, "--debug"])


def test_a_missing_file_named_by_the_recipe_is_one_line(
    shapes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = shapes
    recipe = tiny_recipe("gpv1_shapes", data, tmp_path / "no_vocab", tmp_path / "recipe.yaml")
    with pytest.raises(SystemExit) as exit_info:  # the model cannot be built: its vocabulary is missing
        main(["fit", "-c", str(recipe), "--trainer.max_steps=1", "--trainer.logger=false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lightning-gpv: error: no answer vocabulary at" in err and "Traceback" not in err


_VISTA, _GPV1 = "vistallm_shapes", "gpv1_shapes"


@pytest.mark.parametrize(
    ("recipe_name", "argument", "message"),
    [
        (_VISTA, "--model.init_args.warmup_ratio=2", "VistaLLMModule: warmup_ratio must be in [0, 1)"),
        (_VISTA, "--model.init_args.image_cache=-1", "image_cache (files kept in memory) must be"),
        (_VISTA, "--model.init_args.config={preset: tiny, num_mask_points: 1}",
         "CoordinateCodec.num_mask_points must be an integer >= 3"),
        (_VISTA, "--model.init_args.config={preset: tiny, bogus: 1}",
         "VistaLLMConfig: unknown field(s) ['bogus']"),
        (_VISTA, "--model.init_args.config=nope", "unknown VistaLLMConfig preset 'nope'"),
        (_GPV1, "--data.init_args.batch_size=0", "MultiTaskDataModule: batch_size must be >= 1"),
        (_GPV1, "--data.init_args.weights=[1, 2]", "MultiTaskDataModule: 2 weights for"),
    ],
)  # fmt: skip
def test_a_bad_argument_value_is_one_line_naming_it(
    shapes: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recipe_name: str,
    argument: str,
    message: str,
) -> None:
    """A value the class's own checks refuse (not jsonargparse's type checks) ends the command with the
    check's message, not jsonargparse's listing of union subtypes after two tracebacks."""
    data, vocab = shapes
    recipe = tiny_recipe(recipe_name, data, vocab if recipe_name.startswith("gpv1") else None,
                         tmp_path / "recipe.yaml")  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(recipe), argument, "--trainer.max_steps=1", "--trainer.logger=false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"lightning-gpv: error: {message}" in err, err[-2000:]
    assert "Traceback" not in err and "Union subtypes" not in err


def test_config_overrides_split_and_merge() -> None:
    from lightning_gpv.cli import merge_config_overrides, split_config_overrides
    from lightning_gpv.errors import InputError

    argv = ["fit", "-c", "r.yaml", "--model.init_args.config.num_bins=32",
            "--model.config.llm.num_layers", "2", "--model.init_args.config.llm.chat_template=null",
            "--trainer.max_steps=1"]  # fmt: skip
    rest, nested = split_config_overrides(argv)
    assert rest == ["fit", "-c", "r.yaml", "--trainer.max_steps=1"]
    assert [keys for _, keys, _ in nested] == [["num_bins"], ["llm", "num_layers"], ["llm", "chat_template"]]
    assert merge_config_overrides("tiny", nested) == {
        "preset": "tiny",
        "num_bins": 32,
        "llm": {"num_layers": 2, "chat_template": None},
    }
    assert merge_config_overrides({"llm": {"lora": {"r": 8}}}, nested[1:2]) == {
        "llm": {"lora": {"r": 8}, "num_layers": 2}
    }
    assert split_config_overrides(["--model.init_args.config=tiny"]) == (
        ["--model.init_args.config=tiny"],
        [],
    )
    with pytest.raises(InputError, match=r"--model.config.num_bins.x: config.num_bins is 64, not a mapping"):
        merge_config_overrides({"num_bins": 64}, split_config_overrides(["--model.config.num_bins.x=1"])[1])
    with pytest.raises(InputError, match="--model.config.llm.num_layers: expected a value"):
        split_config_overrides(["--model.config.llm.num_layers"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["test", "--ckpt_path", "{tmp}/none.ckpt"], "--ckpt_path {tmp}/none.ckpt: no such checkpoint"),
        (["predict", "--ckpt_path", "{tmp}"], "--ckpt_path {tmp}: a folder, not a checkpoint file"),
        (["fit", "--ckpt_path", "{tmp}/none.ckpt"], "--ckpt_path {tmp}/none.ckpt: no such checkpoint"),
        (["test", "--ckpt_path", "{tmp}/photo.jpg"], "--ckpt_path {tmp}/photo.jpg: not a checkpoint file"),
    ],
)
def test_a_command_that_cannot_do_anything_ends_before_building_naming_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    command, *rest = [a.format(tmp=tmp_path) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "-c", str(Path(__file__).parents[1] / "recipes/tiny/gpv1_shapes.yaml"), *rest])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message.format(tmp=tmp_path)}" in err, err[-2000:]
    assert "Traceback" not in err


def test_validate_without_validation_batches_says_so(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    data, vocab = shapes
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
    with pytest.warns(UserWarning, match="validate: the recipe sets trainer.limit_val_batches to 0"):
        run_lightning_cli(["validate", "-c", str(recipe), f"--trainer.default_root_dir={tmp_path}"])


def test_an_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fitt", "-c", "recipe.yaml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'; did you mean 'fit'?" in err
    assert "make-shapes" in err and "export" in err and "predict" in err
