"""Model folders on the hub: a system uploads its whole folder (weights, config and the processor's files),
which then loads by name; a bare model refuses to upload a folder that could not load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import hub_mixin

from lightning_gpv.models import hub
from lightning_gpv.models.vistallm import VistaLLM, VistaLLMProcessor
from lightning_gpv.systems.vistallm import VistaLLMModule


class _FakeHub:
    """Stands in for HfApi: keeps each uploaded folder as the repository's snapshot."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[tuple[str, bool | None]] = []

    def __call__(self, token: str | None = None) -> _FakeHub:
        return self

    def create_repo(self, repo_id: str, *, private: bool | None, exist_ok: bool) -> None:
        self.created.append((repo_id, private))

    def upload_folder(self, *, repo_id: str, folder_path: Path, commit_message: str) -> str:
        shutil.copytree(folder_path, self.root / repo_id)
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_a_pushed_system_loads_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeHub(tmp_path / "hub")
    monkeypatch.setattr(hub, "HfApi", fake)
    monkeypatch.setattr(hub, "snapshot_download", lambda repo_id, **kwargs: str(fake.root / repo_id))
    monkeypatch.setattr(  # the mixin reads config.json first
        hub_mixin, "hf_hub_download", lambda repo_id, filename, **kwargs: str(fake.root / repo_id / filename)
    )
    torch.manual_seed(0)
    module = VistaLLMModule("tiny", load_weights=False)
    url = module.push_to_hub("someone/tiny-vistallm", private=True)
    assert url.endswith("/commit/0") and fake.created == [("someone/tiny-vistallm", True)]
    model = VistaLLM.from_pretrained("someone/tiny-vistallm")
    processor = VistaLLMProcessor.from_pretrained("someone/tiny-vistallm")
    assert processor.tokenizer.get_vocab() == module.processor.tokenizer.get_vocab()
    expected, got = module.model.state_dict(), model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_a_bare_model_does_not_push_a_folder_without_its_tokenizers() -> None:
    module = VistaLLMModule("tiny", load_weights=False)
    with pytest.raises(ValueError, match="without the tokenizers"):
        module.model.push_to_hub("someone/broken")


def test_a_folder_that_is_not_there_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_mixin.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'}: no such folder \\(nor a hub"):
        hub.local_folder(tmp_path / "missing")
    # A relative path looks like a repository id: the hub is asked (offline here), then the folder named.
    with pytest.raises(FileNotFoundError, match="outputs/exportt: no such folder, and no hub repository"):
        hub.local_folder("outputs/exportt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        hub.local_folder(tmp_path / "file")


def test_a_saved_folder_is_readable_by_others_and_says_how_to_load_it(tmp_path: Path) -> None:
    import os
    import stat

    module = VistaLLMModule("tiny", load_weights=False)
    module.save_pretrained(tmp_path / "folder")
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "folder" / "model.safetensors").stat().st_mode)
    assert mode == 0o666 & ~umask  # safetensors itself writes 0600
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "library_name: lightning-gpv" in card and "# VistaLLM" in card
    assert "lightning_gpv.models.vistallm.model.VistaLLM.from_pretrained" in card
    assert "pushed to the Hub" not in card and "More Information Needed" not in card
