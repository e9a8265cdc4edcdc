"""Adapter for MiniHack's MiniGrid-based tasks under minigrid >= 3.

MiniHack builds each MiniGrid task with ``gym.make(name, width=76, height=21)``. minigrid 3.x's
``CrossingEnv`` passes ``grid_size`` to ``MiniGridEnv``, which asserts that width and height are
None, so every SimpleCrossing / LavaCrossing task raises AssertionError on construction (no minigrid
release works with both MiniHack's MultiRoom and Crossing tasks). Crossing grids are square and
sized by their own ``size`` argument, so the adapter drops the two unused arguments. It changes
nothing else about the task.
"""

from __future__ import annotations

import gymnasium as gym

_PATCHED = False


def make_crossing_env(width: int | None = None, height: int | None = None, **kwargs):
    """Entry point for MiniGrid crossing tasks that ignores MiniHack's width/height arguments."""
    from minigrid.envs import CrossingEnv

    del width, height  # crossing grids are size x size
    return CrossingEnv(**kwargs)


def patch_minigrid_registry() -> None:
    """Point every registered MiniGrid crossing task at ``make_crossing_env`` (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    import minigrid  # noqa: F401  (registers the MiniGrid tasks)

    for env_id, spec in gym.registry.items():
        if env_id.startswith("MiniGrid-") and spec.entry_point == "minigrid.envs:CrossingEnv":
            spec.entry_point = make_crossing_env
    _PATCHED = True
