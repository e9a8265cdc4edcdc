"""The one environment interface of icrl, for a single env and for N batched envs.

Single env (``Env``)::

    obs = env.reset(level)                       # dict key -> array (spec shape)
    obs, reward, terminated, truncated, info = env.step(action)   # action: unified index

``info["success"]`` says whether a finished episode solved the task. Actions are unified-vocabulary
indices (``icrl.envs.actions``); an illegal one raises ValueError.

Batched envs (``VectorEnv``)::

    obs = venv.reset(levels)                     # levels [N]; obs key -> [N, ...]
    obs = venv.reset(levels, mask)               # reset only where mask [N] is True
    step = venv.step(actions)                    # actions [N] -> VectorStep

An env whose episode ended stays ended until it is reset: its action is ignored, its reward is 0,
its done flags stay set and its observation is the last one. That is what evaluation (5 episodes
per level) and collection want, and it keeps batched stepping equal to stepping envs one by one.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from icrl.envs.spec import EnvSpec

Obs = dict[str, np.ndarray]


class Env(abc.ABC):
    """One environment of one task."""

    spec: EnvSpec

    @abc.abstractmethod
    def reset(self, level: int) -> Obs:
        """Start an episode on ``level`` (a seed): the same level gives the same first observation."""

    @abc.abstractmethod
    def step(self, action: int) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Take unified ``action``; returns (obs, reward, terminated, truncated, info)."""

    def close(self) -> None:
        """Release the environment's resources."""

    @property
    def native_actions(self) -> tuple:
        """NetHack tasks: the task's own NLE action tuple (native index i is unified
        ``spec.legal_actions[i]``), through any wrapper. Experts act in this action space."""
        if self.spec.domain != "nethack":
            raise AttributeError(f"{self.spec.task}: only NetHack tasks have an NLE action tuple")
        from icrl.envs.actions import nethack_actions_of

        return nethack_actions_of(self.spec.legal_actions)


@dataclasses.dataclass
class VectorStep:
    """Result of stepping N envs. Arrays have a leading axis N."""

    obs: Obs
    reward: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    success: np.ndarray  # [N] bool, meaningful where the episode has ended

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


class VectorEnv(abc.ABC):
    """N environments of one task stepped together."""

    spec: EnvSpec
    num_envs: int

    @abc.abstractmethod
    def reset(self, levels: Sequence[int], mask: np.ndarray | None = None) -> Obs:
        """Reset env i to ``levels[i]`` where ``mask[i]`` (all when None); returns all N observations."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> VectorStep:
        """Step every env that is not done with its unified action ``actions[i]``."""

    def close(self) -> None:
        """Release the environments' resources."""

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stack_obs(items: Sequence[Obs]) -> Obs:
    """Stack N observation dicts into one dict of [N, ...] arrays."""
    return {k: np.stack([o[k] for o in items]) for k in items[0]}
