"""What a sequence stream looks like: measured burstiness, padding, and a compact layout view."""

from __future__ import annotations

import dataclasses

import numpy as np

from icrl.data.packing import plan_row
from icrl.data.pipeline import SequenceSource


@dataclasses.dataclass(frozen=True)
class SequenceStats:
    sequences: int
    burstiness: float  # fraction of sequences with two episodes of one level
    fallbacks: int  # bursty draws whose level had no second episode
    padding: float  # fraction of steps that are padding
    episodes_per_sequence: float
    cut_episodes: float  # fraction of episodes cut to a window


def sequence_stats(source: SequenceSource, n: int, start: int = 0) -> SequenceStats:
    """Statistics of sequences [start, start + n), from their plans (no episode is decoded)."""
    plans = [source.plan(i) for i in range(start, start + n)]
    steps = np.array([p.lengths.sum() for p in plans], dtype=np.float64)
    full = [source.catalogs[p.source].length[p.rows] for p in plans]
    cut = sum(int((f > p.lengths).sum()) for f, p in zip(full, plans))
    episodes = sum(len(p.rows) for p in plans)
    return SequenceStats(
        sequences=n,
        burstiness=float(np.mean([p.bursty for p in plans])),
        fallbacks=int(sum(p.fallback for p in plans)),
        padding=float(1.0 - steps.mean() / source.cfg.context_steps),
        episodes_per_sequence=episodes / n,
        cut_episodes=cut / max(episodes, 1),
    )


@dataclasses.dataclass(frozen=True)
class RecallStats:
    rows: int  # rows read (sequences, or packed rows of several)
    targets: int  # steps whose action is a training target
    hit: float  # fraction of targets with a recalled action (icrl.data.recall)
    agrees: float  # fraction of those whose recalled action is the target


def recall_stats(source: SequenceSource, n: int, start: int = 0) -> RecallStats:
    """How much the recalled actions of rows [start, start + n) tell (``data.recall`` set): they are
    decoded, so this reads n rows' episodes."""
    from icrl.data.recall import NO_RECALL

    targets = hits = agree = 0
    for i in range(start, start + n):
        row = source[i]
        counted = row["loss_mask"]
        hit = counted & (row["recall"] != NO_RECALL)
        targets += int(counted.sum())
        hits += int(hit.sum())
        agree += int((hit & (row["recall"] == row["actions"])).sum())
    return RecallStats(rows=n, targets=targets, hit=hits / max(targets, 1), agrees=agree / max(hits, 1))


def render_sequence(source: SequenceSource, i: int) -> str:
    """One line per sequence: its task, then each slot as level/episode:steps (+start if cut)."""
    plan = source.plan(i)
    store = source.stores[plan.source]
    slots = []
    for row, start, n in zip(plan.rows, plan.starts, plan.lengths):
        ref = store.index.ref(int(row))
        cut = f"@{int(start)}" if n < ref.length else ""
        slots.append(f"L{ref.level}/e{ref.episode}:{int(n)}{cut}")
    pad = source.cfg.context_steps - int(plan.lengths.sum())
    tag = "bursty" if plan.bursty else ("fallback" if plan.fallback else "plain")
    return (f"#{i:<6d} {plan.task:32s} {tag:8s} "
            f"[{' | '.join(slots)}] pad {pad}")


@dataclasses.dataclass(frozen=True)
class PackingStats:
    rows: int
    segments_per_row: float  # sequences kept per row
    padding: float  # fraction of the rows' steps that are padding
    left_out: float  # fraction of candidate sequences that did not fit
    left_out_by_task: dict[str, float]  # the same per task: long sequences are left out more often


def packing_stats(source: SequenceSource, rows: int, start: int = 0) -> PackingStats:
    """Statistics of packed rows [start, start + rows) (``data.pack`` > 1), from plans only."""
    cfg = source.cfg
    steps, kept_n = [], 0
    drawn: dict[str, int] = {}
    kept_by: dict[str, int] = {}
    for r in range(start, start + rows):
        kept = plan_row(source.plan, cfg, r)
        kept_n += len(kept)
        steps.append(sum(int(p.lengths.sum()) for _, p in kept))
        kept_ids = {i for i, _ in kept}
        for i in range(r * cfg.pack, (r + 1) * cfg.pack):
            task = source.plan(i).task
            drawn[task] = drawn.get(task, 0) + 1
            kept_by[task] = kept_by.get(task, 0) + (i in kept_ids)
    candidates = rows * cfg.pack
    return PackingStats(
        rows=rows,
        segments_per_row=kept_n / rows,
        padding=float(1.0 - np.mean(steps) / cfg.context_steps),
        left_out=1.0 - kept_n / candidates,
        left_out_by_task={t: 1.0 - kept_by[t] / drawn[t] for t in sorted(drawn)},
    )
