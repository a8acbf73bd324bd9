"""Checkpoints of both families, built from Python config objects or from the tiny recipes, load with
``torch.load(weights_only=True)`` through ``load_from_checkpoint``, ``--init_weights`` and ``--ckpt_path``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_gpv.cli import GPVLightningCLI, run_lightning_cli  # noqa: E402
from lightning_gpv.demo import tiny_recipe  # noqa: E402
from lightning_gpv.models.gpv1.config import GPV1Config  # noqa: E402
from lightning_gpv.models.vistallm.config import VistaLLMConfig  # noqa: E402
from lightning_gpv.systems.gpv1 import GPV1Module  # noqa: E402
from lightning_gpv.systems.vistallm import VistaLLMModule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

FAMILIES = {"gpv1": ("gpv1_shapes", GPV1Module), "vistallm": ("vistallm_shapes", VistaLLMModule)}
QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread."""


def _python_module(family: str, vocab: Path) -> LightningModule:
    """The recipe's model, built in Python from a config object (not through the CLI)."""
    if family == "gpv1":
        text = {"tokenizer_name_or_path": str(vocab / "vocab.txt"), "vocab_size": 512}
        config = GPV1Config.from_name("tiny", image_size=(96, 96), text=text)
        assert isinstance(config, GPV1Config)
        return GPV1Module(config, vocab_path=str(vocab / "answers"))
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny" / "vistallm_shapes.yaml").read_text())
    config = VistaLLMConfig.resolve(recipe["model"]["init_args"]["config"])  # the recipe's model
    return VistaLLMModule(config, load_weights=False)


def _save(module: LightningModule, path: Path) -> Path:
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def _cli(command: str, recipe: Path, root: Path, *args: str) -> GPVLightningCLI:
    return run_lightning_cli(
        [command, "-c", str(recipe), *args, f"--trainer.default_root_dir={root}", *QUIET]
    )


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpoint_of_a_python_built_module_loads_weights_only(
    family: str, shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, vocab = shapes_and_vocab
    recipe_name, cls = FAMILIES[family]
    module = _python_module(family, vocab)
    ckpt = _save(module, tmp_path / "python.ckpt")

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    config = checkpoint["hyper_parameters"]["config"]
    assert isinstance(config, dict) and type(module.config).from_dict(config) == module.config
    restored = cls.load_from_checkpoint(ckpt, weights_only=True)
    assert restored.config == module.config
    _assert_same_weights(module.state_dict(), restored.state_dict())

    recipe = tiny_recipe(recipe_name, data, vocab if family == "gpv1" else None, tmp_path / "recipe.yaml")
    cli = _cli("validate", recipe, tmp_path / "v", "--init_weights", str(ckpt))
    _assert_same_weights(module.state_dict(), cli.model.state_dict())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpoint_of_a_recipe_run_resumes_and_starts_another_run(
    family: str, shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, vocab = shapes_and_vocab
    recipe_name, cls = FAMILIES[family]
    recipe = tiny_recipe(recipe_name, data, vocab if family == "gpv1" else None, tmp_path / "recipe.yaml")
    first = tmp_path / "first"
    _cli("fit", recipe, first, "--trainer.max_steps=2")
    # Under the run's folder, or the recipe's checkpoint dirpath (the tiny VistaLLM recipe has one, where its
    # stage-2 recipe finds last.ckpt; tiny_recipe puts it beside the copied recipe).
    ckpt = max(tmp_path.rglob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 and isinstance(checkpoint["hyper_parameters"]["config"], dict)

    restored = cls.load_from_checkpoint(ckpt, weights_only=True)
    _assert_same_weights(checkpoint["state_dict"], restored.state_dict())

    resumed = _cli("fit", recipe, tmp_path / "r", "--ckpt_path", str(ckpt), "--trainer.max_steps=3")
    assert resumed.trainer.global_step == 3

    started = _cli("fit", recipe, tmp_path / "s", "--init_weights", str(ckpt), "--trainer.max_steps=1")
    assert started.trainer.global_step == 1  # a new run: the step count starts again


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hparams_yaml_holds_the_config_as_plain_data(
    family: str, shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    module = _python_module(family, shapes_and_vocab[1])
    for hparams in (module.hparams_initial, module.hparams):  # what loggers and checkpoints write
        path = tmp_path / "hparams.yaml"
        save_hparams_to_yaml(path, hparams)
        loaded = yaml.safe_load(path.read_text())
        assert type(module.config).from_dict(loaded["config"]) == module.config


def test_ckpt_path_of_another_family_is_refused_and_flags_win(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, vocab = shapes_and_vocab
    gpv1 = _save(_python_module("gpv1", vocab), tmp_path / "gpv1.ckpt")
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "recipe.yaml")
    with pytest.raises(SystemExit) as exit_info:
        _cli("fit", recipe, tmp_path / "r", "--ckpt_path", str(gpv1), "--trainer.max_steps=1")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "lightning_gpv.systems.gpv1.GPV1Module" in err
        and "lightning_gpv.systems.vistallm.VistaLLMModule" in err
    )
    # A checkpoint of the recipe's class: a resume refuses changed model arguments, naming them...
    first = tmp_path / "first"
    _cli("fit", recipe, first, "--trainer.max_steps=1")
    ckpt = max(tmp_path.rglob("last.ckpt"), key=lambda path: path.stat().st_mtime)  # the recipe saves one
    with pytest.raises(SystemExit) as exit_info:
        _cli("fit", recipe, tmp_path / "s", "--ckpt_path", str(ckpt), "--model.init_args.lr=0.0005")
    assert exit_info.value.code == 2 and "lr=0.0005 (checkpoint: 0.001)" in capsys.readouterr().err
    # ... and resumes with the same ones; evaluation keeps the arguments given (the weights come from it).
    assert (
        _cli(
            "fit", recipe, tmp_path / "t", "--ckpt_path", str(ckpt), "--trainer.max_steps=2"
        ).trainer.global_step
        == 2
    )
    tested = _cli(
        "validate", recipe, tmp_path / "v", "--ckpt_path", str(ckpt), "--model.init_args.max_new_tokens=7"
    )
    assert tested.model.max_new_tokens == 7


def test_an_interrupted_save_keeps_the_previous_checkpoint_and_a_truncated_one_is_named(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from fsspec.implementations.local import LocalFileOpener

    data, vocab = shapes_and_vocab
    module = _python_module("vistallm", vocab)
    path = _save(module, tmp_path / "last.ckpt")
    before = path.read_bytes()

    def full_disk(self: LocalFileOpener, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(LocalFileOpener, "write", full_disk, raising=False)
        with pytest.raises(OSError, match="No space left"):
            _save(module, path)
    assert path.read_bytes() == before  # the earlier checkpoint is whole
    torch.load(path, map_location="cpu", weights_only=True)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(before[: len(before) // 3])
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "recipe.yaml")
    with pytest.raises(SystemExit) as exit_info:
        _cli("fit", recipe, tmp_path / "r", "--ckpt_path", str(truncated))
    assert exit_info.value.code == 2
    assert f"--ckpt_path {truncated}: not a readable checkpoint" in capsys.readouterr().err


def test_ckpt_path_last_resumes_the_previous_run_or_fails(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, vocab = shapes_and_vocab
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "recipe.yaml")
    root = tmp_path / "run"
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    fit = ["fit", "-c", str(recipe), f"--trainer.default_root_dir={root}", *quiet]
    with pytest.raises(SystemExit) as exit_info:  # nothing to resume: an error, not a run from step 0
        run_lightning_cli([*fit, "--ckpt_path", "last", "--trainer.max_steps=1"])
    assert exit_info.value.code == 2 and "--ckpt_path last: no last.ckpt under" in capsys.readouterr().err
    assert not root.exists() or not any(root.rglob("*.ckpt"))
    # The recipe's own logger: the run writes lightning_logs/version_0/checkpoints/last.ckpt and the
    # resume, a new version_1, starts from it.
    run_lightning_cli([*fit, "--trainer.max_steps=2"])
    first = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    before = first.read_bytes()
    resumed = run_lightning_cli([*fit, "--ckpt_path", "last", "--trainer.max_steps=3"])
    assert resumed.trainer.global_step == 3
    assert str(first) in capsys.readouterr().err
    assert first.read_bytes() == before  # the earlier run's checkpoint is untouched
    second = root / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(second, map_location="cpu", weights_only=True)["global_step"] == 3


def test_a_gpv1_checkpoint_of_relative_paths_loads_from_another_working_directory(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe names its vocabulary and tokenizer relative to where it runs; the checkpoint stores them
    absolute, so it loads (and exports) from anywhere, and a resume with the recipe's relative path
    counts it as the same argument."""
    _, vocab = shapes_and_vocab
    monkeypatch.chdir(vocab.parent)
    text = {"tokenizer_name_or_path": f"{vocab.name}/vocab.txt", "vocab_size": 512}
    module = GPV1Module(
        {"preset": "tiny", "image_size": [96, 96], "text": text}, vocab_path=f"{vocab.name}/answers"
    )
    ckpt = _save(module, tmp_path / "relative.ckpt")
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["vocab_path"] == str(vocab / "answers")
    assert hparams["config"]["text"]["tokenizer_name_or_path"] == str(vocab / "vocab.txt")

    monkeypatch.chdir(tmp_path)
    restored = GPV1Module.load_from_checkpoint(ckpt, weights_only=True)
    _assert_same_weights(module.state_dict(), restored.state_dict())
    assert restored.processor.vocab.words == module.processor.vocab.words

    from lightning_gpv.cli import _same_argument

    monkeypatch.chdir(vocab.parent)
    assert _same_argument(f"{vocab.name}/answers", hparams["vocab_path"])
    assert not _same_argument(f"{vocab.name}/vocab.txt", hparams["vocab_path"])


def test_a_vistallm_checkpoint_of_another_answer_format_is_refused(tmp_path: Path) -> None:
    """32 coordinate bins over a 64-bin checkpoint: every weight fits (the tiny tokenizer keeps its size),
    but the coordinate tokens would be read with other meanings."""
    from lightning_gpv.errors import InputError

    ckpt = _save(VistaLLMModule("tiny", load_weights=False), tmp_path / "bins64.ckpt")
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    VistaLLMModule("tiny", load_weights=False).on_load_checkpoint(checkpoint)  # the same format: loads
    other = VistaLLMModule({"preset": "tiny", "num_bins": 32}, load_weights=False)
    with pytest.raises(InputError, match=r"num_bins=32 \(checkpoint: 64\)"):
        other.on_load_checkpoint(checkpoint)
