"""Every recipe parses with the CLI's parser (no model built, no weights loaded); the tiny recipes run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_gpv.cli import GPVLightningCLI, run_lightning_cli  # noqa: E402
from lightning_gpv.demo import tiny_recipe  # noqa: E402
from lightning_gpv.metrics.evaluation import flatten_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


class _ParseOnlyCLI(GPVLightningCLI):
    """Parses and validates a recipe (class paths resolved, arguments type-checked), instantiates nothing."""

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass

    def _parse_ckpt_path(self) -> None:
        pass  # a later stage's recipe resumes an earlier stage's checkpoint, not written here


def test_recipes_exist() -> None:
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    assert {
        "tiny/gpv1_shapes.yaml",
        "tiny/gpv1_shapes_refcocoplus.yaml",
        "tiny/vistallm_shapes.yaml",
        "tiny/vistallm_shapes_stage2.yaml",
        "gpv1/coco_original.yaml",
        "gpv1/coco_sce_stage1.yaml",
        "gpv1/coco_sce_stage2.yaml",
        "gpv1/refcocoplus_finetune.yaml",
        "vistallm/stage1_single_image.yaml",
        "vistallm/stage2_multi_image.yaml",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_recipe_parses(recipe: Path) -> None:
    text = recipe.read_text(encoding="utf-8")
    assert text.startswith("#") and "lightning-gpv fit -c recipes/" in text.split("\nseed_everything")[0]
    cli = _ParseOnlyCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                        subclass_mode_data=True, args=["fit", "-c", str(recipe)])  # fmt: skip
    config = cli.config["fit"]
    assert config.model.class_path.startswith("lightning_gpv.systems.")
    assert config.data.class_path.startswith("datamodules.")


def test_print_config_of_the_tiny_recipe() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "lightning_gpv.cli",
        "fit",
        "-c",
        "recipes/tiny/gpv1_shapes.yaml",
        "--print_config",
    ]
    out = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    assert "class_path: lightning_gpv.systems.gpv1.GPV1Module" in out
    assert "vocab_path: data/shapesworld/gpv1_vocab/answers" in out


@pytest.mark.usefixtures("one_thread")
def test_tiny_gpv1_recipe_fast_dev_run(shapes_and_vocab: tuple[Path, Path], tmp_path: Path) -> None:
    data, vocab = shapes_and_vocab
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "gpv1.yaml")
    cli = run_lightning_cli(
        ["fit", "-c", str(recipe), "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path}"]
    )
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.logged_metrics["train/loss"])


@pytest.mark.usefixtures("one_thread")
def test_tiny_vistallm_recipe_trains(shapes_and_vocab: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = shapes_and_vocab
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "vistallm.yaml")
    args = ["fit", "-c", str(recipe), "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
            "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    cli = run_lightning_cli(args)
    assert cli.trainer.global_step == 2


@pytest.mark.usefixtures("one_thread")
def test_tiny_vistallm_recipe_fast_dev_run(shapes_and_vocab: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = shapes_and_vocab
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "vistallm.yaml")
    cli = run_lightning_cli(
        ["fit", "-c", str(recipe), "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path}"]
    )
    assert cli.trainer.global_step == 2
    # Six single-image loaders, each metric logged once under its own loader and data set.
    logged = flatten_results([cli.trainer.logged_metrics])
    assert math.isfinite(logged["val/coco.val2014/loss"]) and "val/coco.val2014/captioning/cider" in logged
    assert "val/refcoco_unc.val-rec/rec/acc@0.5" in logged and "val/grefcoco.val-gres/gres/gIoU" in logged
    assert not any("nlvr2" in key for key in logged)  # a multi-image task: stage 2


@pytest.mark.usefixtures("one_thread")
def test_tiny_vistallm_stage_2_starts_from_stage_1_and_trains_only_the_tokenizer(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = shapes_and_vocab
    short = ["--trainer.max_steps=2", "--trainer.logger=false", "--data.init_args.samples_per_epoch=32"]
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "s1.yaml")
    first = run_lightning_cli(
        ["fit", "-c", str(recipe), *short, f"--trainer.default_root_dir={tmp_path / 's1'}"]
    )
    stage1_ckpt = tmp_path / "vistallm" / "checkpoints" / "last.ckpt"
    assert stage1_ckpt.is_file()  # the recipe's dirpath, moved next to the copied recipe
    recipe = tiny_recipe("vistallm_shapes_stage2", data, None, tmp_path / "s2.yaml")
    assert f"init_weights: {stage1_ckpt.as_posix()}" in recipe.read_text()
    second = run_lightning_cli(
        ["fit", "-c", str(recipe), *short, f"--trainer.default_root_dir={tmp_path / 's2'}"]
    )
    assert second.model.stage == 2 and second.trainer.global_step == 2
    before = torch.load(stage1_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    after = second.model.state_dict()
    for part, changes in (("model.llm.", False), ("model.vision.", False), ("model.tokenizer.", True)):
        names = [k for k in before if k.startswith(part)]
        assert names, part
        assert any(not torch.equal(before[k], after[k]) for k in names) is changes, part
    kinds = [type(module).__name__ for module in second.datamodule.datamodules]
    assert kinds == [
        "Nlvr2DataModule",
        "CosegDataModule",
        "AttCosegDataModule",
        "RefCocoDataModule",
        "RefCocoDataModule",
    ]  # fmt: skip  (the multi-image tasks, REC and RES replayed)
    assert first.model.stage == 1


@pytest.mark.usefixtures("one_thread")
def test_tiny_gpv1_refcocoplus_starts_from_the_mixture_and_trains_the_query_encoder(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    data, vocab = shapes_and_vocab
    short = ["--trainer.max_steps=2", "--data.init_args.samples_per_epoch=32"]
    recipe = tiny_recipe("gpv1_shapes", data, vocab, tmp_path / "mixture.yaml")
    first = run_lightning_cli(
        ["fit", "-c", str(recipe), *short, f"--trainer.default_root_dir={tmp_path / 'gpv1'}"]
    )
    mixture_ckpt = tmp_path / "gpv1" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert first.trainer.checkpoint_callback.last_model_path == str(mixture_ckpt)
    recipe = tiny_recipe("gpv1_shapes_refcocoplus", data, vocab, tmp_path / "refcocoplus.yaml")
    assert f"init_weights: {mixture_ckpt.as_posix()}" in recipe.read_text()
    second = run_lightning_cli(
        ["fit", "-c", str(recipe), *short, f"--trainer.default_root_dir={tmp_path / 'refcocoplus'}"]
    )
    assert second.trainer.global_step == 2
    before = torch.load(mixture_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    after = second.model.state_dict()
    # The mixture's weights, then trained: the query encoder (frozen in the mixture) and DETR (unfrozen from
    # the first step) change, the ResNet stem GPV-1 always keeps frozen does not.
    bert = "model.query_encoder.bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(before[bert], first.model.state_dict()[bert])  # frozen in the mixture
    assert not torch.equal(before[bert], after[bert])
    detr = [k for k in before if k.startswith("model.visual.detr.") and "encoder.layers" in k]
    assert detr and any(not torch.equal(before[k], after[k]) for k in detr)
    stem = [k for k in before if "embedder.embedder.convolution" in k]
    assert stem and all(torch.equal(before[k], after[k]) for k in stem)
    assert [type(m).__name__ for m in second.datamodule.datamodules] == ["RefCocoDataModule"]


def test_the_tiny_recipe_loads_the_pretrained_encoder_unless_told_not_to(
    shapes_and_vocab: tuple[Path, Path], tmp_path: Path
) -> None:
    from lightning_gpv.models import shipped
    from lightning_gpv.models.vistallm.config import TINY_VISION_WEIGHTS

    data, _ = shapes_and_vocab
    recipe = tiny_recipe("vistallm_shapes", data, None, tmp_path / "vistallm.yaml")
    stored = shipped.read_part(shipped.resolve(TINY_VISION_WEIGHTS), shipped.ENCODER_PREFIX)
    key = "trunk.patch_embed.proj.weight"
    pretrained = run_lightning_cli(["-c", str(recipe)], run=False).model.model.vision.state_dict()[key]
    scratch = run_lightning_cli(
        ["-c", str(recipe), "--model.init_args.config.preset=tiny_scratch"], run=False
    )
    assert torch.equal(pretrained, stored[key])
    assert not torch.equal(scratch.model.model.vision.state_dict()[key], stored[key])
    assert scratch.model.model.config.vision.checkpoint is None


def test_a_dotted_override_below_config_merges_into_the_recipes_mapping() -> None:
    """``--model.init_args.config.visual.backbone_layer_type=basic`` keeps the recipe's other ``visual`` keys
    (its pretrained DETR); values are typed as YAML, also with the value as a separate argument."""
    args = ["fit", "-c", "recipes/tiny/gpv1_shapes.yaml",
            "--model.init_args.config.visual.backbone_layer_type=basic",
            "--model.config.visual.num_queries", "5"]  # fmt: skip
    cli = _ParseOnlyCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                        subclass_mode_data=True, args=args)  # fmt: skip
    config = cli.config["fit"].model.init_args.config
    assert config["preset"] == "tiny" and config["image_size"] == [96, 96]
    assert config["visual"] == {
        "checkpoint": "shapes_detr_tiny.safetensors", "backbone_layer_type": "basic", "num_queries": 5
    }  # fmt: skip
    args = ["fit", "-c", "recipes/tiny/vistallm_shapes.yaml", "--model.init_args.config.llm.lora.r=4"]
    cli = _ParseOnlyCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                        subclass_mode_data=True, args=args)  # fmt: skip
    assert cli.config["fit"].model.init_args.config == {
        "preset": "tiny",
        "llm": {"num_layers": 4, "lora": {"r": 4}},
    }
