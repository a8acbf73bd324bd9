"""Presets by name and configs as plain data, for the top-level config dataclass of every model family.

A config is given to a system (and written in a recipe) in one of three forms: the dataclass itself, a
preset name (``"tiny"``), or a mapping of fields, optionally naming the preset they override
(``{"preset": "tiny", "image_size": [96, 96]}``); a mapping given for a nested part changes only the
fields it names. Checkpoints store :meth:`NamedPresets.to_dict`: plain data that
``torch.load(weights_only=True)`` and ``yaml.safe_load`` read back into the same dataclass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields, is_dataclass, replace
from typing import Any, TypeVar

from lightning_gpv.errors import InputError

PRESET_KEY = "preset"
"""Key of a config mapping that names the preset its other keys override."""

T = TypeVar("T")


def check_fields(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Raise an ``InputError`` (a ``ValueError``) naming the keys of ``data`` that are not fields of the
    dataclass ``cls``."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}")


def override(config: T, overrides: Mapping[str, Any]) -> T:
    """``dataclasses.replace`` that merges a mapping given for a nested dataclass part into that part."""
    where = type(config).__name__
    check_fields(type(config), overrides, where)
    merged = {}
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, Mapping) and is_dataclass(current):
            check_fields(type(current), value, f"{where}.{key}")
            value = replace(current, **value)
        merged[key] = value
    return replace(config, **merged)  # type: ignore[type-var]


class NamedPresets:
    """Mixin of a family's top-level config dataclass: :meth:`from_name`, :meth:`from_dict`,
    :meth:`resolve` and :meth:`to_dict`. The class lists its presets in :meth:`presets`; the dataclass's
    defaults are its default model."""

    @classmethod
    def presets(cls: type[T]) -> dict[str, Callable[[], T]]:
        """Preset name -> the function that builds it."""
        raise NotImplementedError

    @classmethod
    def from_name(cls: type[T], name: str, **overrides: Any) -> T:
        """The preset ``name`` with ``overrides`` (fields; a mapping for a part changes only its named
        fields)."""
        presets = cls.presets()  # type: ignore[attr-defined]
        if name not in presets:
            raise InputError(f"unknown {cls.__name__} preset {name!r}; the presets are {sorted(presets)}")
        return override(presets[name](), overrides)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """The config a mapping describes: fields (as :meth:`to_dict` writes them; missing ones keep the
        defaults), or a ``preset`` name with the fields that override it. Unknown keys raise a
        ``ValueError`` naming them."""
        data = dict(data)
        preset = data.pop(PRESET_KEY, None)
        if preset is not None:
            return cls.from_name(str(preset), **data)  # type: ignore[attr-defined]
        return override(cls(), data)

    @classmethod
    def resolve(cls: type[T], config: Any) -> T:
        """A config from what a system or recipe is given: the config itself, a preset name, a mapping
        (:meth:`from_dict`), or ``None`` for the defaults (the same as ``{}``)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, str):
            return cls.from_name(config)  # type: ignore[attr-defined]
        if isinstance(config, Mapping):
            return cls.from_dict(config)  # type: ignore[attr-defined]
        raise TypeError(
            f"config must be a {cls.__name__}, a preset name or a mapping, got {type(config).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (lists for tuples): what checkpoints and ``hparams.yaml`` store."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]
