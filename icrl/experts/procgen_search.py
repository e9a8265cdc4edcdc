"""A Procgen expert that searches the level with Procgen's state cloning, then plays the plan.

At the first step, and whenever the plan runs out or stops matching the game, the expert copies the
game's state into a simulator (``procgen_sim``) and runs a Go-Explore search (Ecoffet et al. 2021)
within a budget of environment steps:

- an archive maps *cells* (the agent's tile and the return so far, read from the saved state:
  ``position_cells``; a shrunk frame where that fails) to the best way found to reach them: highest
  return, then fewest steps;
- each round picks ``slots`` cells, favouring cells picked or reached less often (novelty),
  cells with the best return and, in some games, cells far from the start (``far_bonus``),
  restores their states, and plays ``unit * depth`` random frames from each as *macro-actions*:
  every ``unit`` frames the action changes with probability ``p_change`` (else it continues, from
  the cell's last action), so runs of one action last about ``unit / p_change`` frames;
- the search ends at the first completed level (a shortest route is not worth the budget), or when
  its share of the budget is spent; the plan is the best outcome seen: a completed level, else the
  highest return, an alive state before a dead one, then the deeper state (more of the level seen).

The plan is then tidied, each change kept only if the whole plan still does as well: detours cut
(``_shortcut``), runs shorter than ``smooth_below`` frames merged into a neighbour (``_smooth``).
It is replayed once from the start state to record the state digest before every action and each
reward. While playing, the expert compares the game's state with the plan's; they differ after a
sticky action (the game repeated the previous action instead of a new one). It then tries the
plan's rest as is and delayed by one frame (the skipped action first), keeps the better if it does
as well as the plan said, and searches again otherwise. So the expert replans after any executed
step, but only pays for a search when the plan broke.

Actions come from the game's useful set (``GAME_ACTIONS``); the expert's choices are deterministic
in its generator and the states it is shown.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from icrl.envs.actions import PROCGEN_OFFSET
from icrl.experts.procgen_sim import (GAME_ACTIONS, NOOP, ProcgenSimulator, agent_position, frame_cells,
                                      position_cells, shared_simulator)


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Knobs of the search expert (defaults: the measured configuration, docs/experts.md)."""

    budget: int = 40_000  # environment steps searched per episode, all searches and replays together
    slots: int = 16  # states played side by side per search round
    unit: int = 4  # frames per macro unit: an action is chosen for a whole unit
    depth: int = 6  # units per rollout from a cell
    every: int = 4  # frames between archive updates within a rollout
    p_change: float = 0.35  # chance that a unit changes the action
    first_share: float = 0.5  # share of the remaining budget one search may spend
    cells: str = "position"  # "position": the agent's place and return (position_cells); "frame": frame_cells
    quantum: float = 1.0  # position cells: grid units per cell
    grid: int = 8  # frame cells (and where the position cannot be read): grid x grid grey means
    levels: int = 8  # frame cells: intensity levels
    best_bonus: float = 2.0  # extra pick weight of the cells with the best return
    seen_weight: float = 1.0  # pick weight of rarely reached cells, beside rarely picked ones
    smooth_below: int = 8  # runs of one action shorter than this are merged into a neighbour if no worse
    max_shortcuts: int = 20  # detours cut from one plan at most (each costs a replay)
    far_bonus: float = 0.0  # pick weight x (1 + far_bonus x the cell's distance from the start / the farthest's)
    commit: int = 48  # steps of an unfinished plan played before searching again (see _commit)


# Per-game changes to the defaults. Maze and miner move one tile per frame: with 4-frame units the
# search could only stop on every 4th tile and never turn into most side corridors, so their actions
# are chosen frame by frame (measured: docs/experts.md; chaser, half a tile per frame, did no better).
# In the games whose reward comes mostly with the level's end, one long first search pays (ninja:
# 6 of 10 train levels completed with first_share 0.8, 5 with 0.5); in the return games it cost
# return and time (docs/experts.md).
# In caveflyer and coinrun the exit lies far from the start: favouring far cells (far_bonus 3)
# completed 19 and 20 of 20 train levels, against 15 and 19 without; in ninja, climber, heist and
# leaper it moved at most one level of 20 either way (docs/experts.md).
_TO_THE_END = {"first_share": 0.8}
_FAR_EXIT = {**_TO_THE_END, "far_bonus": 3.0}
GAME_SETTINGS: dict[str, dict] = {
    "maze": {"unit": 1, "p_change": 0.25, "every": 2, "depth": 24, **_TO_THE_END},
    "miner": {"unit": 1, "p_change": 0.25, "every": 2, "depth": 24, **_TO_THE_END},
    **{game: _TO_THE_END for game in ("climber", "heist", "jumper", "leaper", "ninja")},
    **{game: _FAR_EXIT for game in ("caveflyer", "coinrun")},
}


def game_settings(game: str, **changes) -> SearchSettings:
    """The search settings of ``game``: the defaults, the game's own (``GAME_SETTINGS``), then ``changes``."""
    return dataclasses.replace(SearchSettings(), **{**GAME_SETTINGS.get(game, {}), **changes})


def digest(state: bytes) -> bytes:
    return hashlib.blake2b(state, digest_size=16).digest()


@dataclasses.dataclass
class Plan:
    """Native actions [n] from a start state, the digest of the state before each [n], the reward
    after each [n], and how it ends (``complete``: level finished; ``ended``: episode over)."""

    actions: list[int]
    digests: list[bytes]
    rewards: np.ndarray
    complete: bool
    ended: bool
    places: list = dataclasses.field(default_factory=list)  # the agent's (x, y) before each action, or None

    def outcome(self, start: int = 0) -> tuple[bool, float, bool]:
        """(complete, return of actions[start:], alive at the end) -- larger is better."""
        return self.complete, float(self.rewards[start:].sum()), not self.ended


@dataclasses.dataclass
class _Node:
    state: bytes
    actions: tuple[int, ...]
    ret: float
    last: int | None
    far: float = 0.0  # the cell's distance from the search's start (0 for frame cells)
    picked: int = 0
    seen: int = 0


class ProcgenSearchExpert:
    """Search expert for one Procgen game: ``reset()`` per episode, ``act(obs, state)`` per step.

    ``act`` takes the observation and the game's current state (``ProcgenEnv.get_state``) and
    returns a native action index (0..14; unified action ``PROCGEN_OFFSET + i``). ``max_steps`` is
    the episode's step limit (the search never plans past it). ``stats`` counts, per episode:
    ``searched`` environment steps, ``played`` steps, ``searches`` and ``repairs``.
    """

    def __init__(self, game: str, rng: np.random.Generator | None = None, *, max_steps: int = 200,
                 distribution_mode: str = "easy", settings: SearchSettings | None = None):
        if game not in GAME_ACTIONS:
            raise ValueError(f"no Procgen game {game!r}; games: {', '.join(sorted(GAME_ACTIONS))}")
        settings = game_settings(game) if settings is None else settings
        self.game, self.max_steps, self.settings = game, max_steps, settings
        self.actions = np.asarray(GAME_ACTIONS[game], np.int64)
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._sim = shared_simulator(game, settings.slots, distribution_mode)
        self._replayer = shared_simulator(game, 2, distribution_mode)
        self.reset()

    def reset(self) -> None:
        """Forget the episode: call at every episode start."""
        self._plan: Plan | None = None
        self._i = 0  # index of the next plan action
        self._t = 0  # steps played this episode
        self._last = NOOP  # the action chosen last (a new search's first macro continues it)
        self.stats = {"searched": 0, "played": 0, "searches": 0, "repairs": 0}

    @property
    def budget_left(self) -> int:
        return self.settings.budget - self.stats["searched"]

    def act(self, obs: dict, state: bytes) -> int:
        """Native action for the current step; ``obs["rgb"]`` [64, 64, 3] uint8, ``state`` the game's."""
        here = digest(state)
        plan = self._plan
        if plan is None or self._i >= len(plan.actions):
            self._replan(state, obs["rgb"], None)
        elif plan.digests[self._i] != here:
            self._replan(state, obs["rgb"], plan)
        plan = self._plan
        if plan is None or self._i >= len(plan.actions):  # nothing left to search with: keep going
            action = self._last
        else:
            action = plan.actions[self._i]
            self._i += 1
        self._last = action
        self._t += 1
        self.stats["played"] += 1
        return action

    # ------------------------------------------------------------------------------- replanning

    def _replan(self, state: bytes, frame: np.ndarray, broken: Plan | None) -> None:
        horizon = self.max_steps - self._t
        best: Plan | None = None
        if broken is not None:
            self.stats["repairs"] += 1
            i = self._i
            rest = broken.actions[i:]
            delayed = broken.actions[i - 1:] if i > 0 else rest
            tries = self._replay(state, [rest[:horizon], delayed[:horizon]])
            best = max(tries, key=lambda p: p.outcome())
            if best.actions and best.outcome() >= broken.outcome(i):
                self._plan, self._i = best, 0
                return
        budget = int(self.budget_left * self.settings.first_share)
        if budget >= self.settings.slots * self.settings.unit * self.settings.depth and horizon > 0:
            found = self._search(state, frame, horizon, budget)
            if found:
                plan = self._shortcut(state, self._commit(self._replay(state, [found])[0]))
                smooth = self._smooth(state, plan.actions, plan.outcome())
                if smooth != plan.actions:
                    plan = self._replay(state, [smooth])[0]
                if best is None or not best.actions or plan.outcome() > best.outcome():
                    best = plan
        self._plan, self._i = best, 0

    def _commit(self, plan: Plan) -> Plan:
        """A plan that does not finish the level is kept only up to its last reward (at least
        ``commit`` steps): what it does after that is a random walk, and a search from there does better."""
        if plan.complete or plan.ended:
            return plan
        paid = np.flatnonzero(plan.rewards != 0)
        keep = max(int(paid[-1]) + 1 if paid.size else 0, self.settings.commit)
        return Plan(plan.actions[:keep], plan.digests[:keep], plan.rewards[:keep], False, False)

    def _shortcut(self, state: bytes, plan: Plan) -> Plan:
        """``plan`` without its detours: where the agent comes back to a place it was at (and no
        reward came in between), the steps between are cut if the plan, played from ``state``,
        still does as well. Random exploration walks into dead ends and back (maze, miner)."""
        target, i, cuts = plan.outcome(), 0, 0
        while i < len(plan.places) and cuts < self.settings.max_shortcuts:
            here = plan.places[i]
            back = [j for j in range(len(plan.places) - 1, i, -1)
                    if here is not None and plan.places[j] == here and not plan.rewards[i:j].any()]
            if back and self.budget_left >= 2 * len(plan.actions):
                cut = plan.actions[:i] + plan.actions[back[0]:]
                if self._evaluate(state, [cut])[0] >= target:
                    plan, cuts = self._replay(state, [cut])[0], cuts + 1
                    continue
            i += 1
        return plan

    def _smooth(self, state: bytes, actions: list[int], target: tuple) -> list[int]:
        """``actions`` with pointless action changes taken out: each run of one action shorter than
        ``smooth_below`` frames takes the previous run's action (or the next run's) when the whole
        plan, played from ``state``, still does as well (``Plan.outcome``). Fewer changes are easier
        to imitate, and each one is a chance for a sticky action to break the plan."""
        actions = list(actions)
        b = 1
        while b < len(actions):
            if actions[b] == actions[b - 1]:
                b += 1
                continue
            e = b
            while e < len(actions) and actions[e] == actions[b]:
                e += 1
            if e - b < self.settings.smooth_below and self.budget_left >= 2 * len(actions):
                tries = [actions[:b] + [actions[b - 1]] * (e - b) + actions[e:]]
                if e < len(actions):
                    tries.append(actions[:b] + [actions[e]] * (e - b) + actions[e:])
                good = [t for t, o in zip(tries, self._evaluate(state, tries)) if o >= target]
                if good:  # one run fewer: look at the same place again
                    actions = good[0]
                    continue
            b = e
        return actions

    def _evaluate(self, state: bytes, candidates: list[list[int]]) -> list[tuple[bool, float, bool]]:
        """``Plan.outcome`` of each candidate (at most 2) played from ``state``, without digests."""
        sim = self._replayer
        sim.load([state] * sim.num)
        before = sim.steps
        ret = np.zeros(len(candidates))
        ended = np.zeros(len(candidates), bool)
        complete = np.zeros(len(candidates), bool)
        for t in range(max(len(c) for c in candidates)):
            live = ~ended & np.array([t < len(c) for c in candidates])
            if not live.any():
                break
            acts = np.array([c[t] if t < len(c) else NOOP for c in candidates] + [NOOP] * (sim.num - len(candidates)))
            reward, _, end, comp = sim.step(acts)
            k = len(candidates)
            ret += np.where(live, reward[:k], 0.0)
            complete |= live & comp[:k]
            ended |= live & end[:k]
        self.stats["searched"] += sim.steps - before
        return [(bool(c), float(r), not bool(e)) for c, r, e in zip(complete, ret, ended)]

    def _replay(self, state: bytes, candidates: list[list[int]]) -> list[Plan]:
        """Play each candidate (at most 2) from ``state``; a Plan each, with the states' digests."""
        sim = self._replayer
        sim.load([state] * sim.num)
        n = max(len(c) for c in candidates)
        out = [Plan([], [], np.zeros(0, np.float32), False, False) for _ in candidates]
        rewards = [[] for _ in candidates]
        live = np.ones(len(candidates), bool)
        before = sim.steps
        for t in range(n):
            live &= np.array([t < len(c) for c in candidates])
            if not live.any():
                break
            states = sim.states()
            acts = np.full(sim.num, NOOP)
            for j in np.flatnonzero(live):
                acts[j] = candidates[j][t]
                out[j].actions.append(int(candidates[j][t]))
                out[j].digests.append(digest(states[j]))
                out[j].places.append(agent_position(states[j]))
            reward, _, ended, complete = sim.step(acts)
            for j in np.flatnonzero(live):
                rewards[j].append(float(reward[j]))
                if ended[j]:
                    out[j].ended, out[j].complete, live[j] = True, bool(complete[j]), False
        self.stats["searched"] += sim.steps - before
        for p, r in zip(out, rewards):
            p.rewards = np.asarray(r, np.float32)
        return out

    # ---------------------------------------------------------------------------------- search

    def _search(self, root: bytes, frame: np.ndarray, horizon: int, budget: int) -> list[int]:
        """Go-Explore from ``root`` for at most ``budget`` steps; the best action sequence found."""
        cfg, sim, rng = self.settings, self._sim, self._rng
        self.stats["searches"] += 1
        cell = self._cells([root], frame[None], np.zeros(1))[0]
        origin = _place(cell) if cfg.far_bonus else None
        nodes = [_Node(root, (), 0.0, self._last if self._t else None)]
        archive = {cell: 0}
        # Best outcome so far: ((complete, return, alive, steps or -steps), actions).
        best: tuple[tuple, tuple[int, ...]] = ((False, 0.0, True, 0), ())
        start = sim.steps
        while sim.steps - start + cfg.slots * cfg.unit * cfg.depth <= budget:
            open_ = [j for j, n in enumerate(nodes) if len(n.actions) + cfg.unit <= horizon]
            if not open_:
                break
            rets = np.array([nodes[j].ret for j in open_])
            # Go-Explore's count weights: cells rarely picked, and cells rarely reached (the frontier).
            weight = (1.0 / np.sqrt(1.0 + np.array([nodes[j].picked for j in open_]))
                      + cfg.seen_weight / np.sqrt(1.0 + np.array([nodes[j].seen for j in open_])))
            weight *= 1.0 + cfg.best_bonus * (rets >= rets.max())
            if cfg.far_bonus:
                far = np.array([nodes[j].far for j in open_])
                weight *= 1.0 + cfg.far_bonus * far / max(far.max(), 1e-6)
            picks = [open_[j] for j in rng.choice(len(open_), size=cfg.slots, p=weight / weight.sum())]
            for j in picks:
                nodes[j].picked += 1
            sim.load([nodes[j].state for j in picks])
            action = np.array([nodes[j].last if nodes[j].last is not None else rng.choice(self.actions)
                               for j in picks], np.int64)
            ret = np.array([nodes[j].ret for j in picks])
            hist: list[list[int]] = [[] for _ in picks]
            live = np.ones(cfg.slots, bool)
            done = False
            for f in range(cfg.unit * cfg.depth):
                if f % cfg.unit == 0:
                    change = rng.random(cfg.slots) < cfg.p_change
                    action = np.where(change, rng.choice(self.actions, size=cfg.slots), action)
                reward, frames, ended, complete = sim.step(action)
                for s in np.flatnonzero(live):
                    hist[s].append(int(action[s]))
                    ret[s] += reward[s]
                    steps = len(nodes[picks[s]].actions) + len(hist[s])
                    if ended[s] or steps >= horizon:
                        live[s] = False
                        alive = not ended[s]
                        key = (bool(complete[s]), float(ret[s]), alive, -steps if complete[s] else steps)
                        if key > best[0]:
                            best = (key, nodes[picks[s]].actions + tuple(hist[s]))
                        done |= bool(complete[s])
                if done or not live.any():
                    break
                if (f + 1) % cfg.every:
                    continue
                states = sim.states() if cfg.cells == "position" else None
                cells = self._cells(states, frames, ret)
                better = []
                for s in np.flatnonzero(live):
                    steps = len(nodes[picks[s]].actions) + len(hist[s])
                    key = (False, float(ret[s]), True, steps)
                    if key > best[0]:
                        best = (key, nodes[picks[s]].actions + tuple(hist[s]))
                    j = archive.get(cells[s])
                    if j is not None:
                        nodes[j].seen += 1
                    if j is None or ret[s] > nodes[j].ret or (ret[s] == nodes[j].ret and steps < len(nodes[j].actions)):
                        better.append(s)
                if better:
                    states = states or sim.states()
                    for s in better:
                        node = _Node(states[s], nodes[picks[s]].actions + tuple(hist[s]), float(ret[s]),
                                     int(action[s]), _distance(_place(cells[s]), origin) if cfg.far_bonus else 0.0)
                        j = archive.get(cells[s])
                        if j is None:
                            archive[cells[s]] = len(nodes)
                            nodes.append(node)
                        else:
                            node.picked, node.seen = nodes[j].picked, nodes[j].seen
                            nodes[j] = node
            if done:
                break
        self.stats["searched"] += sim.steps - start
        return list(best[1])

    def _cells(self, states: list[bytes] | None, frames: np.ndarray, returns: np.ndarray) -> list[bytes]:
        """Archive cells of K slots: position cells where the agent's place can be read, else frame cells."""
        cfg = self.settings
        out = position_cells(states, returns, cfg.quantum) if states is not None else [None] * len(frames)
        if any(c is None for c in out):
            fallback = frame_cells(frames, cfg.grid, cfg.levels)
            out = [b"f" + f if c is None else c for c, f in zip(out, fallback)]
        return out


def _place(cell: bytes) -> tuple[float, float] | None:
    """The (x, y) tile of a position cell (``position_cells``); None for a frame cell."""
    return None if cell.startswith(b"f") else tuple(np.frombuffer(cell[:8], np.float32).tolist())


def _distance(place: tuple | None, origin: tuple | None) -> float:
    """Euclidean distance of two places; 0 where either is unknown (frame cells)."""
    return 0.0 if place is None or origin is None else float(np.hypot(place[0] - origin[0], place[1] - origin[1]))


def plan_statistics(actions: np.ndarray) -> dict[str, float]:
    """Imitability figures of an action sequence [T]: the rate of action changes between
    consecutive steps and the entropy (bits) of the actions' frequencies."""
    actions = np.asarray(actions)
    if actions.size == 0:
        return {"change_rate": 0.0, "entropy_bits": 0.0}
    _, counts = np.unique(actions, return_counts=True)
    p = counts / counts.sum()
    changes = float((actions[1:] != actions[:-1]).mean()) if actions.size > 1 else 0.0
    return {"change_rate": changes, "entropy_bits": float(-(p * np.log2(p)).sum())}


def play_episode(expert: ProcgenSearchExpert, env, core, level: int) -> tuple[np.ndarray, float, bool]:
    """One episode of ``expert`` on ``env`` (an icrl Procgen env, possibly sticky) from ``level``;
    ``core`` gives the game's state (``procgen_core(env)``). → (native actions [T], return, success)."""
    obs = env.reset(level)
    expert.reset()
    actions, ret = [], 0.0
    while True:
        a = expert.act(obs, core.get_state())
        actions.append(a)
        obs, r, terminated, truncated, info = env.step(PROCGEN_OFFSET + a)
        ret += r
        if terminated or truncated:
            return np.array(actions), ret, bool(info["success"])


__all__ = ["Plan", "ProcgenSearchExpert", "ProcgenSimulator", "SearchSettings", "play_episode", "plan_statistics"]
