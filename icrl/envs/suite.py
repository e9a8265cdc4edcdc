"""Task suites: YAML files in ``envs/`` that list a domain's tasks by split (train / heldout)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from icrl.config import ConfigBase, ConfigError, load_config
from icrl.errors import IcrlError

REPO_ENVS_DIR = Path(__file__).resolve().parents[2] / "envs"


class Suite(ConfigBase):
    """A named list of tasks per split, with the defaults their envs are made with."""

    name: str = Field(description="Suite name, e.g. 'minihack'.")
    domain: Literal["nethack", "procgen"] = Field(description="Domain shared by every task.")
    sticky_p: float = Field(0.0, ge=0.0, le=1.0, description="Default sticky-action probability.")
    max_steps: int | None = Field(None, ge=1, description="Time limit; null keeps the domain default.")
    distribution_mode: Literal["easy", "hard"] = Field("easy", description="Procgen difficulty.")
    splits: dict[str, list[str]] = Field(description="Split name -> task names.")

    def tasks(self, split: str | None = None) -> list[str]:
        """Tasks of one split, or of all splits (in file order) when ``split`` is None."""
        if split is None:
            return [t for tasks in self.splits.values() for t in tasks]
        if split not in self.splits:
            raise IcrlError(f"suite {self.name!r} has no split {split!r}; it has {sorted(self.splits)}")
        return list(self.splits[split])


def suite_paths() -> list[Path]:
    """The suites shipped in the repository's ``envs/`` folder."""
    return sorted(REPO_ENVS_DIR.glob("*.yaml"))


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A suite file from a path, or from a name of a suite in ``envs/`` ("minihack")."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (Path("envs") / f"{name_or_path}.yaml", REPO_ENVS_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    names = ", ".join(p.stem for p in suite_paths())
    raise IcrlError(f"no suite file {str(name_or_path)!r}; suites in envs/: {names}")


def load_suite(name_or_path: str | Path, overrides: list[str] = ()) -> Suite:
    """Load and check a suite: every task must be known, of the suite's domain, in one split only.

    ``overrides`` are dotted ``key=value`` settings (``sticky_p=0.2``) applied over the file.
    """
    from icrl.envs.registry import UnknownTaskError, domain_of

    path = resolve_suite_path(name_or_path)
    suite = load_config(Suite, path, overrides)
    seen: dict[str, str] = {}
    for split, tasks in suite.splits.items():
        for task in tasks:
            try:
                domain = domain_of(task)
            except UnknownTaskError as err:
                raise ConfigError(f"{path}: splits.{split}: {err}") from None
            if domain != suite.domain:
                raise ConfigError(f"{path}: splits.{split}: task {task!r} is {domain}, suite is {suite.domain}")
            if task in seen:
                raise ConfigError(f"{path}: task {task!r} is in both splits {seen[task]!r} and {split!r}")
            seen[task] = split
    return suite
