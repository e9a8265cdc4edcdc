"""The in-context diagnostic: does the model use its context? No rollouts needed.

For held-out levels with several demos, the teacher-forced action loss of one demo (the *query*)
is measured twice, with the same number of context episodes before it:

- **same**: the other demos of the query's level (what a k-shot evaluation gives it);
- **other**: demos of other levels of the same task (a context of the right kind that says
  nothing about this level).

Both rows are laid out by the run's ``ContextLayout`` through ``icrl.data.layout.pack_parts``, the
function training rows and evaluation contexts use, and only the query's actions count. A model
that reads its context has ``other − same`` (``diag_gap``) above zero; one that ignores it has 0.
``icrl train`` logs the three figures every ``diagnostic.every`` steps (metrics.jsonl, TensorBoard),
and ``icrl eval RUN --diagnostic`` prints them for a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from icrl.config import ConfigBase
from icrl.data.layout import ContextLayout, Part, pack_parts
from icrl.envs.actions import legal_mask
from icrl.envs.registry import task_legal_actions
from icrl.errors import IcrlError
from icrl.store.reader import TrajectoryStore

class DiagnosticConfig(ConfigBase):
    """The in-context diagnostic that ``icrl train`` logs while training."""

    demos: str | None = Field(None, description="Store of held-out demos (null: no diagnostic).")
    every: int = Field(100, ge=1, description="Log the diagnostic every this many steps (and at the end).")
    levels: int = Field(16, ge=1, description="Query levels per task (the store's first ones).")
    tasks: list[str] | None = Field(None, description="Tasks of the store to use (null: all).")


def diagnostic_batches(store: TrajectoryStore, layout: ContextLayout, *, tasks: list[str] | None = None,
                       levels: int = 16) -> dict[str, dict]:
    """``{"same": batch, "other": batch}``, each [R, T, ...] numpy (T = layout.context_steps), one row
    per query level; the query is the level's last demo, after c = min(E - 1, demos - 1) context
    episodes. IcrlError if no level of any task has two demos."""
    rows: dict[str, list[dict]] = {"same": [], "other": []}
    domain = None
    for task in tasks or store.tasks():
        all_levels = sorted(store.levels(task))
        if not all_levels:
            raise IcrlError(f"diagnostic demos {store.root}: no episodes of task {task!r}")
        demos = {lv: sorted(store.episodes_of(task, lv), key=lambda r: r.episode) for lv in all_levels}
        legal = legal_mask(task_legal_actions(task))
        used = [lv for lv in all_levels if len(demos[lv]) >= 2][:levels]
        for i, lv in enumerate(used):
            c = min(layout.max_demos, len(demos[lv]) - 1)
            others = [o for o in all_levels[all_levels.index(lv) + 1:] + all_levels[:all_levels.index(lv)]][:c]
            if len(others) < c:
                continue  # too few other levels for an equal-sized other-level context
            query = store.read(demos[lv][-1])
            domain = query.domain
            contexts = {"same": [store.read(r) for r in demos[lv][:c]],
                        "other": [store.read(demos[o][0]) for o in others]}
            for kind, context in contexts.items():
                parts = [Part(ep, 0, min(ep.length, layout.window)) for ep in (*context, query)]
                row = pack_parts(parts, domain, layout.context_steps, layout.recall)
                row["loss_mask"] &= row["episode_id"] == len(parts) - 1  # only the query's actions
                row["legal_mask"] = legal
                rows[kind].append(row)
    if not rows["same"]:
        raise IcrlError(f"diagnostic demos {store.root}: no level with two demos and enough other levels")
    return {kind: _stack(rs) for kind, rs in rows.items()}


def _stack(rows: list[dict]) -> dict:
    """Rows -> a batch with the keys a training batch sends to the devices (``train.step.DEVICE_KEYS``)."""
    from icrl.train.step import DEVICE_KEYS, PACKED_KEYS  # lazily: icrl.train.config imports this module

    out = {k: np.stack([r[k] for r in rows]) for k in DEVICE_KEYS + PACKED_KEYS if k != "obs" and k in rows[0]}
    out["obs"] = {k: np.stack([r["obs"][k] for r in rows]) for k in rows[0]["obs"]}
    return out


def figures(same_loss: float, other_loss: float) -> dict[str, float]:
    """The logged figures: both losses and the gap other − same (> 0: the context is used)."""
    return {"diag_same_loss": float(same_loss), "diag_other_loss": float(other_loss),
            "diag_gap": float(other_loss - same_loss)}


def query_loss(template, params, batch) -> "jax.Array":  # noqa: F821 (jax imported lazily)
    """Mean teacher-forced cross-entropy of the batch's counted actions, no dropout: a pure function,
    the training step's loss (``train.step.microbatch_loss``) over the whole batch."""
    from icrl.train.step import counted, microbatch_loss

    return microbatch_loss(template, params, batch, None, counted(batch).sum().astype("float32"))[0]


def run_diagnostic(run_dir: str | Path, demos: str | Path, step: int | None = None, levels: int = 16) -> dict:
    """The diagnostic of a run's checkpoint (the latest when ``step`` is None) on ``demos``."""
    import jax

    from icrl.data.layout import load_layout
    from icrl.eval.load import load_trained
    from icrl.train.state import ModelTemplate

    model, exp, loaded = load_trained(run_dir, step)
    layout = load_layout(run_dir, exp)
    with TrajectoryStore(demos) as store:
        batches = diagnostic_batches(store, layout, levels=levels)
    from flax import nnx

    template = ModelTemplate(exp.model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    loss = jax.jit(lambda p, b: query_loss(template, p, b))
    out = figures(float(loss(params, batches["same"])), float(loss(params, batches["other"])))
    return {"step": loaded, "queries": int(batches["same"]["actions"].shape[0]), **out}
