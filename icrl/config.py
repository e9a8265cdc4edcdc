"""Typed configs: pydantic v2 models loaded from YAML, with dotted command-line overrides.

Every subsystem declares its own section as a ``ConfigBase`` subclass (fields with defaults and a
one-line description); ``load_config`` reads a YAML file into any such class, applies
``key.sub=value`` overrides, and turns every validation failure into a ``ConfigError`` that names
the file, the dotted key and the offending value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from icrl.errors import IcrlError

C = TypeVar("C", bound="ConfigBase")


class ConfigError(IcrlError, ValueError):
    """A config file, key or value that cannot be used. The message names all three."""


class ConfigBase(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"train.lr=3e-4"`` into (["train", "lr"], 3e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        # PyYAML (YAML 1.1) reads "3e-4" as a string; numbers are tried first so it is a float.
        value = _number(raw.strip())
        if value is None:
            value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML ({err})") from None
    return key.split("."), value


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with every ``key.sub=value`` override set.

    A number in the key indexes a list (``data.sources.0.path=...``).
    """
    out = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = out
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {part!r} is not an index of a list of {len(node)}")
                key: Any = int(part)
            elif isinstance(node, dict):
                key = part
            else:
                raise ConfigError(f"override {text!r}: {path[depth - 1]!r} is a value, not a section")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a ConfigError naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def validate(cls: type[C], data: dict[str, Any], source: str) -> C:
    """Validate ``data`` into ``cls``; errors name ``source`` (a file), the dotted key and value."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            if e["type"] == "extra_forbidden":
                lines.append(f"{source}: unknown key {key!r} (value {e['input']!r})")
            else:
                lines.append(f"{source}: {key} = {e.get('input')!r}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus dotted overrides."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source += " (with --set " + " ".join(overrides) + ")"
    return validate(cls, apply_overrides(data, list(overrides)), source)


def dump_config(config: ConfigBase) -> str:
    """The resolved config as YAML text (round-trips through ``load_config``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: ConfigBase, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dump_config(config))
    tmp.replace(path)
