"""Task knowledge the map does not show: goals other than the staircase, or out of sight.

A rule looks at each observation and returns ``Guidance``: cells to reach instead of the stairs,
cells never to step on, and whether to plan through unexplored (dark) cells. Two tasks need one:
Memento (below) and River (``RiverRule``: where the staircase is while the water hides it).

Memento (``minihack/dat/memento_easy.des``, ``memento_hard.des``): a long dark corridor ends in
2 (F2) or 4 (F4) dead-end branches; one holds a sleeping grid bug (kill it: +1), the others a squeaky
board (step on it: -1, episode over). Which branch is safe is written in the monsters shown behind
iron bars at the corridor's start, the *cue*:

* F2: a blue jelly means the top branch, a lichen the bottom one;
* F4: (blue jelly, red mold) top, (spotted jelly, red mold) second, (blue jelly, green mold) third,
  (spotted jelly, green mold) bottom.

Branch rows and columns are fixed offsets from the cue monster at (2, 2) of the level map: branches
at rows 1, 3, 5, 7 (F2: 1 and 7) from column 61 to the bug's cell at 71, boards at column 67.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from icrl.experts import glyph_map as gm
from icrl.experts.memory import MapMemory


@dataclasses.dataclass(frozen=True)
class Guidance:
    """What a task rule adds to plain navigation for one step.

    goals: [21, 79] bool cells to reach (None: the staircase down).
    forbidden: [21, 79] bool cells never to enter (None: none).
    optimistic: plan through unexplored cells as if they were floor (for goals nobody has seen).
    """

    goals: np.ndarray | None = None
    forbidden: np.ndarray | None = None
    optimistic: bool = False


class TaskRule(Protocol):
    """Per-task knowledge; one instance per oracle, reset with it."""

    def reset(self) -> None: ...

    def guide(self, glyphs: np.ndarray, agent: tuple[int, int], memory: MapMemory) -> Guidance: ...


# Cue offsets, relative to the cue monster at (2, 2): branches run from column 61 (+59) to the bug's
# cell at 71 (+69) in rows 1, 3, 5, 7 (dy = row - 2); the boards lie at column 67 (+65).
_BRANCH_DX, _BUG_DX = 59, 69
_F2_ROWS = {"blue jelly": -1, "lichen": 5}
_F4_ROWS = {
    ("blue jelly", "red mold"): -1,
    ("spotted jelly", "red mold"): 1,
    ("blue jelly", "green mold"): 3,
    ("spotted jelly", "green mold"): 5,
}
_MOLD_DY = 4  # the F4 mold sits 4 rows below the jelly


def read_memento_cue(glyphs: np.ndarray, floors: int) -> tuple[tuple[int, int], int, tuple[int, ...]] | None:
    """Find the cue: ((x, y) of the top cue monster, the safe branch's row offset, the other offsets).

    Returns None while the cue is not (fully) visible. ``floors`` is 2 or 4 (Memento-F2 / -F4).
    """
    names = {}
    for y, x in zip(*np.nonzero(gm.monster_mask(glyphs))):
        names[(int(x), int(y))] = gm.monster_name(glyphs[y, x])
    table: dict = _F2_ROWS if floors == 2 else _F4_ROWS
    for (x, y), name in names.items():
        if floors == 2 and name in _F2_ROWS:
            safe = _F2_ROWS[name]
        elif floors == 4 and name in ("blue jelly", "spotted jelly"):
            key = (name, names.get((x, y + _MOLD_DY)))
            if key not in _F4_ROWS:
                continue
            safe = _F4_ROWS[key]
        else:
            continue
        others = tuple(sorted(dy for dy in set(table.values()) if dy != safe))
        return (x, y), safe, others
    return None


class MementoRule:
    """Read the cue once, then aim at the bug's cell and never enter the other branches."""

    def __init__(self, floors: int):
        if floors not in (2, 4):
            raise ValueError(f"Memento has 2 or 4 branches, not {floors}")
        self.floors = floors
        self.reset()

    def reset(self) -> None:
        self._cue: tuple[tuple[int, int], int, tuple[int, ...]] | None = None

    def guide(self, glyphs: np.ndarray, agent: tuple[int, int], memory: MapMemory) -> Guidance:
        if self._cue is None:
            self._cue = read_memento_cue(glyphs, self.floors)
            if self._cue is None:
                return Guidance()
        (cx, cy), safe, others = self._cue
        h, w = gm.MAP_SHAPE
        goals = np.zeros(gm.MAP_SHAPE, dtype=bool)
        forbidden = np.zeros(gm.MAP_SHAPE, dtype=bool)
        if 0 <= cx + _BUG_DX < w and 0 <= cy + safe < h:
            goals[cy + safe, cx + _BUG_DX] = True
        # The whole of every other branch is off-limits, not only its board: a sticky repeat of a
        # move into a branch would carry the agent on towards the board.
        for dy in others:
            if 0 <= cy + dy < h:
                forbidden[cy + dy, max(0, cx + _BRANCH_DX) : min(w, cx + _BUG_DX + 1)] = True
        return Guidance(goals=goals, forbidden=forbidden, optimistic=True)


# River (minihack/envs/river.py): a 25 x 7 level, water from column 18, the goal at (24, 2).
_RIVER_GOAL_DX, _RIVER_GOAL_DY = 6, 2


class RiverRule:
    """Say where River's staircase is while it is out of sight.

    River's water is NetHack's Plane-of-Water kind, which blocks sight: the far bank and its
    staircase stay blank until the agent has crossed. The staircase sits at a fixed offset from
    the river's top-left water cell, which is in view from the start; once the staircase itself
    has been seen, the map says it and this rule steps aside.
    """

    def reset(self) -> None:
        pass

    def guide(self, glyphs: np.ndarray, agent: tuple[int, int], memory: MapMemory) -> Guidance:
        del glyphs, agent
        if (memory.terrain == gm.GOAL).any():
            return Guidance()
        ys, xs = np.nonzero(memory.terrain == gm.WATER)
        if xs.size == 0:
            return Guidance()
        gx, gy = int(xs.min()) + _RIVER_GOAL_DX, int(ys.min()) + _RIVER_GOAL_DY
        goals = np.zeros(gm.MAP_SHAPE, dtype=bool)
        if 0 <= gx < gm.MAP_SHAPE[1] and 0 <= gy < gm.MAP_SHAPE[0]:
            goals[gy, gx] = True
        return Guidance(goals=goals)


def rule_for_task(task: str) -> TaskRule | None:
    """The rule a MiniHack task needs, or None when the staircase is the goal."""
    if task.startswith("MiniHack-River") and "Lava" not in task:
        return RiverRule()
    if "Memento-F2" in task:
        return MementoRule(2)
    if "Memento-F4" in task:
        return MementoRule(4)
    return None
