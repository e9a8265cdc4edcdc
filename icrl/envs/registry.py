"""Task names -> environments. ``make_env`` and ``make_vector_env`` are the way to build envs.

Task names: any registered MiniHack or NLE task id (``MiniHack-MazeWalk-15x15-v0``,
``NetHackChallenge-v0``) and ``procgen:<game>`` for the 16 Procgen games.
"""

from __future__ import annotations

import difflib
import functools

import numpy as np

from icrl.envs.base import Env, VectorEnv
from icrl.envs.procgen import PROCGEN_GAMES, PROCGEN_PREFIX, ProcgenEnv, ProcgenVectorEnv
from icrl.envs.vector import EnvFactory, SerialVectorEnv, SubprocVectorEnv
from icrl.envs.wrappers import StickyActions, TimeLimit
from icrl.errors import IcrlError

# Procgen episodes are cut at 200 steps in the study; NetHack tasks keep their own limits.
DEFAULT_MAX_STEPS: dict[str, int | None] = {"procgen": 200, "nethack": None}


class UnknownTaskError(IcrlError):
    """A task name that no installed suite registers; the message lists close matches."""


@functools.cache
def nethack_task_names() -> tuple[str, ...]:
    """Every registered MiniHack task and the NLE tasks, sorted."""
    import gymnasium as gym

    from icrl.envs.nethack import import_minihack

    import_minihack()
    return tuple(sorted(k for k in gym.registry if k.startswith(("MiniHack-", "NetHack"))))


def procgen_task_names() -> tuple[str, ...]:
    return tuple(PROCGEN_PREFIX + g for g in PROCGEN_GAMES)


def domain_of(task: str) -> str:
    """``"procgen"`` or ``"nethack"``; UnknownTaskError (with close matches) for anything else."""
    if task in procgen_task_names():
        return "procgen"
    if task in nethack_task_names():
        return "nethack"
    known = procgen_task_names() + nethack_task_names()
    close = difflib.get_close_matches(task, known, n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else "; `icrl envs list` shows the suites"
    raise UnknownTaskError(f"unknown task {task!r}{hint}")


def make_env(
    task: str,
    *,
    sticky_p: float = 0.0,
    max_steps: int | None = None,
    seed: int | tuple[int, ...] = 0,
    extra_keys: tuple[str, ...] = (),
    distribution_mode: str = "easy",
) -> Env:
    """One env of ``task`` with unified actions, sticky actions and the domain's time limit.

    ``max_steps`` None means the domain default (Procgen 200, NetHack the task's own);
    ``seed`` seeds the sticky-action draws; ``extra_keys`` adds NLE observation keys (NetHack only).
    """
    from icrl.envs.nethack import NetHackEnv

    domain = domain_of(task)
    if domain == "procgen":
        if extra_keys:
            raise IcrlError(f"{task}: extra observation keys {extra_keys} exist only for NetHack tasks")
        env: Env = ProcgenEnv(task, distribution_mode=distribution_mode)
    else:
        env = NetHackEnv(task, extra_keys=extra_keys)
    if sticky_p > 0.0:
        env = StickyActions(env, sticky_p, seed)
    limit = max_steps if max_steps is not None else DEFAULT_MAX_STEPS[domain]
    if limit is not None:
        env = TimeLimit(env, limit)
    return env


def make_vector_env(
    task: str,
    num_envs: int,
    *,
    workers: int = 0,
    sticky_p: float = 0.0,
    max_steps: int | None = None,
    seed: int = 0,
    extra_keys: tuple[str, ...] = (),
    distribution_mode: str = "easy",
) -> VectorEnv:
    """``num_envs`` envs of ``task``. Env i draws sticky actions from seed ``(seed, i)``.

    Procgen uses its native batch (``workers`` is ignored). NetHack tasks run in this process when
    ``workers`` is 0, else in that many worker processes.
    """
    if num_envs < 1:
        raise IcrlError(f"num_envs must be >= 1, got {num_envs}")
    domain = domain_of(task)
    limit = max_steps if max_steps is not None else DEFAULT_MAX_STEPS[domain]
    if domain == "procgen":
        return ProcgenVectorEnv(task, num_envs, distribution_mode=distribution_mode,
                                sticky_p=sticky_p, max_steps=limit, seed=seed)
    factories = [
        EnvFactory(task, dict(sticky_p=sticky_p, max_steps=max_steps, seed=(seed, i), extra_keys=extra_keys))
        for i in range(num_envs)
    ]
    if workers == 0:
        return SerialVectorEnv([f() for f in factories])
    return SubprocVectorEnv(factories, workers)


NLD_TASK_PREFIXES: tuple[str, ...] = ("nld-aa:", "nld-nao:")


@functools.cache
def task_legal_actions(task: str) -> np.ndarray:
    """Unified legal actions [n] int32 of a task named in a trajectory store.

    NLD tasks (``nld-aa:<group>``, ``nld-nao:<group>``) are full NetHack games: all NLE actions.
    Other tasks are built once (cached per process) to read their action set.
    """
    from icrl.envs.actions import NUM_NETHACK_ACTIONS

    if task.startswith(NLD_TASK_PREFIXES):
        return np.arange(NUM_NETHACK_ACTIONS, dtype=np.int32)
    env = make_env(task)
    try:
        return env.spec.legal_actions
    finally:
        env.close()
