"""Model folders: where a saved model lives, by local path or by hub name.

Every family saves itself the same way (``save_pretrained(dir)`` of ``huggingface_hub.ModelHubMixin``):
``config.json`` (``{"family": ..., "config": <the family's config as plain data>}``), the weights as
``model.safetensors``, and the processor's files (tokenizers, vocabularies) in sub-folders. Paths inside a
saved config are relative to the folder, so a folder can be moved, shared or pushed to the hub, and loads
with ``HF_HUB_OFFLINE=1`` when it (or the hub cache) is on disk and none of the base models is.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, ModelHubMixin, snapshot_download
from huggingface_hub.utils import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    validate_repo_id,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
"""Files that make a folder a model with weights rather than an architecture only."""


MODEL_CARD = """---
{{ card_data }}
---

# {{ model_class }}

A {{ model_class }} model folder written by lightning-gpv: `config.json` (the model's configuration as plain
data), `model.safetensors` (every weight), the sub-models' architectures, and the processor's files when a
system or `lightning-gpv export` wrote it. It loads offline, without the base models:

```python
from lightning_gpv import Predictor

predictor = Predictor.from_pretrained("THIS_FOLDER_OR_REPOSITORY")
answer = predictor("photo.jpg", "vqa", "What color is the car?")
```

or, for the model alone, `{{ model_import }}.from_pretrained("THIS_FOLDER_OR_REPOSITORY")`.
"""
"""The README.md that ``save_pretrained`` writes beside the weights (huggingface_hub's default says the model
was pushed with its PyTorch mixin, with placeholders)."""


class SavedFolderMixin(ModelHubMixin, library_name="lightning-gpv", model_card_template=MODEL_CARD):
    """huggingface_hub's mixin for a family's model: ``save_pretrained`` (the family's ``_save_pretrained``),
    ``push_to_hub``, and ``from_pretrained(name_or_path, map_location=..., dtype=...)``, which finds the
    folder (local, or the hub's snapshot) and hands it to the family's ``_load_folder``."""

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """The folder's README.md: :data:`MODEL_CARD` for this model class."""
        cls = type(self)
        names = {"model_class": cls.__name__, "model_import": f"{cls.__module__}.{cls.__qualname__}"}
        return super().generate_model_card(*args, **{**names, **kwargs})

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        dtype: torch.dtype | None = None,
        **model_kwargs: object,
    ) -> Any:
        path = local_folder(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                            local_files_only=local_files_only, token=token)  # fmt: skip
        return cls._load_folder(path).to(device=map_location, dtype=dtype)

    @classmethod
    def _load_folder(cls, path: Path) -> Any:
        """The model saved in ``path`` (on the CPU, float32)."""
        raise NotImplementedError

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Refused: the model alone lacks its processor's files (tokenizers, answer words), so the uploaded
        repository would not load. Push the system (``module.push_to_hub(repo_id)``), or upload a folder
        written by ``lightning-gpv export`` with ``huggingface_hub.upload_folder``."""
        raise ValueError(
            f"{type(self).__name__}.push_to_hub would upload the weights without the tokenizers; use "
            "the system's push_to_hub (VistaLLMModule / GPV1Module) or upload an exported folder"
        )


def push_folder(
    write: Callable[[Path], object],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload lightning-gpv model",
) -> str:
    """Write a model folder with ``write(folder)`` into a temporary folder and upload it to the hub
    repository ``repo_id`` (created when missing); returns the commit's URL."""
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        write(folder)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return str(info)


def shareable(path: str | Path) -> None:
    """Give a file safetensors wrote (mode 0600) the mode of any file this process creates (0666 less the
    umask): a model folder is meant to be shared, pushed and read by other users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def absolute_if_local(name_or_path: str | None) -> str | None:
    """``name_or_path`` as an absolute path when it names a local file or folder; a hub name (or a path
    that is not there) as it is. A checkpoint's hyper-parameters then load from any working directory."""
    if name_or_path is None:
        return None
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def local_folder(name_or_path: str | Path, **hub_kwargs: Any) -> Path:
    """The folder of a saved model: ``name_or_path`` itself when it is a directory, else the hub snapshot
    of that repository (downloaded, or read from the cache when offline).

    Args:
        name_or_path: A local folder or a hub repository id.
        hub_kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; a saved model is a folder (save_pretrained writes one)")
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        # A path that is not there: the hub's own message would call it a malformed repository id.
        message = f"{path}: no such folder (nor a hub repository id 'namespace/name')"
        raise FileNotFoundError(message) from None
    kwargs = {k: v for k, v in hub_kwargs.items() if v is not None}
    try:
        return Path(snapshot_download(str(name_or_path), **kwargs))
    except (LocalEntryNotFoundError, RepositoryNotFoundError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise FileNotFoundError(
            f"{path}: no such folder, and no hub repository of that name could be read ({first})"
        ) from err


def architecture_only(name_or_path: str | None) -> Path | None:
    """``name_or_path`` as a folder when it holds a transformers ``config.json`` and no weights: a saved
    model keeps its sub-models' architectures that way (their weights are in its own weights file)."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        return None
    weights = [p for suffix in _WEIGHT_SUFFIXES for p in path.glob(f"*{suffix}")]
    return None if weights else path


def read_folder_config(folder: Path, family: str) -> dict[str, Any]:
    """The ``config`` entry of ``folder/config.json``, checked to belong to ``family``."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a folder written by save_pretrained")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    found = data.get("family") if isinstance(data, dict) else None
    if found != family:
        raise ValueError(f"{path}: a saved {found or 'unknown'} model, not a {family} one")
    if not isinstance(data.get("config"), dict):
        raise ValueError(f"{path}: no 'config' mapping")
    return data["config"]


def write_folder_config(folder: Path, family: str, config: dict[str, Any]) -> None:
    """Write ``folder/config.json`` for ``family``."""
    text = json.dumps({"family": family, "config": config}, indent=2, sort_keys=True)
    (folder / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")


def saved_model_folder(config: object, family: str | None) -> Path | None:
    """``config`` as a saved model folder of ``family`` (of any family: ``None``) when it names one (a local
    folder whose ``config.json`` says so), else ``None`` (a preset name, a mapping or a config object)."""
    if not isinstance(config, (str, Path)):
        return None
    path = Path(config).expanduser()
    if not (path / CONFIG_FILE).is_file():
        return None
    found = family_of(path)
    if family is not None and found != family:
        raise ValueError(f"{path} holds a saved {found} model, not a {family} one")
    return path


def inside(folder: Path, name: str | None) -> str | None:
    """``folder/name`` when that exists (a saved config keeps names relative to its folder), else ``name``."""
    if name is None or Path(name).is_absolute():
        return name
    candidate = folder / name
    return str(candidate) if candidate.exists() else name


def write_settings(path: Path, settings: dict[str, Any]) -> None:
    """Write a small JSON settings file of a saved folder (a processor's)."""
    path.write_text(json.dumps(settings, sort_keys=True) + "\n", encoding="utf-8")


def read_settings(path: Path) -> dict[str, Any]:
    """A settings file written by :func:`write_settings` (none when absent)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def family_of(folder: Path) -> str:
    """The family named by ``folder/config.json`` (``"gpv1"`` or ``"vistallm"``)."""
    path = folder / CONFIG_FILE
    try:
        family = json.loads(path.read_text(encoding="utf-8")).get("family")
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path}: not a folder written by save_pretrained ({err})") from err
    if not isinstance(family, str):
        raise ValueError(f"{path}: no 'family' entry")
    return family


def torch_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a file of ``torch.save`` (``None`` when it may be one): it writes a zip archive
    (a pickle in releases before 1.6). Asked before ``torch.load``, whose errors on other files (a JPEG, a
    text file) speak of pickles, memory maps and ``weights_only=False`` instead of the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:  # missing, a folder, unreadable: torch.load's own error names it
        return None
    # A zip archive starts with "PK" (a truncated one too: torch.load names what is missing); a pickle of
    # protocol 2 or later with its PROTO opcode.
    if head == b"PK" or head[:1] == b"\x80":
        return None
    return "not a checkpoint file (torch.save writes a zip archive, and this is none)"
