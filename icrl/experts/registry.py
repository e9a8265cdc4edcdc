"""Which expert plays which task: ``make_expert`` is how collection and evaluation get one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icrl.errors import IcrlError
from icrl.experts.minihack_oracle import MiniHackOracle
from icrl.experts.rules import rule_for_task

MINIHACK_PREFIX = "MiniHack-"


def make_expert(task: str, native_actions: Sequence[int], rng: np.random.Generator | None = None) -> MiniHackOracle:
    """The expert policy for ``task``; ``act(obs)`` returns an index into ``native_actions``.

    MiniHack tasks get the planning oracle (with the task's rule, e.g. Memento's cue). Raises
    IcrlError naming the task when no expert applies (NLE's full game, Procgen: PPO experts later).
    """
    if not task.startswith(MINIHACK_PREFIX):
        raise IcrlError(f"no expert for task {task!r}: the planning oracle plays MiniHack-* tasks only")
    try:
        return MiniHackOracle(native_actions, rng, rule=rule_for_task(task))
    except ValueError as err:
        raise IcrlError(f"no expert for task {task!r}: {err}") from None
