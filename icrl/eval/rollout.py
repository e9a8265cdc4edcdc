"""Roll a policy out on a batch of env rows of one task: R episodes at once, each row on its own level
with its own demos, in one vector env.

    records = run_rows(venv, policy, demos, row_demos, levels, rngs, seeds=seeds)   # R records
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icrl.envs.base import VectorEnv
from icrl.eval.policies import Policy
from icrl.store.episode import Episode


def run_rows(venv: VectorEnv, policy: Policy, demos: Sequence[Sequence[Episode]], row_demos: np.ndarray,
             levels: Sequence[int], rngs: Sequence[np.random.Generator], *, seeds: Sequence | None = None,
             max_steps: int | None = None) -> list[dict]:
    """Play one episode per row of ``venv``: row r on ``levels[r]`` with demos ``demos[row_demos[r]]``.

    ``demos``: L demo sets; ``row_demos`` [R] int in [0, L); ``rngs``: R policy generators (one per
    row); ``seeds`` [R]: per-row sticky-action seeds, given to ``venv.reset`` (a ``StickyVectorEnv``)
    so that row r's sticky draws depend on its own seed only; None leaves the env's generators as
    they are. ``max_steps`` bounds the episode length on top of the env's own limit (None: the
    env's only). R must equal ``venv.num_envs``.

    Returns one record per row: ``return``, ``length``, ``success``, ``truncated`` (cut by
    ``max_steps`` or the policy's ``step_limit``, e.g. a full context, rather than the env).
    """
    n = venv.num_envs
    if not len(levels) == len(row_demos) == len(rngs) == n:
        raise ValueError(f"{n} env rows need {n} levels, row_demos and rngs; got "
                         f"{len(levels)}, {len(row_demos)}, {len(rngs)}")
    policy.attach(venv)
    policy.start(venv.spec, demos, np.asarray(row_demos), rngs)
    limits = [m for m in (max_steps, policy.step_limit) if m is not None]
    limit = min(limits) if limits else None
    obs = venv.reset(list(levels)) if seeds is None else venv.reset(list(levels), seeds=seeds)
    returns = np.zeros(n, np.float64)
    lengths = np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    success = np.zeros(n, bool)
    cut = np.zeros(n, bool)
    while not done.all():
        live = ~done
        # Rows done here may still run in the env (cut by max_steps): give them a legal action.
        actions = np.where(live, policy.act(obs, live), venv.spec.legal_actions[0]).astype(np.int32)
        step = venv.step(actions)
        returns += np.where(live, step.reward, 0.0)
        lengths += live
        newly = live & step.done
        success[newly] = step.success[newly]
        if max_steps is not None:
            # The evaluator also gives max_steps to the env's time limit, which then ends the
            # episode itself: that is still a cut by max_steps, not the task's own end.
            cut |= newly & step.truncated & (lengths >= max_steps)
        done |= step.done
        if limit is not None:
            cut |= ~done & (lengths >= limit)
            done |= cut
        policy.record(actions, step.reward, done)
        obs = step.obs
    return [{"return": float(returns[i]), "length": int(lengths[i]), "success": bool(success[i]),
             "truncated": bool(cut[i])} for i in range(n)]


def run_level(venv: VectorEnv, policy: Policy, level: int, demos: Sequence[Episode], rng: np.random.Generator,
              max_steps: int | None = None) -> list[dict]:
    """``venv.num_envs`` episodes of one ``level`` with the same ``demos``: ``run_rows`` with every
    row on that level, row i's policy generator spawned from ``rng``."""
    n = venv.num_envs
    return run_rows(venv, policy, [list(demos)], np.zeros(n, np.int64), [level] * n, rng.spawn(n),
                    max_steps=max_steps)
