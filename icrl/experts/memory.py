"""What the oracle remembers of a level across the steps of one episode.

NetHack's own display already remembers seen terrain, but monsters and objects hide the floor under
them and dark areas show only the cells next to the agent. ``MapMemory`` keeps the last terrain seen
in every cell and which cells have really been looked at, so exploration knows where it has been.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from icrl.experts import glyph_map as gm
from icrl.experts.planning import dilate, neighbours_any
from icrl.experts.vision import sighted_rock


@dataclasses.dataclass
class MapMemory:
    """What one episode has shown so far, all [21, 79].

    terrain: int8 glyph_map class of every cell (UNKNOWN where only blank was ever shown).
    observed: cells known for sure: drawn at some point, or next to the agent at some point.
    sighted: blank cells probably rock, judged from afar (``icrl.experts.vision``).
    covered: cells whose ground was never seen bare (a monster or an object always stood on
      it): the staircase may be under it.
    """

    terrain: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(gm.MAP_SHAPE, dtype=np.int8))
    observed: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(gm.MAP_SHAPE, dtype=bool))
    sighted: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(gm.MAP_SHAPE, dtype=bool))
    covered: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(gm.MAP_SHAPE, dtype=bool))

    def update(self, glyphs: np.ndarray, agent: tuple[int, int]) -> None:
        """Fold one observation in.

        A cell counts as observed when it shows anything but blank, or when the agent stood next
        to it: NetHack always shows the 8 neighbours, so a blank neighbour is solid rock.
        """
        seen = gm.terrain_of(glyphs)
        shown = seen > gm.UNKNOWN
        self.terrain[shown] = seen[shown]
        # Something (a monster, an object, the agent) stands on cells never seen bare: it is ground.
        hidden_new = (seen < 0) & (self.terrain == gm.UNKNOWN)
        self.terrain[hidden_new] = gm.FLOOR
        self.covered |= hidden_new
        self.covered &= ~shown
        x, y = agent
        if self.terrain[y, x] == gm.UNKNOWN:
            self.terrain[y, x] = gm.FLOOR
        # Standing on a cell shows what is under it (a staircase would end the episode).
        self.covered[y, x] = False
        near = np.zeros(gm.MAP_SHAPE, dtype=bool)
        near[y, x] = True
        self.observed |= shown | (seen < 0) | dilate(near, 1)
        walkable = gm.WALKABLE[self.terrain]
        self.sighted |= sighted_rock(glyphs, self.unexplored() & neighbours_any(walkable), agent)

    def unexplored(self, include_sighted: bool = True) -> np.ndarray:
        """[21, 79] bool: blank cells nobody has looked at from close by (they may hide floor).

        ``include_sighted=False`` also leaves out those judged rock from afar.
        """
        out = (self.terrain == gm.UNKNOWN) & ~self.observed
        return out if include_sighted else out & ~self.sighted
