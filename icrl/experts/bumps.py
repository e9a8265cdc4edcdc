"""Learning from moves that leave the agent where it was.

Most moves the oracle plans work. Some do not, for reasons the map does not show: a peaceful
monster NetHack will not attack without a yes/no answer (which MiniHack declines), a boulder with
another one sunk out of sight in the water behind it, a squeeze too narrow for a loaded character.
``MoveLog`` remembers what the last move aimed at and, from where the agent ends up and NetHack's
message, which moves and cells to stop trying.
"""

from __future__ import annotations

import numpy as np

from icrl.experts import glyph_map as gm
from icrl.experts.planning import DIRECTIONS, NO_DIRECTION

# A move that leaves the agent in place this many times in a row is taken as impossible.
MAX_FAILED_TRIES = 3
# How long a cell stays off-limits after NetHack refused to attack what stands there (peaceful).
PEACEFUL_BLOCK_STEPS = 4


def _inside(x: int, y: int) -> bool:
    return 0 <= x < gm.MAP_SHAPE[1] and 0 <= y < gm.MAP_SHAPE[0]


class MoveLog:
    """The last move and its target, plus what failed moves taught, for one episode.

    blocked_edges: (x, y, direction) moves not to plan any more.
    no_boulder: [21, 79] bool, cells a boulder was found not to enter.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.blocked_edges: set[tuple[int, int, int]] = set()
        self.no_boulder = np.zeros(gm.MAP_SHAPE, dtype=bool)
        self._peaceful: dict[tuple[int, int], int] = {}
        self._fails: dict[tuple[int, int, int], int] = {}
        self._pos: tuple[int, int] | None = None
        self._dir = NO_DIRECTION
        self._target_terrain = gm.UNKNOWN
        self._target_monster = False
        self._target_boulder = False

    def off_limits(self, t: int) -> list[tuple[int, int]]:
        """Cells (x, y) not to step into at step ``t`` (peaceful monsters stood there)."""
        return [cell for cell, until in self._peaceful.items() if until > t]

    def record(self, pos: tuple[int, int], direction: int, terrain: np.ndarray, monsters: np.ndarray,
               boulders: np.ndarray) -> None:
        """Remember the move about to be made from ``pos`` and what its target cell holds."""
        dx, dy = DIRECTIONS[direction]
        tx, ty = pos[0] + dx, pos[1] + dy
        inside = _inside(tx, ty)
        self._pos, self._dir = pos, direction
        self._target_terrain = int(terrain[ty, tx]) if inside else gm.WALL
        self._target_monster = bool(monsters[ty, tx]) if inside else False
        self._target_boulder = bool(boulders[ty, tx]) if inside else False

    def observe(self, pos: tuple[int, int], message: str, t: int) -> None:
        """Judge the last move from where the agent is now and NetHack's message.

        Opening a door or fighting also leaves the agent in place and is progress. A sticky repeat
        of an earlier move can bump into a wall instead of making the chosen move: NetHack then
        names the obstacle (the ``mention_walls`` option), which the planner never aims at, so
        such bumps are not held against the chosen move; and only failures in a row count.
        """
        if self._pos is None:
            return
        edge = (*self._pos, self._dir)
        if pos != self._pos:
            self._fails.clear()
            return
        if message.startswith("It's ") or "move diagonally" in message or "cannot pass" in message:
            return
        dx, dy = DIRECTIONS[self._dir]
        target = (self._pos[0] + dx, self._pos[1] + dy)
        if "Really attack" in message:
            self._peaceful[target] = t + PEACEFUL_BLOCK_STEPS
            return
        if "carrying too much to get through" in message:
            self.blocked_edges.add(edge)
            return
        if self._target_boulder:
            # The boulder would not move: something (often a boulder sunk out of sight in the
            # water) blocks the cell beyond it, so no boulder can go there.
            beyond = (target[0] + dx, target[1] + dy)
            self._fails[edge] = self._fails.get(edge, 0) + 1
            if _inside(*beyond) and self._fails[edge] >= MAX_FAILED_TRIES - 1:
                self.no_boulder[beyond[1], beyond[0]] = True
            return
        opening = self._target_terrain == gm.DOOR_CLOSED and "locked" not in message
        if self._target_monster or opening:
            return
        self._fails[edge] = self._fails.get(edge, 0) + 1
        if self._fails[edge] >= MAX_FAILED_TRIES:
            self.blocked_edges.add(edge)
