"""Which expert plays which task: ``make_expert`` is how collection and evaluation get one.

MiniHack tasks: the planning oracle, ``act(obs)``. Procgen tasks: the search expert, which also
needs the game's state: ``act(obs, state)``, the state from ``icrl.envs.procgen.procgen_core(env).get_state()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icrl.errors import IcrlError

MINIHACK_PREFIX = "MiniHack-"
PROCGEN_PREFIX = "procgen:"


def expert_unavailable(task: str) -> str | None:
    """Why no expert plays ``task`` (None when one does); reads no environment."""
    from icrl.envs.procgen import PROCGEN_GAMES, game_of

    if task.startswith(MINIHACK_PREFIX):
        return None
    if task.startswith(PROCGEN_PREFIX) and game_of(task) in PROCGEN_GAMES:
        return None
    return "experts play MiniHack-* tasks (planning oracle) and procgen:<game> tasks (search expert) only"


def make_expert(task: str, native_actions: Sequence[int] = (), rng: np.random.Generator | None = None, *,
                max_steps: int | None = None, distribution_mode: str = "easy"):
    """The expert policy for ``task``; ``act`` returns an index into the task's native actions.

    MiniHack tasks get the planning oracle (with the task's rule, e.g. Memento's cue) over
    ``native_actions`` (the task's NLE action tuple). Procgen tasks get the search expert
    (``ProcgenSearchExpert``: ``native_actions`` unused; ``max_steps`` the episode's step limit,
    default 200). Raises IcrlError naming the task when no expert applies (NLE's full game).
    """
    why = expert_unavailable(task)
    if why:
        raise IcrlError(f"no expert for task {task!r}: {why}")
    if task.startswith(PROCGEN_PREFIX):
        from icrl.envs.procgen import game_of
        from icrl.experts.procgen_search import ProcgenSearchExpert

        return ProcgenSearchExpert(game_of(task), rng, max_steps=200 if max_steps is None else max_steps,
                                   distribution_mode=distribution_mode)
    from icrl.experts.minihack_oracle import MiniHackOracle
    from icrl.experts.rules import rule_for_task

    try:
        return MiniHackOracle(native_actions, rng, rule=rule_for_task(task))
    except ValueError as err:
        raise IcrlError(f"no expert for task {task!r}: {err}") from None
