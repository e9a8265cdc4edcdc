"""Roll a policy out on one level of one task: N episodes at once, in batched envs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icrl.store.episode import Episode
from icrl.envs.base import VectorEnv
from icrl.eval.policies import Policy


def run_level(venv: VectorEnv, policy: Policy, level: int, demos: Sequence[Episode],
              rng: np.random.Generator, max_steps: int | None = None) -> list[dict]:
    """Play ``venv.num_envs`` episodes of ``level`` with ``policy`` given ``demos``.

    Returns one record per episode: ``return``, ``length``, ``success``, ``truncated`` (cut by
    ``max_steps`` or the policy's ``step_limit``, e.g. a full context, rather than the env).
    ``max_steps`` bounds the episode length on top of the env's own limit (None: the env's only).
    """
    n = venv.num_envs
    policy.start(venv.spec, demos, n, rng)
    limits = [m for m in (max_steps, policy.step_limit) if m is not None]
    max_steps = min(limits) if limits else None
    obs = venv.reset([level] * n)
    returns = np.zeros(n, np.float64)
    lengths = np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    success = np.zeros(n, bool)
    cut = np.zeros(n, bool)
    while not done.all():
        live = ~done
        actions = policy.act(obs, live)
        step = venv.step(actions)
        returns += np.where(live, step.reward, 0.0)
        lengths += live
        newly = live & step.done
        success[newly] = step.success[newly]
        done |= step.done
        if max_steps is not None:
            cut |= ~done & (lengths >= max_steps)
            done |= cut
        policy.record(actions, step.reward, done)
        obs = step.obs
    return [{"return": float(returns[i]), "length": int(lengths[i]), "success": bool(success[i]),
             "truncated": bool(cut[i])} for i in range(n)]
