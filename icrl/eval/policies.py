"""Policies the evaluator rolls out, one interface for the model and every baseline.

A policy acts for N envs of one (task, level) at a time::

    policy.start(spec, demos, num_envs, rng)     # a new level: its k demos (Episodes)
    actions = policy.act(obs, live)              # obs key -> [N, ...]; live [N] bool -> [N] unified
    policy.record(actions, rewards, done)        # what the envs did with them

Baselines here: ``RandomPolicy`` (uniform over legal actions), ``HashmapPolicy`` (copy the demo's
action for an exactly matching observation, else random: an oracle in deterministic levels) and
``ExpertPolicy`` (the planning oracle that made the demos). The model's policy is in
``icrl.eval.model_policy``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from icrl.store.episode import Episode
from icrl.envs.base import Obs
from icrl.envs.spec import EnvSpec


class Policy(abc.ABC):
    """Acts for a batch of envs that all play one level."""

    name: str = "policy"
    extra_keys: tuple[str, ...] = ()  # observation keys beyond the tty/rgb the policy needs
    step_limit: int | None = None  # most steps an episode may last for this policy (set by start)

    @abc.abstractmethod
    def start(self, spec: EnvSpec, demos: Sequence[Episode], num_envs: int, rng: np.random.Generator) -> None:
        """Begin a level: ``demos`` are the k demonstrations of it (possibly none)."""

    @abc.abstractmethod
    def act(self, obs: Obs, live: np.ndarray) -> np.ndarray:
        """Unified actions [N] int32 for the current observations; entries where not ``live`` are ignored."""

    def record(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        """Called after every step with the actions taken [N], rewards [N] and done flags [N]."""


class RandomPolicy(Policy):
    """Uniform over the task's legal actions."""

    name = "random"

    def start(self, spec, demos, num_envs, rng):
        self.legal, self.rng, self.n = spec.legal_actions, rng, num_envs

    def act(self, obs, live):
        return self.rng.choice(self.legal, size=self.n).astype(np.int32)


def observation_key(obs: Obs, i: int | None = None) -> bytes:
    """Exact identity of an observation (of env ``i`` in a batch): the bytes of every array, in key order."""
    parts = [np.ascontiguousarray(obs[k] if i is None else obs[k][i]).tobytes() for k in sorted(obs)]
    return b"".join(parts)


class HashmapPolicy(Policy):
    """The study's Hashmap baseline: the demo action of an exactly matching observation, else random.

    Keys are the full observation the demos store (tty chars, colours and cursor; or RGB frames), so
    a match means the same screen. A screen seen more than once keeps the action taken at its *last*
    occurrence: from there the demo went on without coming back, so in a deterministic level
    following it can never loop (the first occurrence's action can lead back to the same screen,
    e.g. a bump into a wall, forever).
    """

    name = "hashmap"

    def start(self, spec, demos, num_envs, rng):
        self.legal, self.rng, self.n = spec.legal_actions, rng, num_envs
        self.table: dict[bytes, int] = {}
        for ep in demos:
            if not ep.has_actions:
                continue
            for t in range(ep.length):
                key = observation_key({k: v[t] for k, v in ep.observations.items()})
                self.table[key] = int(ep.actions[t])
        self.keys = sorted(demos[0].observations) if demos else None
        self.hits = self.misses = 0

    def act(self, obs, live):
        out = self.rng.choice(self.legal, size=self.n).astype(np.int32)
        view = {k: obs[k] for k in self.keys} if self.keys else obs
        for i in np.flatnonzero(live):
            hit = self.table.get(observation_key(view, int(i)))
            if hit is not None:
                out[i] = hit
                self.hits += 1
            else:
                self.misses += 1
        return out


class ExpertPolicy(Policy):
    """The planning oracle (MiniHack): the return an expert gets on the same levels."""

    name = "expert"

    def __init__(self):
        from icrl.experts import REQUIRED_KEYS

        self.extra_keys = tuple(REQUIRED_KEYS)

    def start(self, spec, demos, num_envs, rng):
        from icrl.envs.actions import nethack_actions_of
        from icrl.experts import make_expert

        native = nethack_actions_of(spec.legal_actions)
        self.legal = spec.legal_actions
        self.experts = [make_expert(spec.task, native, np.random.default_rng(rng.integers(1 << 31)))
                        for _ in range(num_envs)]
        for e in self.experts:
            e.reset()

    def act(self, obs, live):
        out = np.zeros(len(self.experts), np.int32)
        for i in np.flatnonzero(live):
            out[i] = self.legal[self.experts[i].act({k: v[i] for k, v in obs.items()})]
        return out
