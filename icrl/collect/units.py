"""Work units of a collection and how one is played: attempts of the expert under sticky actions.

Episode ``e`` of a (task, level) is the first *successful* attempt among attempts
``a = 0 .. max_attempts-1``; failed attempts are dropped (reported as events, not stored); an
episode whose every attempt fails is *given up*. With ``keep_failed`` attempt 0 is stored whatever
its outcome (no retries).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from icrl.collect.levels import attempt_seeds
from icrl.collect.recorder import EpisodeRecorder
from icrl.store.episode import Episode


@dataclasses.dataclass(frozen=True)
class Unit:
    """A work unit: the episodes still missing for one (task, level)."""

    task: str
    level: int
    episodes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class PlaySettings:
    """What a worker needs to play units (picklable: sent to spawned workers)."""

    store: str
    sticky: float
    max_steps: int | None
    seed: int
    max_attempts: int
    keep_failed: bool
    source: str
    lock: str | None = None  # token of the run's store write lock (workers write under it)


Outcome = Literal["stored", "dropped", "gave_up"]


@dataclasses.dataclass(frozen=True)
class Event:
    """One attempt's outcome: ``stored`` (in the store now), ``dropped`` (a failed attempt, not
    stored) or ``gave_up`` (after the last dropped attempt of an episode; steps 0)."""

    outcome: Outcome
    task: str
    level: int
    episode: int
    attempt: int
    steps: int
    success: bool


class EnvCache:
    """The worker's envs, one per task, at most ``size`` open (least recently used closed first)."""

    def __init__(self, settings: PlaySettings, size: int = 4):
        self.settings = settings
        self.size = size
        self._envs: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def get(self, task: str) -> Any:
        from icrl.envs import domain_of, make_env
        from icrl.experts import REQUIRED_KEYS

        env = self._envs.get(task)
        if env is None:
            # Sticky actions are added per attempt (``play_attempt``) so each attempt has its own seed.
            # The oracle reads NLE's glyphs; the Procgen expert reads the game's state instead.
            extra = REQUIRED_KEYS if domain_of(task) == "nethack" else ()
            env = make_env(task, sticky_p=0.0, max_steps=self.settings.max_steps, extra_keys=extra)
            self._envs[task] = env
            while len(self._envs) > self.size:
                self._envs.popitem(last=False)[1].close()
        self._envs.move_to_end(task)
        return env

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def play_attempt(env: Any, task: str, level: int, episode: int, attempt: int,
                 settings: PlaySettings) -> tuple[Episode, bool]:
    """Play one attempt of the expert on ``level``: (episode, solved). Deterministic in its seeds."""
    from icrl.envs.procgen import procgen_core
    from icrl.envs.wrappers import StickyActions
    from icrl.experts import make_expert

    sticky_seed, expert_seed = attempt_seeds(settings.seed, task, level, episode, attempt)
    played = StickyActions(env, settings.sticky, seed=sticky_seed)
    game = procgen_core(env)  # Procgen: the search expert plans from the game's state
    native = env.native_actions if game is None else ()
    expert = make_expert(task, native, np.random.default_rng(expert_seed), max_steps=settings.max_steps)
    legal = env.spec.legal_actions
    rec = EpisodeRecorder(env.spec.domain)
    obs = played.reset(level)
    expert.reset()
    while True:
        choice = expert.act(obs) if game is None else expert.act(obs, game.get_state())
        action = int(legal[choice])  # record the agent's choice, not the sticky-executed one
        next_obs, reward, terminated, truncated, info = played.step(action)
        rec.add(obs, action, reward)
        obs = next_obs
        if terminated or truncated:
            break
    ep = rec.finish(task=task, level=level, episode=episode, source=settings.source,
                    terminated=terminated, truncated=truncated)
    return ep, bool(info.get("success", False))


def play_unit(unit: Unit, envs: EnvCache, writer: Any, settings: PlaySettings,
              emit: Callable[[Event], None], stop: Callable[[], bool] = lambda: False) -> None:
    """Play the missing episodes of ``unit``, appending kept ones to ``writer`` and emitting an
    ``Event`` per attempt. ``stop()`` is checked between episodes (a graceful interrupt)."""
    env = envs.get(unit.task)
    attempts = 1 if settings.keep_failed else settings.max_attempts
    for e in unit.episodes:
        if stop():
            return
        for a in range(attempts):
            ep, success = play_attempt(env, unit.task, unit.level, e, a, settings)
            if success or settings.keep_failed:
                writer.append(ep)  # durable when it returns
                emit(Event("stored", unit.task, unit.level, e, a, ep.length, success))
                break
            emit(Event("dropped", unit.task, unit.level, e, a, ep.length, False))
        else:
            emit(Event("gave_up", unit.task, unit.level, e, attempts - 1, 0, False))
