"""Wrappers that change how actions are executed or how long episodes last, for any ``Env``."""

from __future__ import annotations

from typing import Any

import numpy as np

from icrl.envs.base import Env, Obs


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
