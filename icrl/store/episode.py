"""The Episode: one trajectory, as numpy arrays, in the shape every stage of icrl reads and writes.

Observations by domain (T = number of steps; the observation at step t is the one the action at
step t was taken from):

- ``nethack`` (NLE, MiniHack, NLD): ``tty_chars`` [T, 24, 80] uint8, ``tty_colors`` [T, 24, 80]
  uint8, ``tty_cursor`` [T, 2] uint8 (row, col).
- ``procgen``: ``rgb`` [T, 64, 64, 3] uint8.

``actions`` [T] int32 are indices in the unified vocabulary (``icrl.envs.actions``); an
observation-only episode (NLD-NAO has no keypresses) has ``has_actions=False`` and actions filled
with ``PAD_ACTION``. ``rewards`` [T] float32: reward received after the action at step t.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

Domain = Literal["nethack", "procgen"]
Source = Literal["oracle", "ppo", "human", "random", "nld-aa", "nld-nao"]

OBS_SPECS: dict[str, dict[str, tuple[tuple[int, ...], np.dtype]]] = {
    "nethack": {
        "tty_chars": ((24, 80), np.dtype(np.uint8)),
        "tty_colors": ((24, 80), np.dtype(np.uint8)),
        "tty_cursor": ((2,), np.dtype(np.uint8)),
    },
    "procgen": {"rgb": ((64, 64, 3), np.dtype(np.uint8))},
}


@dataclasses.dataclass(eq=False)
class Episode:
    """One trajectory. Array fields have a leading time axis of length ``length``."""

    domain: Domain
    task: str  # e.g. "MiniHack-MazeWalk-15x15-v0", "procgen:ninja", "nld-aa:Valkyrie"
    level: int  # level seed, or NLD game id
    source: Source
    observations: dict[str, np.ndarray]  # keys and shapes per OBS_SPECS[domain]
    actions: np.ndarray  # [T] int32, unified vocabulary
    rewards: np.ndarray  # [T] float32
    terminated: bool  # the episode reached a terminal state (goal, death, game over)
    truncated: bool  # cut by a time limit or segmenting, not by the game
    has_actions: bool = True  # False for observation-only data (NLD-NAO)
    episode: int = 0  # index of this episode among those of (task, level)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def ret(self) -> float:
        """Episodic return: the sum of rewards."""
        return float(np.sum(self.rewards, dtype=np.float64))

    @property
    def success(self) -> bool:
        """Solved the task: ended by the game (not a time limit) with a positive final reward.

        MiniHack navigation tasks give +1 at the goal and a terminal 0 or negative reward on death;
        Procgen gives a positive reward when the level is completed.
        """
        return bool(self.terminated and self.length > 0 and self.rewards[-1] > 0)

    def validate(self) -> None:
        """Raise ValueError naming the field whose shape or dtype breaks the contract."""
        name = f"episode ({self.task}, level {self.level}, #{self.episode})"
        if self.domain not in OBS_SPECS:
            raise ValueError(f"{name}: unknown domain {self.domain!r}")
        T = self.length
        if self.actions.dtype != np.int32 or self.actions.ndim != 1:
            raise ValueError(f"{name}: actions must be int32 [T], got {self.actions.dtype} {self.actions.shape}")
        if self.rewards.dtype != np.float32 or self.rewards.shape != (T,):
            raise ValueError(f"{name}: rewards must be float32 [{T}], got {self.rewards.dtype} {self.rewards.shape}")
        spec = OBS_SPECS[self.domain]
        if set(self.observations) != set(spec):
            raise ValueError(f"{name}: observation keys {sorted(self.observations)} != {sorted(spec)}")
        for key, (shape, dtype) in spec.items():
            arr = self.observations[key]
            if arr.shape != (T, *shape) or arr.dtype != dtype:
                raise ValueError(f"{name}: {key} must be {dtype} {(T, *shape)}, got {arr.dtype} {arr.shape}")


def episode_equal(a: Episode, b: Episode) -> bool:
    """Field-by-field equality: metadata equal, every array equal in shape, dtype and values."""
    meta = ("domain", "task", "level", "source", "terminated", "truncated", "has_actions", "episode")
    if any(getattr(a, f) != getattr(b, f) for f in meta) or set(a.observations) != set(b.observations):
        return False
    pairs = [(a.actions, b.actions), (a.rewards, b.rewards)]
    pairs += [(a.observations[k], b.observations[k]) for k in a.observations]
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)
