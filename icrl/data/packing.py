"""Several sequences in one row: segments that never see each other.

MiniHack episodes are short (MazeWalk-9x9 about 14 steps, the quickstart's mix about 22), so a
row of ``context_steps`` = E·W steps that holds one sequence of E episodes is mostly padding
(83% in the quickstart: 695 counted steps in a batch of 16 × 256). With ``data.pack`` = N > 1, row r
holds sequences r·N … r·N + N − 1, laid end to end in that order, each kept if it still fits what
is left of the row (first fit; the first always fits). Each kept sequence is a *segment*:

- it is laid out by ``pack_parts`` exactly as a row of its own would be (the one context layout,
  ``icrl.data.layout``);
- its steps count positions from 0 (``segment_step``), so token positions are those of a row of
  its own, and an evaluation context (k demos, then the rollout: one segment) has the positions
  training used;
- attention is causal *within* the segment only (``segment``; ``icrl.model.model``).

So a packed row trains exactly what its segments would train one per row, at a fraction of the
compute. Sequences that do not fit are left out; long ones more often than short ones, so
``icrl data sequences`` reports the fraction left out per task (``packing_stats``).

Packed row (numpy; T = context_steps, N = pack, E = episodes per sequence, V = vocabulary)::

    obs, actions, rewards, episode_start, timestep, loss_mask   as icrl.data.sequences ([T, ...])
    recall         [T] int32   with data.recall: recalled within the step's own segment only
    episode_id     [T] int32   part 0.. of the step across the row's segments, -1 on padding
    segment        [T] int32   segment 0..n-1 of the step, -1 on padding
    segment_step   [T] int32   step index within its segment (0 on padding)
    legal_mask     [T, V] bool the legal actions of the step's segment's task (segment 0's on padding)
    index          []  int64   the row's index r
    source_id, task_id, sequence  [N] int32/int64   per segment (-1 where fewer than N were kept)
    slot_level, slot_episode, slot_length, slot_start  [N·E] int64   per episode slot (-1: empty)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from icrl.data.layout import Part, pack_parts
from icrl.data.sequences import SequenceConfig, SequencePlan
from icrl.envs.actions import legal_mask


def row_candidates(cfg: SequenceConfig, r: int) -> range:
    """The sequence indices that row ``r`` draws from: r·N .. r·N + N − 1."""
    return range(r * cfg.pack, (r + 1) * cfg.pack)


def plan_row(plan: Callable[[int], SequencePlan], cfg: SequenceConfig, r: int) -> list[tuple[int, SequencePlan]]:
    """(sequence index, plan) of the sequences row ``r`` keeps, in order: first fit over its candidates."""
    plans = [(i, plan(i)) for i in row_candidates(cfg, r)]
    kept, used = [], 0
    # Longest first (first-fit decreasing): the longest candidate always fits, so long sequences
    # are left out less often than in draw order.
    for i, p in sorted(plans, key=lambda ip: -int(ip[1].lengths.sum())):
        n = int(p.lengths.sum())
        if used + n <= cfg.context_steps:
            kept.append((i, p))
            used += n
    return sorted(kept, key=lambda ip: ip[0])


def pack_row(kept: Sequence[tuple[int, SequencePlan]], episodes: Sequence[list], cfg: SequenceConfig, domain: str,
             legal: Sequence[np.ndarray], task_ids: Sequence[int], r: int) -> dict:
    """Lay the kept sequences (their plans, their ``Episode`` lists, their tasks' legal actions and
    task ids) end to end into row ``r`` (format in the module docstring)."""
    parts, spans = [], []
    at = 0
    for j, ((_, plan), eps) in enumerate(zip(kept, episodes, strict=True)):
        parts += [Part(ep, int(s), int(n), int(o), marks_start=int(o) == 0, group=j)
                  for ep, s, n, o in zip(eps, plan.starts, plan.lengths, plan.offsets)]
        n = int(plan.lengths.sum())
        spans.append((at, at + n))
        at += n
    row = pack_parts(parts, domain, cfg.context_steps, cfg.recall)
    T, N, E = cfg.context_steps, cfg.pack, cfg.episodes
    segment = np.full(T, -1, np.int32)
    segment_step = np.zeros(T, np.int32)
    masks = [legal_mask(a) for a in legal]
    row_legal = np.broadcast_to(masks[0], (T, masks[0].shape[0])).copy()
    for j, (lo, hi) in enumerate(spans):
        segment[lo:hi] = j
        segment_step[lo:hi] = np.arange(hi - lo, dtype=np.int32)
        row_legal[lo:hi] = masks[j]
    per_segment = {"source_id": np.full(N, -1, np.int32), "task_id": np.full(N, -1, np.int32),
                   "sequence": np.full(N, -1, np.int64)}
    slot = {k: np.full(N * E, -1, np.int64) for k in ("slot_level", "slot_episode", "slot_length", "slot_start")}
    for j, ((i, plan), eps) in enumerate(zip(kept, episodes)):
        per_segment["source_id"][j], per_segment["task_id"][j], per_segment["sequence"][j] = plan.source, task_ids[j], i
        for e, (ep, n, s) in enumerate(zip(eps, plan.lengths, plan.starts)):
            slot["slot_level"][j * E + e], slot["slot_episode"][j * E + e] = ep.level, ep.episode
            slot["slot_length"][j * E + e], slot["slot_start"][j * E + e] = n, s
    return {**row, "segment": segment, "segment_step": segment_step, "legal_mask": row_legal,
            "index": np.int64(r), **per_segment, **slot}
