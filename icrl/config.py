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
        set_dotted(out, path, value, f"override {text!r}")
    return out


def set_dotted(data: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    """Set ``data[path[0]][path[1]]...`` to ``value`` in place, making sections as needed (a number
    indexes a list); ``what`` names the setting in errors."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{what}: {part!r} is not an index of a list of {len(node)}")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise ConfigError(f"{what}: {path[depth - 1]!r} is a value, not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


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


# Union members pydantic adds to an error's location ("str", "list[str]", "function-after[...]"):
# not keys of the config.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "tuple", "set"})


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part.startswith("function-"))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate(cls: type[C], data: dict[str, Any], source: str) -> C:
    """Validate ``data`` into ``cls``; errors name ``source`` (a file), the dotted key and value.

    One line per key at fault. A check across fields (a model validator) names its fields in its
    message, so its line shows that message, not the whole section it was given.
    """
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines: dict[str, str] = {}
        messages: dict[str, list[str]] = {}
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"] if not _is_union_tag(p))
            msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            value = e.get("input")
            if e["type"] == "extra_forbidden":
                lines[key] = f"{source}: unknown key {key!r} (value {_short(value)})"
                continue
            if e["type"] == "missing":
                lines[key] = f"{source}: {key}: missing (a required key)"
                continue
            messages.setdefault(key, [])
            if msg not in messages[key]:
                messages[key].append(msg)  # a union: one message per member type
            either = " or ".join(messages[key])
            if isinstance(value, (dict, list)) and e["type"] in ("value_error", "assertion_error"):
                lines[key] = f"{source}: {key or 'top level'}: {either}"
            else:
                lines[key] = f"{source}: {key} = {_short(value)}: {either}"
        raise ConfigError("\n".join(lines.values())) from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = (),
                values: dict[str, tuple[str, Any]] | None = None) -> C:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus dotted overrides.

    ``values``: dotted key -> (flag, value) of command-line flags (``--name`` -> ``name``), set
    after the overrides as they are (not parsed as YAML: ``--name 2024`` is the string "2024")
    and named by their flag in errors.
    """
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    flags = []
    for key, (flag, value) in (values or {}).items():
        set_dotted(data, key.split("."), value, flag)
        if flag not in flags:
            flags.append(flag)
    source = str(path) if path is not None else "<defaults>"
    given = [f"--set {o}" for o in overrides] + flags
    if given:
        source += " (with " + " ".join(given) + ")"
    return validate(cls, data, source)


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
