"""Procgen games behind icrl's interface, batched by Procgen's own (C++) vectorisation.

Observations: ``rgb`` [64, 64, 3] uint8. Procgen's 15 actions map to unified indices
``PROCGEN_OFFSET + i``.

Level pinning: the initial state of level L is taken from an env made with ``start_level=L,
num_levels=1`` and written into a slot of the batch with Procgen's ``set_state``; so any slot can be
put on any level at any time, and the same level always starts from the same state (and, with the
same actions, plays out the same way).

Gym3 resets a finished env by itself and hands back the *next* episode's first frame; icrl keeps the
last frame of the finished episode instead and holds the slot until it is reset (see ``icrl.envs.base``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from icrl.envs.actions import NUM_PROCGEN_ACTIONS, PROCGEN_OFFSET, procgen_indices
from icrl.envs.base import Env, Obs, VectorEnv, VectorStep
from icrl.envs.spec import EnvSpec
from icrl.envs.wrappers import sticky

PROCGEN_GAMES: tuple[str, ...] = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)
PROCGEN_PREFIX = "procgen:"
RGB_SPEC = {"rgb": ((64, 64, 3), np.dtype(np.uint8))}


def _gym3_env_class():
    # procgen imports the unmaintained `gym` package, which prints a deprecation banner to stderr
    # on import; it is noise for icrl users (icrl uses gymnasium), so it is swallowed once here.
    with contextlib.redirect_stderr(io.StringIO()):
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


def game_of(task: str) -> str:
    """``"procgen:ninja"`` -> ``"ninja"``."""
    return task[len(PROCGEN_PREFIX):] if task.startswith(PROCGEN_PREFIX) else task


def procgen_spec(task: str, max_steps: int | None) -> EnvSpec:
    return EnvSpec(task=task, domain="procgen", obs_spec=dict(RGB_SPEC),
                   legal_actions=procgen_indices(), max_steps=max_steps)


class ProcgenVectorEnv(VectorEnv):
    """N slots of one Procgen game, stepped in one native call.

    Sticky actions (probability ``sticky_p``; slot i draws from ``default_rng((seed, i))``) and the
    time limit (``max_steps``; None keeps only the game's own) are applied here, vectorised.
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        *,
        distribution_mode: str = "easy",
        sticky_p: float = 0.0,
        max_steps: int | None = 200,
        seed: int = 0,
    ):
        if not 0.0 <= sticky_p <= 1.0:
            raise ValueError(f"sticky action probability must be in [0, 1], got {sticky_p}")
        self.game = game_of(task)
        self.spec = procgen_spec(PROCGEN_PREFIX + self.game, max_steps)
        self.num_envs = num_envs
        self.distribution_mode = distribution_mode
        self.sticky_p, self.max_steps = sticky_p, max_steps
        self._cls = _gym3_env_class()
        self._env = self._cls(num=num_envs, env_name=self.game, start_level=0, num_levels=1,
                              distribution_mode=distribution_mode)
        self._initial_states: dict[int, bytes] = {}
        self._rngs = [np.random.default_rng((seed, i)) for i in range(num_envs)]
        self._previous: list[int | None] = [None] * num_envs
        self._t = np.zeros(num_envs, np.int64)
        self._done = np.ones(num_envs, bool)
        self._terminated = np.zeros(num_envs, bool)
        self._truncated = np.zeros(num_envs, bool)
        self._success = np.zeros(num_envs, bool)
        self._obs = np.zeros((num_envs, 64, 64, 3), np.uint8)

    def _initial_state(self, level: int) -> bytes:
        if level not in self._initial_states:
            env = self._cls(num=1, env_name=self.game, start_level=level, num_levels=1,
                            distribution_mode=self.distribution_mode)
            self._initial_states[level] = env.callmethod("get_state")[0]
            env.close()
        return self._initial_states[level]

    def reset(self, levels: Sequence[int], mask: np.ndarray | None = None) -> Obs:
        levels = np.asarray(levels, dtype=np.int64)
        if levels.shape != (self.num_envs,):
            raise ValueError(f"reset needs {self.num_envs} levels, got shape {levels.shape}")
        if (levels < 0).any() or (levels >= 2**31).any():
            raise ValueError(f"Procgen levels must be in [0, 2**31), got {levels.tolist()}")
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        states = list(self._env.callmethod("get_state"))
        for i in np.flatnonzero(mask):
            states[i] = self._initial_state(int(levels[i]))
            self._previous[i] = None
        self._env.callmethod("set_state", states)
        _, obs, _ = self._env.observe()
        self._obs[mask] = obs["rgb"][mask]
        self._t[mask] = 0
        for flags in (self._done, self._terminated, self._truncated, self._success):
            flags[mask] = False
        return {"rgb": self._obs.copy()}

    def step(self, actions: np.ndarray) -> VectorStep:
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        live = ~self._done
        native = np.zeros(self.num_envs, np.int32)
        for i in np.flatnonzero(live):
            a = int(actions[i])
            if not PROCGEN_OFFSET <= a < PROCGEN_OFFSET + NUM_PROCGEN_ACTIONS:
                raise ValueError(f"action {a} is not legal in {self.spec.task} (slot {i}); legal "
                                 f"unified actions are {PROCGEN_OFFSET}..{PROCGEN_OFFSET + NUM_PROCGEN_ACTIONS - 1}")
            executed = sticky(self._rngs[i], self.sticky_p, a, self._previous[i])
            self._previous[i] = executed
            native[i] = executed - PROCGEN_OFFSET
        self._env.act(native)
        reward, obs, first = self._env.observe()
        info = self._env.get_info()
        reward = np.where(live, reward, 0.0).astype(np.float32)
        self._t[live] += 1
        ended = live & first  # gym3 marks the first frame of the next episode
        for i in np.flatnonzero(ended):
            self._success[i] = bool(info[i].get("prev_level_complete", 0))
        self._terminated |= ended
        if self.max_steps is not None:
            self._truncated |= live & ~ended & (self._t >= self.max_steps)
        keep_frame = live & ~ended
        self._obs[keep_frame] = obs["rgb"][keep_frame]
        self._done = self._terminated | self._truncated
        return VectorStep(obs={"rgb": self._obs.copy()}, reward=reward,
                          terminated=self._terminated.copy(), truncated=self._truncated.copy(),
                          success=self._success.copy())

    def get_states(self) -> list[bytes]:
        """Procgen's saved state of every slot (N byte strings): what a search expert plans from.
        A finished slot's state is the next episode's, which nobody plays."""
        return list(self._env.callmethod("get_state"))

    def close(self) -> None:
        self._env.close()


class ProcgenEnv(Env):
    """One Procgen env: a batch of one, with no sticky actions or time limit of its own (wrap it)."""

    def __init__(self, task: str, distribution_mode: str = "easy"):
        self._venv = ProcgenVectorEnv(task, 1, distribution_mode=distribution_mode, max_steps=None)
        self.spec = procgen_spec(self._venv.spec.task, None)

    def reset(self, level: int) -> Obs:
        return {k: v[0] for k, v in self._venv.reset([level]).items()}

    def step(self, action: int) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        self.spec.native_index(action)
        out = self._venv.step(np.array([action]))
        return ({k: v[0] for k, v in out.obs.items()}, float(out.reward[0]), bool(out.terminated[0]),
                bool(out.truncated[0]), {"success": bool(out.success[0])})

    def get_state(self) -> bytes:
        """Procgen's saved state of the game (``ProcgenVectorEnv.get_states``)."""
        return self._venv.get_states()[0]

    def close(self) -> None:
        self._venv.close()


def procgen_core(env: Env | VectorEnv) -> ProcgenEnv | ProcgenVectorEnv | None:
    """The Procgen env under ``env``'s wrappers (sticky actions, time limit), None if there is none.
    Wrappers keep what they wrap as ``env`` (single) or ``venv`` (batched)."""
    while not isinstance(env, (ProcgenEnv, ProcgenVectorEnv)):
        env = getattr(env, "env", None) or getattr(env, "venv", None)
        if env is None:
            return None
    return env
