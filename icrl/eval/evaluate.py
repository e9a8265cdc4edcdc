"""The few-shot evaluation protocol (PAPER.md): for each held-out task and level, k demos of that
level in the context, ``episodes`` rollouts on it, for every method, on the same levels.

    plan = plan_levels(cfg, tasks, demo_store, max_k=2)   # task -> levels, checked before any rollout
    rows = evaluate(cfg, plan, methods, demo_store)       # one row per episode -> results.json

Levels are those the demo store holds for the task (held-out seeds, ``icrl.collect.levels``), the
first ``levels`` of them; demos of k shots are the level's episodes 0 .. k-1. A method is a
``Policy`` with the shots it is played at: the in-context model and Hashmap at every k; BC-0 at 0
and BC-1 at 1; random and expert once (k = 0: they ignore demos).

Batching: a task's envs are built once, L levels x N episodes = L*N rows (``level_batch`` levels at
a time, default all), and reused for every method and k; each (method, k) plays all its rows as
one batch (``rollout.run_rows``).

Common random numbers: rollout i of a level draws its sticky actions from the seed
(seed, task, level, i) whatever the method and k, re-seeded at every reset
(``StickyVectorEnv``); a method's rollout i of a level draws its own choices from
(seed, method, task, level, i), for every k. A row's draws depend on nothing else, so the rows are
the same whichever levels share a batch (``level_batch``), and the k-shot minus 0-shot gain of a
rollout compares the same randomness.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import Field

from icrl.config import ConfigBase
from icrl.envs.base import VectorEnv
from icrl.envs.registry import domain_of, make_vector_env
from icrl.envs.wrappers import StickyVectorEnv
from icrl.errors import IcrlError
from icrl.eval.policies import Policy
from icrl.eval.rollout import run_rows
from icrl.store.reader import TrajectoryStore


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
    level_batch: int | None = Field(
        None, ge=1, description="Levels rolled out together, episodes x level_batch env rows (None: all of a task's).")


@dataclasses.dataclass
class Method:
    """A policy and the numbers of demos it is played with (None: every configured k)."""

    policy: Policy
    shots: Sequence[int] | None = None


def shots_of(method: Method, cfg: EvalConfig) -> list[int]:
    return list(method.shots if method.shots is not None else cfg.shots)


def sticky_seed(seed: int, task: str, level: int, episode: int) -> tuple[int, ...]:
    """Seed of the sticky actions of rollout ``episode`` of (task, level): the same for every method and k."""
    return (seed, zlib.crc32(task.encode()), int(level), int(episode))


def policy_seed(seed: int, method: str, task: str, level: int, episode: int) -> tuple[int, ...]:
    """Seed of a method's own random choices in rollout ``episode`` of (task, level), for every k."""
    return (seed, zlib.crc32(method.encode()), zlib.crc32(task.encode()), int(level), int(episode))


def max_shots(cfg: EvalConfig, methods: Mapping[str, Method]) -> int:
    """The largest k any method plays at."""
    return max((k for m in methods.values() for k in shots_of(m, cfg)), default=0)


def plan_levels(cfg: EvalConfig, tasks: Sequence[str], demo_store: TrajectoryStore, max_k: int,
                log: Callable[[str], None] = lambda line: None) -> dict[str, list[int]]:
    """Task -> the levels it is evaluated on: the first ``cfg.levels`` the demo store has.

    IcrlError when a task has no episodes or a level has fewer than ``max_k`` episodes (the largest
    k); ``log`` gets one line for a task with fewer levels than asked. Reads only the index: call it
    before loading a model.
    """
    plan = {}
    for task in tasks:
        have = sorted(demo_store.levels(task))
        if not have:
            raise IcrlError(f"demo store {demo_store.root} has no episodes of task {task!r}; "
                            f"it has {demo_store.tasks()}")
        if len(have) < cfg.levels:
            log(f"warning: {task}: the demo store has {len(have)} levels, --levels asked {cfg.levels}; "
                f"evaluating on {len(have)}")
        levels = have[: cfg.levels]
        short = [lv for lv in levels if len(demo_store.episodes_of(task, lv)) < max_k]
        if short:
            n = len(demo_store.episodes_of(task, short[0]))
            raise IcrlError(f"{task} level {short[0]}: {max_k} demos asked, the demo store has {n} "
                            f"({len(short)} of {len(levels)} levels have fewer than {max_k}); collect more "
                            "episodes per level or lower --shots")
        plan[task] = [int(lv) for lv in levels]
    return plan


def evaluate(cfg: EvalConfig, tasks: Sequence[str] | Mapping[str, Sequence[int]], methods: dict[str, Method],
             demo_store: TrajectoryStore,
             on_batch: Callable[[str, int, str, list[dict]], None] = lambda *a: None) -> list[dict]:
    """Play every method on every (task, level, k); returns one row per episode.

    ``tasks``: task names (levels from ``plan_levels``) or a plan (task -> levels). Every method is
    checked against every task (``Policy.check``) before any rollout. ``on_batch(task, k, method,
    rows)`` gets the rows of each batch as it ends. Rows come in the order task, level, method, k,
    episode, however they were batched.
    """
    max_k = max_shots(cfg, methods)
    plan = dict(tasks) if isinstance(tasks, Mapping) else plan_levels(cfg, tasks, demo_store, max_k)
    for task in plan:
        for method in methods.values():
            method.policy.check(task)
    wanted = tuple(sorted({k for m in methods.values() for k in m.policy.extra_keys}))
    rows: list[dict] = []
    for task, levels in plan.items():
        extra = wanted if domain_of(task) == "nethack" else ()  # NLE keys (the oracle's); Procgen has none
        demos = {lv: [demo_store.read(r) for r in sorted(demo_store.episodes_of(task, lv),
                                                         key=lambda r: r.episode)[:max_k]] for lv in levels}
        short = [lv for lv in levels if len(demos[lv]) < max_k]
        if short:
            raise IcrlError(f"{task} level {short[0]}: {max_k} demos asked, the demo store has {len(demos[short[0]])}")
        size = cfg.level_batch or len(levels)
        chunks = [levels[i:i + size] for i in range(0, len(levels), size)]
        envs: dict[int, VectorEnv] = {}  # by number of rows: one per task, two if the last chunk is short
        try:
            for name, method in methods.items():
                for k in shots_of(method, cfg):
                    for chunk in chunks:
                        n_rows = len(chunk) * cfg.episodes
                        if n_rows not in envs:
                            envs[n_rows] = StickyVectorEnv(
                                make_vector_env(task, n_rows, max_steps=cfg.max_steps, extra_keys=extra), cfg.sticky)
                        new = _play(cfg, envs[n_rows], task, chunk, demos, name, method.policy, k)
                        rows += new
                        on_batch(task, k, name, new)
        finally:
            for venv in envs.values():
                venv.close()
    # The order of the per-level protocol, whatever the batching: results.json reads the same.
    order = {(t, lv): (i, j) for i, (t, lvs) in enumerate(plan.items()) for j, lv in enumerate(lvs)}
    names = list(methods)
    rows.sort(key=lambda r: (*order[(r["task"], r["level"])], names.index(r["method"]), r["k"], r["episode"]))
    return rows


def _play(cfg: EvalConfig, venv: VectorEnv, task: str, levels: Sequence[int], demos: Mapping[int, list],
          name: str, policy: Policy, k: int) -> list[dict]:
    """Rows of one batch: ``cfg.episodes`` rollouts of each of ``levels`` (level-major) with k demos."""
    n = cfg.episodes
    row_levels = [lv for lv in levels for _ in range(n)]
    episodes = [i for _ in levels for i in range(n)]
    records = run_rows(
        venv, policy, [demos[lv][:k] for lv in levels], np.repeat(np.arange(len(levels)), n), row_levels,
        [np.random.default_rng(policy_seed(cfg.seed, name, task, lv, i)) for lv, i in zip(row_levels, episodes)],
        seeds=[sticky_seed(cfg.seed, task, lv, i) for lv, i in zip(row_levels, episodes)], max_steps=cfg.max_steps)
    return [{"task": task, "level": int(lv), "k": int(k), "method": name, "episode": int(i), "sticky": cfg.sticky,
             **r} for lv, i, r in zip(row_levels, episodes, records)]
