"""`gauntlet config --explain`: every setting with its value, its docstring and where it came from.

One line per field, `section.field = value  # docstring`, the value written as in a TOML file.
A value that differs from its preset's gets `[<preset>: <preset value>]`, and, when the layers
are known (`traced_config`), the source that set it: a file, an environment variable or `--set`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gauntlet.config import ENV_PREFIX, GauntletConfig, config_sources, load_config, resolve


def traced_config(path: str | Path | None = None, *, preset: str | None = None,
                  overrides: Iterable[str] | Mapping[str, Any] = (),
                  environ: Mapping[str, str] | None = None) -> tuple[GauntletConfig, dict[str, str]]:
    """`load_config`'s result and, per `section.field`, the layer that set it (absent: a default)."""
    layers = config_sources(path, preset=preset, overrides=overrides, environ=environ)
    cfg = resolve(layers)  # which also tells the preset layer the preset chosen above it
    origins: dict[str, str] = {}
    for name, source in reversed(layers):  # lowest first, so higher layers overwrite
        for key in _flatten(source()):
            env_name = ENV_PREFIX + key.upper().replace(".", "__")
            origins[key] = f"environment {env_name}" if name == "environment" else name
    return cfg, origins


def explain_config(cfg: GauntletConfig, origins: Mapping[str, str] | None = None) -> str:
    """Every field as `section.field = value  # docstring`, marked where it differs from the preset."""
    reference = _flatten(load_config(preset=cfg.preset, environ={}).model_dump())
    lines = [f"# preset {cfg.preset}; [{cfg.preset}: x] marks a value that differs from the preset's x"]
    for key, value, doc in _fields(cfg):
        mark = ""
        if value != reference[key]:
            source = (origins or {}).get(key)
            mark = f" [{cfg.preset}: {_toml(reference[key])}{f'; from {source}' if source else ''}]"
        lines.append(f"{key} = {_toml(value)}  # {doc}{mark}")
    return "\n".join(lines) + "\n"


def _fields(model: BaseModel, prefix: str = "") -> list[tuple[str, Any, str]]:
    out = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out += _fields(value, f"{prefix}{name}.")
        else:
            out.append((prefix + name, value, " ".join((info.description or "").split())))
    return out


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)
