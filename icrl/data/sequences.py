"""Bursty multi-trajectory sequences: which episodes go into sequence i, and how they are packed.

A sequence holds E episodes of one task: a *query* episode and E-1 context episodes. With
probability ``p_burst`` it is *bursty*: up to ``burst_episodes`` context episodes (default: all the
level has, at most E-1) share the query's level; every other context episode comes from a distinct
level of the task, different from the query's. So a sequence has two episodes of one level exactly
when it is bursty, and the measured burstiness matches ``p_burst``. A bursty draw whose level has no
second episode falls back to a non-bursty sequence; the fallbacks are counted (``stats``).

The order of the E episodes is shuffled; steps inside an episode keep their order.

NLD games are stored as pieces (``icrl.nld.segments``: level = game id, episode = piece number),
which are not separate episodes of one level: a context that held two pieces of one game, shuffled,
would show the model that game's future. So a sequence of an NLD task is up to E *consecutive*
pieces of one game, in game order, each from its first step (cut to the window); a piece's
timesteps are its true steps in the game (``TaskCatalog.offset``), and only the game's first piece
carries the episode-start marker. p_burst does not apply to them.

Cut rule for long episodes: an episode longer than ``max_episode_steps`` (default
``context_steps // E``) contributes a window of that many consecutive steps starting at a random
step; its first kept step carries the episode-start marker and ``timestep`` keeps the true step
index within the episode. So every sequence fits its budget and long NLD games are seen
throughout. The packed sequence is padded at the end to ``context_steps``.

Everything random is drawn from ``np.random.default_rng([seed, i])``: sequence i is a pure function
of (seed, i, the stores' contents).

Packing is ``icrl.data.layout.pack_parts``, the one function that also lays out evaluation
contexts. Packed sequence (numpy; T = context_steps, E = episodes_per_sequence)::

    obs              dict: nethack tty_chars/tty_colors [T, 24, 80] uint8, tty_cursor [T, 2] uint8;
                           procgen rgb [T, 64, 64, 3] uint8 (zeros on padding)
    actions          [T] int32   unified actions; PAD_ACTION on padding and for episodes without actions
    rewards          [T] float32
    episode_start    [T] bool    first kept step of each episode
    timestep         [T] int32   step index within its episode (its game, for NLD pieces; 0 on padding)
    episode_id       [T] int32   slot 0..E-1 of the step's episode, -1 on padding
    loss_mask        [T] bool    True where the action is a training target (not padding, has actions)
    recall           [T] int32   with data.recall: the recalled action of each step (icrl.data.recall)
    legal_mask       [VOCAB_SIZE] bool   the task's legal actions
    index            []  int64   the sequence's index i
    source_id, task_id [] int32  into the pipeline's source and task tables
    slot_level, slot_episode, slot_length, slot_start  [E] int64   per slot: level, episode number,
                                 steps kept, first kept step (-1 for empty slots in single mode)
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from icrl.config import ConfigBase
from icrl.data.layout import Part, pack_parts
from icrl.envs.actions import legal_mask
from icrl.errors import IcrlError

# Sources whose episodes are pieces of longer games (icrl.nld.segments), not whole episodes.
PIECE_SOURCES = ("nld-aa", "nld-nao")


class SourceConfig(ConfigBase):
    """One trajectory store the pipeline reads, with its mixing weight."""

    path: str = Field(description="Trajectory store directory.")
    weight: float = Field(1.0, gt=0.0, description="Relative probability that a sequence comes from it.")
    tasks: list[str] | None = Field(None, description="Only these tasks of the store (None: all).")


class SequenceConfig(ConfigBase):
    """How training sequences are built and batched."""

    sources: list[SourceConfig] = Field(default_factory=list, description="Stores to read, with weights.")
    mode: Literal["bursty", "single"] = Field(
        "bursty", description="'single': one trajectory per sequence (BC baselines); else E episodes.")
    episodes_per_sequence: int = Field(4, ge=1, description="E: episodes per sequence (bursty mode).")
    context_steps: int = Field(256, ge=1, description="Steps per sequence, padding included.")
    p_burst: float = Field(1.0, ge=0.0, le=1.0, description="Probability a sequence is bursty.")
    burst_episodes: int | None = Field(
        None, ge=1, description="Context episodes from the query's level when bursty (None: all it has).")
    max_episode_steps: int | None = Field(
        None, ge=1, description="Longer episodes are cut to a window of this many steps (None: T // E).")
    reward_tokens: bool = Field(False, description="Feed rewards to the model as tokens.")
    recall: Literal["none", "cell", "screen", "nearest"] = Field(
        "none", description="Each step also carries the action an earlier episode of its context took at a matching "
        "step (icrl.data.recall): 'cell' matches the cursor's cell, 'screen' the whole observation, 'nearest' takes the "
        "nearest frame by R&P's distance; must agree with model.recall.")
    seed: int = Field(0, description="Seed of the sequence stream: sequence i depends on (seed, i).")
    num_sequences: int = Field(1 << 30, ge=1, description="Length of the sequence stream.")
    pack: int = Field(
        1, ge=1, description="Sequences per row: up to this many laid end to end in one row, each attending only "
        "to itself (icrl.data.packing); 1: one sequence per row.")
    batch_size: int = Field(8, ge=1, description="Rows per batch (global, over all processes).")
    worker_count: int = Field(0, ge=0, description="Data worker processes per host, handing batches over shared memory (icrl.data.loader; 0: in-process).")

    @property
    def episodes(self) -> int:
        """Episodes per sequence in the current mode."""
        return 1 if self.mode == "single" else self.episodes_per_sequence

    @property
    def window(self) -> int:
        """Most steps one episode contributes."""
        cap = self.context_steps // self.episodes
        return min(self.max_episode_steps or cap, cap)

    @model_validator(mode="after")
    def _fits(self) -> "SequenceConfig":
        if self.context_steps // self.episodes < 1:
            raise ValueError(
                f"context_steps={self.context_steps} is too short for {self.episodes} episodes "
                f"of at least one step each")
        return self


@dataclasses.dataclass(frozen=True)
class SequencePlan:
    """Which episodes (index rows of one source) fill a sequence, in packing order."""

    source: int
    task: str
    rows: np.ndarray  # [n] int64 index rows, in packing order
    starts: np.ndarray  # [n] int64 first kept step of each
    lengths: np.ndarray  # [n] int64 steps kept of each
    offsets: np.ndarray  # [n] int64 step of each episode's first step within its game (0 but for NLD pieces)
    bursty: bool  # two of its episodes share a level
    fallback: bool  # drawn bursty, but the query's level had no second episode


class TaskCatalog:
    """The episodes of one store, grouped for sampling: task -> level -> index rows."""

    def __init__(self, index, tasks: list[str] | None, where: str):
        cols = index.columns
        names = index.strings["task"]
        wanted = set(tasks) if tasks is not None else set(names)
        unknown = sorted(wanted - set(names))
        if unknown:
            raise IcrlError(f"{where}: no episodes of task(s) {unknown}; the store has {sorted(names)}")
        self.tasks: list[str] = sorted(wanted)
        self.rows_by_task: list[np.ndarray] = []
        self.levels_by_task: list[np.ndarray] = []
        self.level_rows: list[dict[int, np.ndarray]] = []
        self.pieces: list[bool] = []  # per task: its episodes are pieces of games (never bursty)
        self.offset = np.zeros(len(index), np.int64)  # per row: first step within its game
        piece_codes = [c for c, name in enumerate(index.strings["source"]) if name in PIECE_SOURCES]
        for task in self.tasks:
            # Rows in (level, episode) order, not index order: the index's order follows shard
            # names, which hold writer pids and random ids, so two collections of the same data
            # would otherwise give two different sequence streams.
            rows = np.flatnonzero(index.task_mask(task))
            rows = rows[np.lexsort((cols["episode"][rows], cols["level"][rows]))]
            levels, first = np.unique(cols["level"][rows], return_index=True)
            self.rows_by_task.append(rows)
            self.levels_by_task.append(levels)
            self.level_rows.append({int(lv): r for lv, r in zip(levels, np.split(rows, first[1:]))})
            pieces = bool(len(rows)) and bool(np.isin(cols["source"][rows], piece_codes).all())
            self.pieces.append(pieces)
            if pieces:
                for game_rows in self.level_rows[-1].values():
                    order = game_rows[np.argsort(cols["episode"][game_rows], kind="stable")]
                    self.offset[order] = np.cumsum(cols["length"][order]) - cols["length"][order]
        counts = np.array([len(r) for r in self.rows_by_task], dtype=np.float64)
        self.task_probs = counts / counts.sum()
        self.level = cols["level"]
        self.length = cols["length"]
        self.domains = sorted({index.strings["domain"][c] for c in np.unique(cols["domain"])}) if len(index) else []


def check_catalog(catalog: TaskCatalog, cfg: SequenceConfig, where: str) -> None:
    """Raise IcrlError, before anything runs, if some task cannot fill a sequence.

    A non-bursty sequence needs E distinct levels. A bursty one drawn on level L takes
    min(episodes of L - 1, burst_episodes) more episodes of L and the rest from as many other
    levels, so with p_burst = 1 a task needs E - that many levels, at its worst level. NLD pieces
    come from one game per sequence and need nothing more. The error names the task, what it has, and what the settings need.
    """
    E = cfg.episodes
    if E == 1:
        return
    burst = min(cfg.burst_episodes or E - 1, E - 1)
    for t, (task, levels) in enumerate(zip(catalog.tasks, catalog.levels_by_task)):
        if catalog.pieces[t]:
            continue  # consecutive pieces of one game: any game will do
        per_level = np.array([len(catalog.level_rows[t][int(lv)]) for lv in levels])
        if cfg.p_burst < 1.0:
            need, why = E, f"p_burst={cfg.p_burst} < 1 draws non-bursty sequences"
        else:
            worst = int(min(per_level.min() - 1, burst))
            need = E - worst
            why = (f"its levels hold {per_level.min()} to {per_level.max()} episodes, so a bursty draw "
                   f"takes at least {worst} more from the query's level")
        if len(levels) < need:
            raise IcrlError(
                f"{where}: task {task!r} has episodes on {len(levels)} level(s); sequences of E={E} "
                f"episodes need at least {need} distinct levels ({why}); lower data.episodes_per_sequence, "
                f"or collect more levels (or more episodes per level) of it")


def plan_sequence(catalogs: list[TaskCatalog], weights: np.ndarray, cfg: SequenceConfig, i: int) -> SequencePlan:
    """The episodes of sequence ``i``: a pure function of (cfg.seed, i, catalogs)."""
    rng = np.random.default_rng([cfg.seed, i])
    source = int(rng.choice(len(catalogs), p=weights))
    cat = catalogs[source]
    t = int(rng.choice(len(cat.tasks), p=cat.task_probs))
    query = int(rng.choice(cat.rows_by_task[t]))
    level = int(cat.level[query])
    E = cfg.episodes
    rows = [query]
    drawn_bursty = rng.random() < cfg.p_burst  # always drawn, so the stream's shape is fixed
    fallback = False
    if cat.pieces[t]:
        # Up to E consecutive pieces of the query's game, in game order, each from its first step.
        game = cat.level_rows[t][level]
        first = max(0, min(int(np.flatnonzero(game == query)[0]), len(game) - E))
        rows_arr = game[first:first + E]
        lengths = np.minimum(cat.length[rows_arr], cfg.window).astype(np.int64)
        return SequencePlan(source=source, task=cat.tasks[t], rows=rows_arr, starts=np.zeros(len(rows_arr), np.int64),
                            lengths=lengths, offsets=cat.offset[rows_arr], bursty=False, fallback=False)
    if E > 1:
        same = cat.level_rows[t][level]
        same = same[same != query]
        n_same = 0
        if drawn_bursty:
            n_same = min(len(same), cfg.burst_episodes or E - 1, E - 1)
            fallback = n_same == 0
            rows += rng.choice(same, size=n_same, replace=False).tolist()
        others = cat.levels_by_task[t]
        others = others[others != level]
        for lv in rng.choice(others, size=E - 1 - n_same, replace=False):
            rows.append(int(rng.choice(cat.level_rows[t][int(lv)])))
    rows_arr = np.asarray(rows, dtype=np.int64)[rng.permutation(len(rows))]
    lengths = cat.length[rows_arr].astype(np.int64)
    kept = np.minimum(lengths, cfg.window)
    starts = np.array([rng.integers(0, n - k + 1) for n, k in zip(lengths, kept)], dtype=np.int64)
    levels = cat.level[rows_arr]
    bursty = len(np.unique(levels)) < len(levels)
    return SequencePlan(source=source, task=cat.tasks[t], rows=rows_arr, starts=starts, lengths=kept,
                        offsets=cat.offset[rows_arr], bursty=bool(bursty), fallback=fallback)


def pack_sequence(plan: SequencePlan, episodes: list, cfg: SequenceConfig, domain: str,
                  legal: np.ndarray, index: int, task_id: int) -> dict[str, np.ndarray | dict]:
    """Lay the planned episodes (``Episode`` objects, in plan order) end to end into one sequence."""
    # A part marks an episode start only where its game starts: the later pieces of an NLD game
    # continue the piece before them.
    parts = [Part(ep, int(s), int(n), int(o), marks_start=int(o) == 0)
             for ep, s, n, o in zip(episodes, plan.starts, plan.lengths, plan.offsets)]
    row = pack_parts(parts, domain, cfg.context_steps, cfg.recall)
    slot = {k: np.full(cfg.episodes, -1, np.int64) for k in ("slot_level", "slot_episode", "slot_length", "slot_start")}
    for j, p in enumerate(parts):
        slot["slot_level"][j], slot["slot_episode"][j] = p.episode.level, p.episode.episode
        slot["slot_length"][j], slot["slot_start"][j] = p.n, p.start
    return {
        **row, "legal_mask": legal_mask(legal), "index": np.int64(index), "source_id": np.int32(plan.source),
        "task_id": np.int32(task_id), **slot,
    }
