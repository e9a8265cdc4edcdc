"""The collection recipe (``datasets/*.yaml``), what it resolves to against its suite, and where recipes live."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from icrl.collect.levels import split_levels
from icrl.config import ConfigBase, ConfigError
from icrl.errors import IcrlError


class CollectConfig(ConfigBase):
    """A collection recipe (``datasets/*.yaml``); ``icrl collect`` flags set the same fields."""

    suite: str | None = Field(None, description="Task suite: a name in envs/ ('minihack') or a YAML path.")
    split: str = Field("train", description="Split of the suite whose tasks are played (train | heldout).")
    tasks: list[str] | None = Field(None, description="Subset of the split's tasks; null plays them all.")
    levels: int = Field(10, ge=1, description="Levels per task.")
    first_level: int = Field(0, ge=0, description="Index of the first level within the split (to extend a dataset).")
    episodes_per_level: int = Field(5, ge=1, description="Episodes per (task, level).")
    sticky: float | None = Field(None, ge=0.0, le=1.0, description="Sticky-action probability; null: the suite's.")
    max_steps: int | None = Field(None, ge=1, description="Step limit; null: the suite's (else the task's own).")
    max_attempts: int = Field(5, ge=1, description="Attempts per episode before it is given up (failures dropped).")
    keep_failed: bool = Field(False, description="Store failed episodes too (one attempt each, no retries).")
    workers: int = Field(1, ge=0, description="Worker processes; 0 plays in the calling process.")
    seed: int = Field(0, ge=0, description="Seed of sticky actions and expert tie-breaks.")
    source: Literal["oracle"] = Field("oracle", description="Source recorded with each episode (the expert).")
    out: str | None = Field(None, description="Trajectory store to append to (created if missing).")


@dataclasses.dataclass(frozen=True)
class ResolvedRecipe:
    """What a config means once its suite is read: tasks, level seeds, sticky p, step limit."""

    tasks: tuple[str, ...]
    levels: range
    sticky: float
    max_steps: int | None


def resolve(cfg: CollectConfig, source: str = "collect config") -> ResolvedRecipe:
    """Check ``cfg`` against its suite; ConfigError/IcrlError naming ``source`` and the field."""
    from icrl.envs.suite import load_suite

    if cfg.suite is None:
        raise ConfigError(f"{source}: suite: no task suite given (recipe key `suite` or --suite)")
    if cfg.out is None:
        raise ConfigError(f"{source}: out: no output store given (recipe key `out` or --out)")
    suite = load_suite(cfg.suite)
    available = suite.tasks(cfg.split)
    tasks = available if cfg.tasks is None else cfg.tasks
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise ConfigError(f"{source}: tasks: {unknown} not in split {cfg.split!r} of suite {suite.name!r} "
                          f"({', '.join(available)})")
    if not tasks:
        raise ConfigError(f"{source}: no tasks to play in split {cfg.split!r}")
    try:
        levels = split_levels(cfg.split, cfg.levels, cfg.first_level)
    except IcrlError as err:
        raise ConfigError(f"{source}: {err}") from None
    return ResolvedRecipe(
        tasks=tuple(dict.fromkeys(tasks)), levels=levels,
        sticky=suite.sticky_p if cfg.sticky is None else cfg.sticky,
        max_steps=suite.max_steps if cfg.max_steps is None else cfg.max_steps,
    )


def resolve_recipe_path(path: str | os.PathLike) -> Path:
    """The recipe file at ``path`` (or ``datasets/<name>.yaml`` for a bare name); IcrlError if none."""
    p = Path(path)
    if p.is_file():
        return p
    for candidate in (Path("datasets") / f"{path}.yaml", Path(__file__).resolve().parents[2] / "datasets" / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: no such recipe file (recipes live in datasets/)")
