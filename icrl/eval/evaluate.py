"""The few-shot evaluation protocol (PAPER.md): for each held-out task and level, k demos of that
level in the context, ``episodes`` rollouts on it, for every method, on the same levels.

    rows = evaluate(cfg, methods, demo_store)      # one row per episode -> results.json

Levels are those the demo store holds for the task (held-out seeds, ``icrl.collect.run``), the
first ``levels`` of them; demos of k shots are the level's episodes 0 .. k-1. A method is a
``Policy`` with the shots it is played at: the in-context model and Hashmap at every k; BC-0 at 0
and BC-1 at 1; random and expert once (k = 0: they ignore demos). Every method meets the same
levels, and episode i of a level uses sticky-action seed (seed, task, level, k, i) whatever the
method, so methods are compared on the same randomness.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import Field

from icrl.config import ConfigBase
from icrl.store.reader import TrajectoryStore
from icrl.envs.registry import make_vector_env
from icrl.errors import IcrlError
from icrl.eval.policies import Policy
from icrl.eval.rollout import run_level


class EvalConfig(ConfigBase):
    """What to evaluate on, and how."""

    suite: str = Field("minihack", description="Task suite (name in envs/ or YAML path).")
    split: str = Field("heldout", description="Split of the suite to evaluate on.")
    tasks: list[str] | None = Field(None, description="Tasks to evaluate (None: the split's); any registered task.")
    demos: str = Field(description="Trajectory store with the held-out demos (e.g. data/minihack-heldout).")
    shots: list[int] = Field([0, 1, 3, 5, 7], description="Numbers of demos k in the context.")
    levels: int = Field(20, ge=1, description="Levels per task (the first of the demo store's).")
    episodes: int = Field(5, ge=1, description="Rollouts per level and k (batched envs).")
    sticky: float = Field(0.2, ge=0.0, le=1.0, description="Sticky-action probability (study: 0.2).")
    max_steps: int | None = Field(None, ge=1, description="Step limit per episode (None: the env's).")
    seed: int = Field(0, description="Seed of sticky actions and sampling.")


@dataclasses.dataclass
class Method:
    """A policy and the numbers of demos it is played with (None: every configured k)."""

    policy: Policy
    shots: Sequence[int] | None = None


def episode_seed(seed: int, task: str, level: int, k: int) -> int:
    """Seed of the sticky actions of the rollouts of (task, level, k): the same for every method."""
    return int(np.random.SeedSequence([seed, zlib.crc32(task.encode()), level, k]).generate_state(1)[0] >> 1)


def evaluate(cfg: EvalConfig, tasks: Sequence[str], methods: dict[str, Method], demo_store: TrajectoryStore,
             on_level: Callable[[str, int, int, str, list[dict]], None] = lambda *a: None) -> list[dict]:
    """Play every method on every (task, level, k); returns one row per episode."""
    rows: list[dict] = []
    extra = tuple(sorted({k for m in methods.values() for k in m.policy.extra_keys}))
    for task in tasks:
        levels = sorted(demo_store.levels(task))[: cfg.levels]
        if not levels:
            raise IcrlError(f"demo store {demo_store.root} has no episodes of task {task!r}; "
                            f"it has {demo_store.tasks()}")
        for level in levels:
            refs = sorted(demo_store.episodes_of(task, level), key=lambda r: r.episode)
            demos = [demo_store.read(r) for r in refs]
            for name, method in methods.items():
                for k in (method.shots if method.shots is not None else cfg.shots):
                    if k > len(demos):
                        raise IcrlError(f"{task} level {level}: {k} demos asked, the demo store has "
                                        f"{len(demos)}; collect more episodes per level or lower --shots")
                    seed = episode_seed(cfg.seed, task, level, k)
                    with make_vector_env(task, cfg.episodes, sticky_p=cfg.sticky, seed=seed,
                                         max_steps=cfg.max_steps, extra_keys=extra) as venv:
                        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
                        records = run_level(venv, method.policy, level, demos[:k], rng, cfg.max_steps)
                    new = [{"task": task, "level": int(level), "k": int(k), "method": name, "episode": i,
                            "sticky": cfg.sticky, **r} for i, r in enumerate(records)]
                    rows += new
                    on_level(task, level, k, name, new)
    return rows
