"""Policies the evaluator rolls out, one interface for the model and every baseline.

A policy acts for a batch of R env rows that may play different levels of one task, each level
with its own demos (the same number k for every level of a batch)::

    policy.start(spec, demos, row_demos, rngs)   # demos: L lists of k Episodes; row_demos [R] in [0, L);
                                                 # rngs: R generators, one per row
    actions = policy.act(obs, live)              # obs key -> [R, ...]; live [R] bool -> [R] unified
    policy.record(actions, rewards, done)        # what the envs did with them

Row r plays with the demos ``demos[row_demos[r]]`` and draws its random choices from ``rngs[r]``
only, and only while it is live, so a row's episode does not depend on which other rows share its
batch: the evaluator gets the same results rolling out every level at once or one at a time.

Baselines here: ``RandomPolicy`` (uniform over legal actions), ``HashmapPolicy`` (copy the demo's
action for an exactly matching observation, else random: an oracle in deterministic levels;
``HashmapCellPolicy`` matches the agent's cell instead),
``RetrievePlayPolicy`` (R&P: copy the action of the nearest demo step) and ``ExpertPolicy`` (the
expert that made the demos: MiniHack's planning oracle, Procgen's search expert). The model's policy is in
``icrl.eval.model_policy``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from icrl.data.recall import retrieval_distances, retrieval_features
from icrl.envs.base import Obs
from icrl.envs.spec import EnvSpec
from icrl.errors import IcrlError
from icrl.store.episode import Episode


class Policy(abc.ABC):
    """Acts for a batch of env rows of one task; row r plays with demos ``demos[row_demos[r]]``."""

    name: str = "policy"
    extra_keys: tuple[str, ...] = ()  # observation keys beyond the tty/rgb the policy needs
    step_limit: int | None = None  # most steps an episode may last for this policy (set by start)

    def check(self, task: str) -> None:
        """IcrlError if this policy cannot play ``task`` (called before any rollout)."""

    def attach(self, venv) -> None:
        """Called with the batch's vector env before ``start``: a policy that plans from the
        game's state (Procgen's search expert) keeps it; others ignore it."""

    @abc.abstractmethod
    def start(self, spec: EnvSpec, demos: Sequence[Sequence[Episode]], row_demos: np.ndarray,
              rngs: Sequence[np.random.Generator]) -> None:
        """Begin a batch: ``demos`` L demo sets (k episodes each, possibly none), ``row_demos`` [R]
        int the set of each row, ``rngs`` R generators, one per row."""

    @abc.abstractmethod
    def act(self, obs: Obs, live: np.ndarray) -> np.ndarray:
        """Unified actions [R] int32 for the current observations; entries where not ``live`` are ignored."""

    def record(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        """Called after every step with the actions taken [R], rewards [R] and done flags [R]."""


def check_model_domain(method: str, domain: str, task: str) -> None:
    """IcrlError if a model that reads ``domain`` observations is asked to play ``task``."""
    from icrl.envs.registry import domain_of

    if domain_of(task) != domain:
        raise IcrlError(f"method {method!r}: the model reads {domain} observations, {task} is a "
                        f"{domain_of(task)} task")


def check_batch(demos: Sequence[Sequence[Episode]], row_demos: np.ndarray, rngs: Sequence) -> np.ndarray:
    """``row_demos`` as an int array [R], after checking it indexes ``demos`` and matches ``rngs``."""
    rows = np.asarray(row_demos, np.int64).reshape(-1)
    if len(rows) != len(rngs):
        raise ValueError(f"{len(rows)} rows need {len(rows)} generators, got {len(rngs)}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(demos)):
        raise ValueError(f"row_demos must index the {len(demos)} demo sets, got {sorted(set(rows.tolist()))}")
    return rows


class RandomPolicy(Policy):
    """Uniform over the task's legal actions."""

    name = "random"

    def start(self, spec, demos, row_demos, rngs):
        check_batch(demos, row_demos, rngs)
        self.legal, self.rngs = spec.legal_actions, list(rngs)

    def _random(self, live: np.ndarray) -> np.ndarray:
        """A uniform legal action for every live row, each from its own generator; 0 elsewhere."""
        out = np.zeros(len(self.rngs), np.int32)
        for i in np.flatnonzero(live):
            out[i] = self.legal[self.rngs[i].integers(len(self.legal))]
        return out

    def act(self, obs, live):
        return self._random(live)


class HashmapPolicy(RandomPolicy):
    """The study's Hashmap baseline: the demo action of an exactly matching observation, else random.

    One ``RecallTable`` (``icrl.data.recall``) per demo set (level), the table a model with recall
    reads. Keys (``key``): ``screen``, the full observation the demos store (tty chars, colours
    and cursor; or RGB frames), so a match means the same screen; ``hashmap-cell`` keys on the
    cursor's cell instead. A key seen more than once keeps the action taken at its *last*
    occurrence: from there the demo went on without coming back, so in a deterministic level
    following it can never loop (the first occurrence's action can lead back to the same screen,
    e.g. a bump into a wall, forever).
    """

    name = "hashmap"
    key = "screen"

    def start(self, spec, demos, row_demos, rngs):
        from icrl.data.recall import RecallTable

        super().start(spec, demos, row_demos, rngs)
        self.row_demos = check_batch(demos, row_demos, rngs)
        self.tables: list[RecallTable] = []
        for level_demos in demos:
            table = RecallTable(self.key)
            for ep in level_demos:
                if ep.has_actions:
                    table.add(table.keys(ep.observations), ep.actions)
            self.tables.append(table)
        self.keys = next((sorted(d[0].observations) for d in demos if d), None)
        self.hits = self.misses = 0

    def act(self, obs, live):
        # A random draw only on a miss: a row's stream then depends on its own screens alone.
        out = np.zeros(len(self.rngs), np.int32)
        rows = np.flatnonzero(live)
        if not rows.size or not self.tables:
            return self._random(live)
        view = {k: np.asarray(obs[k])[rows] for k in (self.keys or sorted(obs))}
        for i, key in zip(rows, self.tables[0].keys(view)):
            hit = self.tables[self.row_demos[i]].get(key)
            if hit is not None:
                out[i] = hit
                self.hits += 1
            else:
                out[i] = self.legal[self.rngs[i].integers(len(self.legal))]
                self.misses += 1
        return out


class HashmapCellPolicy(HashmapPolicy):
    """Hashmap keyed on the agent's cell (the tty cursor) rather than the whole screen: the demo's
    action where the demo stood where the agent stands now, else random. It matches where the
    screen differs only by what has been explored or said, so it is the copy baseline of a model
    with ``recall: cell``."""

    name = "hashmap-cell"
    key = "cell"

    def check(self, task):
        from icrl.envs.registry import domain_of

        if domain_of(task) != "nethack":
            raise IcrlError(f"method {self.name!r} does not apply to {task}: it matches the tty cursor's cell, "
                            f"{task} has RGB frames")


def expert_applies(task: str) -> str | None:
    """Why no expert can play ``task`` (None when one can: MiniHack's oracle, Procgen's search)."""
    from icrl.experts.registry import expert_unavailable

    return expert_unavailable(task)


class ExpertPolicy(Policy):
    """The expert that made the demos (MiniHack: the planning oracle; Procgen: the search expert,
    which plans from each row's game state): the return an expert gets on the same levels; one per row."""

    name = "expert"

    def __init__(self):
        from icrl.experts import REQUIRED_KEYS

        self.extra_keys = tuple(REQUIRED_KEYS)  # NetHack only: the evaluator drops them for Procgen
        self._game = None

    def check(self, task):
        why = expert_applies(task)
        if why:
            raise IcrlError(f"method {self.name!r} does not apply to {task}: {why}")

    def attach(self, venv):
        from icrl.envs.procgen import procgen_core

        self._game = procgen_core(venv)

    def start(self, spec, demos, row_demos, rngs):
        from icrl.envs.actions import nethack_actions_of
        from icrl.experts import make_expert

        check_batch(demos, row_demos, rngs)
        if spec.domain == "procgen" and self._game is None:
            raise IcrlError(f"method {self.name!r}: {spec.task}: the search expert needs the Procgen env "
                            "(ExpertPolicy.attach) to read the game states")
        native = nethack_actions_of(spec.legal_actions) if spec.domain == "nethack" else ()
        self.legal, self.domain = spec.legal_actions, spec.domain
        self.experts = [make_expert(spec.task, native, np.random.default_rng(rng.integers(1 << 31)),
                                    max_steps=spec.max_steps) for rng in rngs]
        for e in self.experts:
            e.reset()

    def act(self, obs, live):
        out = np.zeros(len(self.experts), np.int32)
        states = self._game.get_states() if self.domain == "procgen" else None  # one call for all rows
        for i in np.flatnonzero(live):
            row = {k: v[i] for k, v in obs.items()}
            choice = self.experts[i].act(row) if states is None else self.experts[i].act(row, states[i])
            out[i] = self.legal[choice]
        return out


class RetrievePlayPolicy(RandomPolicy):
    """REGENT's "retrieve and play" (R&P; Sridhar et al., ICLR 2025): the action of the nearest demo
    step over all steps of the row's k demos (``retrieval_distances``: Euclidean over 4x4-pooled
    frames; for tty screens, the number of differing characters).

    Ties (equal distance, e.g. a frame seen twice) go to the step right after the row's previous
    match when it is among them, else to the last of them (as Hashmap, so as not to loop): with one
    demo of a deterministic level R&P then replays the demo exactly. A row without demo steps acts
    at random.
    """

    name = "rnp"

    def start(self, spec, demos, row_demos, rngs):
        super().start(spec, demos, row_demos, rngs)
        self.row_demos = check_batch(demos, row_demos, rngs)
        self.banks: list[tuple[np.ndarray, np.ndarray] | None] = []  # per demo set: features [n, d], actions [n]
        for level_demos in demos:
            eps = [ep for ep in level_demos if ep.has_actions and ep.length]
            self.banks.append((np.concatenate([retrieval_features(ep.observations) for ep in eps]),
                               np.concatenate([ep.actions for ep in eps]).astype(np.int32)) if eps else None)
        self.previous = np.full(len(self.rngs), -2, np.int64)  # index of each row's last match

    def act(self, obs, live):
        out = self._random(live)
        rows = np.flatnonzero(live)
        if not rows.size:
            return out
        feats = retrieval_features({k: np.asarray(v)[rows] for k, v in obs.items() if k in ("rgb", "tty_chars")})
        for set_id in np.unique(self.row_demos[rows]):
            if self.banks[set_id] is None:
                continue
            bank, acts = self.banks[set_id]
            mine = self.row_demos[rows] == set_id
            for row, dist in zip(rows[mine], retrieval_distances(bank, feats[mine])):
                near = np.flatnonzero(dist <= dist.min() + 0.5)  # whole-number distances: exact ties
                follow = self.previous[row] + 1
                j = int(follow) if follow in near else int(near[-1])
                self.previous[row] = j
                out[row] = acts[j]
        return out
