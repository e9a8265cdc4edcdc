"""NetHack family behind one adapter: MiniHack tasks and NLE's ``NetHackChallenge-v0``.

Observations are the tty (``tty_chars``, ``tty_colors`` [24, 80] uint8, ``tty_cursor`` [2] uint8),
which NLD, NLE and MiniHack share; any other NLE key (``glyphs``, ``blstats``, ``message``, ...) is
added on request with ``extra_keys``. Actions are unified indices; the task's native actions
(``env.unwrapped.actions``) map into NLE's enumeration.

Level pinning: NLE's ``reset(seed=...)`` seeds only gymnasium's RNG, not NetHack's, so a level L is
pinned by setting NetHack's core and display seeds to L (no reseeding) before each reset. MiniHack's
MiniGrid-based tasks (MultiRoom, crossings) draw their layout from the MiniGrid env, which is reset
with seed L first. ``NetHackChallenge-v0`` locks seeding (an anti-cheating rule of the 2021
competition); icrl calls the unlocked method of NetHack's class directly so that research runs
are reproducible.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from icrl.envs.actions import nethack_indices
from icrl.envs.base import Env, Obs
from icrl.envs.spec import EnvSpec

TTY_KEYS: tuple[str, ...] = ("tty_chars", "tty_colors", "tty_cursor")
TTY_SPEC = {
    "tty_chars": ((24, 80), np.dtype(np.uint8)),
    "tty_colors": ((24, 80), np.dtype(np.uint8)),
    "tty_cursor": ((2,), np.dtype(np.uint8)),
}


def import_minihack() -> None:
    """Import MiniHack (registers its tasks) and make its MiniGrid-based tasks constructible."""
    with warnings.catch_warnings():
        # minihack imports pkg_resources, deprecated by setuptools; pinned below 81 where it works.
        warnings.simplefilter("ignore", UserWarning)
        import minihack  # noqa: F401
    from icrl.envs.minigrid_compat import patch_minigrid_registry

    patch_minigrid_registry()


class NetHackEnv(Env):
    """A MiniHack task or the NLE challenge, with tty observations and unified actions."""

    def __init__(self, task: str, extra_keys: tuple[str, ...] = (), **make_kwargs: Any):
        import gymnasium as gym

        import_minihack()
        keys = tuple(dict.fromkeys(TTY_KEYS + tuple(extra_keys)))
        self._env = gym.make(task, observation_keys=keys, **make_kwargs)
        self._nle = self._env.unwrapped
        self._keys = keys
        space = self._env.observation_space
        obs_spec = dict(TTY_SPEC)
        for key in keys:
            if key not in TTY_SPEC:
                obs_spec[key] = (tuple(space[key].shape), np.dtype(space[key].dtype))
        self.spec = EnvSpec(
            task=task,
            domain="nethack",
            obs_spec=obs_spec,
            legal_actions=nethack_indices(self._nle.actions),
        )
        self._minigrid = getattr(self._nle, "minigrid_env", None)

    def reset(self, level: int) -> Obs:
        level = int(level)
        if self._minigrid is not None:
            self._minigrid.reset(seed=level)
        # The class method, not the instance attribute: NetHackChallenge replaces the latter.
        nh = self._nle.nethack
        type(nh).set_initial_seeds(nh, level, level, False, None)
        obs, _ = self._env.reset()
        return self._convert(obs)

    def step(self, action: int) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        native = self.spec.native_index(action)
        obs, reward, terminated, truncated, info = self._env.step(native)
        # MiniHack reports the end of a task as TASK_SUCCESSFUL, also where the task is lost
        # (Memento's squeaky board ends it with reward -1), so success needs a positive reward.
        # NLE's challenge has no such status; its only success is ascension.
        status = info.get("end_status")
        goal = getattr(self._nle.StepStatus, "TASK_SUCCESSFUL", None)
        success = bool(info.get("is_ascended", False)) or (
            goal is not None and status is not None and int(status) == int(goal) and reward > 0
        )
        # At its own step limit NLE ends the game with status ABORTED and reports it as terminated,
        # not truncated (its truncation check runs before the step is counted). A time limit is
        # not the end of the game: report it as truncation, as icrl's own TimeLimit does.
        if status is not None and int(status) == int(self._nle.StepStatus.ABORTED):
            terminated, truncated = False, True
        return self._convert(obs), float(reward), bool(terminated), bool(truncated), {"success": success}

    def _convert(self, obs: dict[str, np.ndarray]) -> Obs:
        # NLE reuses its observation buffers in place, so every array is copied.
        out = {k: np.array(obs[k]) for k in self._keys}
        out["tty_colors"] = out["tty_colors"].astype(np.uint8)  # NLE gives int8 colours 0..15
        return out

    def close(self) -> None:
        self._env.close()
