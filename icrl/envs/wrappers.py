"""Wrappers that change how actions are executed or how long episodes last, for any ``Env``, and
sticky actions over any ``VectorEnv`` with per-row seeds chosen at reset (``StickyVectorEnv``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from icrl.envs.base import Env, Obs, VectorEnv, VectorStep


def sticky(rng: np.random.Generator, p: float, action: int, previous: int | None) -> int:
    """The action actually executed: the previous one with probability ``p``, else ``action``.

    The first action of an episode (``previous`` None) is never replaced. Shared by the wrapper
    and the native Procgen batch so both draw the same random numbers for the same seed.
    """
    if previous is not None and p > 0.0 and rng.random() < p:
        return previous
    return action


class StickyActions(Env):
    """With probability ``p`` the env repeats the previously executed action (Machado et al.).

    ``info["executed_action"]`` is the action the env really took; the caller's action is the one
    to record as the agent's choice.
    """

    def __init__(self, env: Env, p: float, seed: int | tuple[int, ...] = 0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"sticky action probability must be in [0, 1], got {p}")
        self.env, self.p, self.spec = env, p, env.spec
        self._rng = np.random.default_rng(seed)
        self._previous: int | None = None

    def reset(self, level: int) -> Obs:
        self._previous = None
        return self.env.reset(level)

    def step(self, action: int) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        self.spec.native_index(action)  # reject an illegal choice even when it would be replaced
        executed = sticky(self._rng, self.p, int(action), self._previous)
        self._previous = executed
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": executed}

    def close(self) -> None:
        self.env.close()


class TimeLimit(Env):
    """Truncate episodes after ``max_steps`` steps (Procgen: 200, as in the study)."""

    def __init__(self, env: Env, max_steps: int):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.env, self.max_steps = env, max_steps
        self.spec = env.spec
        self._t = 0

    def reset(self, level: int) -> Obs:
        self._t = 0
        return self.env.reset(level)

    def step(self, action: int) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        if self._t >= self.max_steps and not terminated:
            truncated = True
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()


class StickyVectorEnv(VectorEnv):
    """Sticky actions (probability ``p``) over N batched envs built without them, each row drawing
    from its own generator, which ``reset`` may re-seed.

    Why: an evaluation reuses one vector env for every method and k; re-seeding row r at reset with
    the seed of (level, rollout i) gives that rollout the same sticky draws whatever ran on the row
    before (common random numbers), where generators created once per env would carry on from the
    previous episode. Draws follow ``sticky`` exactly as ``StickyActions`` and the native Procgen
    batch do: one per executed step of a live row, none for the first action of an episode or for
    rows whose episode has ended, so a row with seed s plays as ``StickyActions(env, p, s)``.
    """

    def __init__(self, venv: VectorEnv, p: float, seeds: Sequence | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"sticky action probability must be in [0, 1], got {p}")
        self.venv, self.p, self.spec, self.num_envs = venv, p, venv.spec, venv.num_envs
        seeds = [(0, i) for i in range(self.num_envs)] if seeds is None else list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"{self.num_envs} envs need {self.num_envs} seeds, got {len(seeds)}")
        self._rngs = [np.random.default_rng(s) for s in seeds]
        self._previous: list[int | None] = [None] * self.num_envs
        self._live = np.zeros(self.num_envs, bool)  # reset and not ended: its steps draw
        self._legal = self.spec.legal_mask

    def reset(self, levels: Sequence[int], mask: np.ndarray | None = None, seeds: Sequence | None = None) -> Obs:
        """Reset row i to ``levels[i]`` where ``mask[i]`` (all when None); with ``seeds`` [N] (any
        ``np.random.default_rng`` seed: int, tuple, SeedSequence), row i's generator restarts from
        ``seeds[i]``, else it carries on."""
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        if seeds is not None and len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        obs = self.venv.reset(levels, mask)
        for i in np.flatnonzero(mask):
            self._previous[i] = None
            if seeds is not None:
                self._rngs[i] = np.random.default_rng(seeds[i])
        self._live |= mask
        return obs

    def step(self, actions: np.ndarray) -> VectorStep:
        actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)
        executed = actions.copy()
        for i in np.flatnonzero(self._live):
            a = int(actions[i])
            if not (0 <= a < self._legal.shape[0] and self._legal[a]):
                self.spec.native_index(a)  # raises ValueError naming the legal actions
            executed[i] = sticky(self._rngs[i], self.p, a, self._previous[i])
            self._previous[i] = int(executed[i])
        out = self.venv.step(executed)
        self._live &= ~out.done
        return out

    def close(self) -> None:
        self.venv.close()
