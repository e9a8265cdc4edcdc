"""The context layout: how episodes are laid end to end into one model row.

One function, ``pack_parts``, builds the rows of training sequences (``icrl.data.sequences``) and
the evaluation contexts (``icrl.eval.model_policy``: k demos, then the rollout), so the two can
never drift apart. A ``ContextLayout`` says what training showed the model:

    episodes         E: episodes per training row (one of them the query)
    window           W: the most steps one episode contributes (longer ones are cut to W)
    context_steps    T: steps per row, padding included (E * W <= T)
    tokens_per_step  S: observation + action (+ reward) tokens
    positions        'rope' | 'learned'
    recall           'none' | 'cell' | 'screen': the key of each step's recalled action (icrl.data.recall)

``icrl train`` saves it as ``<run>/layout.json``; ``icrl eval`` reads it back and lays k demos
out as training did: each demo cut to its first W steps (training cuts a long episode to a window
of W steps; the rollout starts at the level's start, so the demo's start is the part that
matters), then the rollout, which may last W steps. With k <= E - 1 every position and window of
an evaluation context was seen in training; more demos than that get a warning (``warnings``).

A part is one episode's contribution: steps ``start .. start+n-1`` of it. ``offset`` is added to
its timesteps: the step index of the episode's first step within its whole game (non-zero for the
later pieces of an NLD game, ``icrl.nld.segments``), so timesteps are true game steps.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from icrl.data.recall import NO_RECALL, RecallMode, RecallTable
from icrl.envs.actions import PAD_ACTION
from icrl.errors import IcrlError
from icrl.store.episode import OBS_SPECS, Episode

LAYOUT_FILE = "layout.json"


@dataclasses.dataclass(frozen=True)
class ContextLayout:
    """What a training row held (see the module docstring)."""

    episodes: int
    window: int
    context_steps: int
    tokens_per_step: int
    positions: str
    max_positions: int | None = None  # rows of a learned position table; None with RoPE (no limit)
    recall: str = "none"  # the recalled action each step carries (icrl.data.recall); "none": no such input

    @property
    def max_demos(self) -> int:
        """Demos before the rollout that training contexts held at most: E - 1."""
        return max(self.episodes - 1, 0)

    def demo_steps(self, k: int) -> int:
        """Steps the k demos may fill: k windows."""
        return k * self.window

    def tokens(self, k: int) -> int:
        """Tokens of an evaluation context with k demos and a full rollout: (k + 1) W S."""
        return (self.demo_steps(k) + self.window) * self.tokens_per_step

    def check(self, k: int) -> None:
        """IcrlError if a context of k demos cannot be laid out: more tokens than a learned table has."""
        if self.max_positions is not None and self.tokens(k) > self.max_positions:
            raise IcrlError(f"k={k} demos need {self.tokens(k)} tokens; the model's learned positions end at "
                            f"{self.max_positions} (model.max_tokens): evaluate with fewer demos")

    def warnings(self, k: int) -> list[str]:
        """Named warnings for a context of k demos that training never showed (empty if it did)."""
        out = []
        if k > self.max_demos:
            out.append(f"more-demos-than-training: k={k} demos, training contexts held at most "
                       f"{self.max_demos} episodes before the query (E={self.episodes})")
        if (k + 1) * self.window > self.context_steps:
            out.append(f"positions-beyond-training: k={k} demos and a {self.window}-step rollout make "
                       f"{(k + 1) * self.window} steps, training rows held {self.context_steps}")
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def layout_of(data_cfg, model_cfg) -> ContextLayout:
    """The layout of a run from its ``data`` (SequenceConfig) and ``model`` (ModelConfig) sections."""
    return ContextLayout(episodes=data_cfg.episodes, window=data_cfg.window, context_steps=data_cfg.context_steps,
                         tokens_per_step=model_cfg.tokens_per_step, positions=model_cfg.positions,
                         max_positions=model_cfg.max_tokens if model_cfg.positions == "learned" else None,
                         recall=data_cfg.recall)


def save_layout(layout: ContextLayout, run_dir: str | Path) -> Path:
    """Write ``<run_dir>/layout.json`` (temp file + rename)."""
    path = Path(run_dir) / LAYOUT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(layout.to_json() + "\n")
    tmp.replace(path)
    return path


def load_layout(run_dir: str | Path, exp=None) -> ContextLayout:
    """The layout a run saved. A run from before layouts were saved has none: then, given its
    experiment config ``exp``, the layout that config trained with. IcrlError naming the file if it
    is malformed, or missing with no ``exp``."""
    path = Path(run_dir) / LAYOUT_FILE
    if not path.is_file():
        if exp is not None:
            return layout_of(exp.data, exp.model)
        raise IcrlError(f"{path}: missing (the run has no saved context layout)")
    try:
        fields = json.loads(path.read_text())
        return ContextLayout(**{f.name: fields[f.name] for f in dataclasses.fields(ContextLayout) if f.name in fields})
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise IcrlError(f"{path}: not a context layout ({err})") from None


@dataclasses.dataclass(frozen=True)
class Part:
    """Steps ``start .. start+n-1`` of ``episode``; ``offset`` is added to its timesteps;
    ``marks_start``: its first step carries the episode-start marker (not for a piece that
    continues the one before it); ``group``: the context it belongs to (a packed row's segment):
    recall looks back over the earlier parts of its group only."""

    episode: Episode
    start: int
    n: int
    offset: int = 0
    marks_start: bool = True
    group: int = 0


def pack_parts(parts: Sequence[Part], domain: str, steps: int, recall: RecallMode = "none") -> dict:
    """Lay ``parts`` end to end into one row of ``steps`` steps, padded at the end.

    Returns (numpy; T = steps, P = len(parts))::

        obs            dict: nethack tty_chars/tty_colors [T, 24, 80] uint8, tty_cursor [T, 2] uint8;
                       procgen rgb [T, 64, 64, 3] uint8 (zeros on padding)
        actions        [T] int32   PAD_ACTION on padding and for episodes without actions
        rewards        [T] float32
        episode_start  [T] bool    first step of each part that ``marks_start``
        timestep       [T] int32   offset + step index within the episode (0 on padding)
        episode_id     [T] int32   part 0..P-1 of the step, -1 on padding
        loss_mask      [T] bool    a training target: not padding, has an action
        recall         [T] int32   only with ``recall`` != "none": each step's recalled action, from
                                   the earlier parts of its group (``icrl.data.recall``; NO_RECALL
                                   where none matches, and on padding)
    """
    total = sum(p.n for p in parts)
    if total > steps:
        raise ValueError(f"{total} steps of parts do not fit a row of {steps}")
    spec = OBS_SPECS[domain]
    obs = {k: np.zeros((steps, *shape), dtype) for k, (shape, dtype) in spec.items()}
    actions = np.full(steps, PAD_ACTION, np.int32)
    rewards = np.zeros(steps, np.float32)
    episode_start = np.zeros(steps, bool)
    timestep = np.zeros(steps, np.int32)
    episode_id = np.full(steps, -1, np.int32)
    loss_mask = np.zeros(steps, bool)
    at = 0
    for j, p in enumerate(parts):
        ep, start, n = p.episode, int(p.start), int(p.n)
        src, dst = slice(start, start + n), slice(at, at + n)
        for k in spec:
            obs[k][dst] = ep.observations[k][src]
        actions[dst] = ep.actions[src] if ep.has_actions else PAD_ACTION
        rewards[dst] = ep.rewards[src]
        if n and p.marks_start:
            episode_start[at] = True
        timestep[dst] = np.arange(p.offset + start, p.offset + start + n, dtype=np.int32)
        episode_id[dst] = j
        # Observation-only episodes (NLD-NAO) and unmapped keys (PAD_ACTION) are never targets.
        loss_mask[dst] = ep.has_actions & (actions[dst] != PAD_ACTION)
        at += n
    row = {"obs": obs, "actions": actions, "rewards": rewards, "episode_start": episode_start,
           "timestep": timestep, "episode_id": episode_id, "loss_mask": loss_mask}
    if recall != "none":
        row["recall"] = recall_row(parts, row, recall)[0]
    return row


def recall_row(parts: Sequence[Part], row: dict, mode: RecallMode) -> tuple[np.ndarray, dict[int, RecallTable]]:
    """The recalled action [T] int32 of every step of a row that ``pack_parts`` laid out from
    ``parts`` (part j looks up the parts of its group laid out before it, then joins its group's
    table), and the tables at the end, by group."""
    out = np.full(len(row["actions"]), NO_RECALL, np.int32)
    tables: dict[int, RecallTable] = {}
    at = 0
    for p in parts:
        dst = slice(at, at + int(p.n))
        table = tables.setdefault(p.group, RecallTable(mode))
        obs = {k: v[dst] for k, v in row["obs"].items()}
        keys = table.keys(obs)
        out[dst] = table.lookup(keys)
        table.add(keys, row["actions"][dst])
        at += int(p.n)
    return out, tables


def demo_parts(demos: Sequence[Episode], layout: ContextLayout) -> list[Part]:
    """The k demos of an evaluation context: each its first ``window`` steps, in the given order."""
    return [Part(d, 0, min(d.length, layout.window)) for d in demos]


def demo_row(demos: Sequence[Episode], layout: ContextLayout, domain: str) -> dict | None:
    """The demos as one model batch row (leading axis 1) of ``layout.demo_steps(k)`` steps, padded;
    None without demos. ``lengths`` [1] int32 holds the steps actually filled."""
    if not demos:
        return None
    parts = demo_parts(demos, layout)
    row = pack_parts(parts, domain, layout.demo_steps(len(demos)), layout.recall)
    out = {k: (v[None] if k != "obs" else {o: a[None] for o, a in v.items()}) for k, v in row.items()}
    out["lengths"] = np.array([sum(p.n for p in parts)], np.int32)
    return out


def demo_recall(demos: Sequence[Episode], layout: ContextLayout, domain: str) -> RecallTable | None:
    """What a rollout after these demos recalls: the table of the demos' windows, as the query
    episode of a training row sees its earlier episodes (``recall_row``); None when the layout has
    no recall. No demos: an empty table."""
    if layout.recall == "none":
        return None
    parts = demo_parts(demos, layout)
    row = pack_parts(parts, domain, layout.demo_steps(len(demos)))
    return recall_row(parts, row, layout.recall)[1].get(0, RecallTable(layout.recall))
