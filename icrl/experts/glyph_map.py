"""Read the dungeon map out of NLE's ``glyphs`` observation.

Every map cell [21, 79] is reduced to one terrain class (what the planner needs to know to walk)
plus two overlays that change every step: monsters and boulders. NetHack's cmap symbols are listed
in ``nle.nethack.symdef``; the indices below are those of NetHack 3.6's ``rm.h``.
"""

from __future__ import annotations

import numpy as np
from nle import nethack

MAP_SHAPE: tuple[int, int] = (21, 79)  # rows (y), columns (x): glyphs[y, x] is the cell at blstats (x, y)

# Terrain classes (int8). UNKNOWN covers both "never seen" and solid rock: NetHack draws both blank.
UNKNOWN = 0
FLOOR = 1  # walkable: room/corridor floor, doorless doorway, stairs up, altar, fountain, ice, cloud...
WALL = 2  # never walkable: walls, iron bars, trees, raised drawbridge
DOOR_OPEN = 3  # walkable, but never diagonally in or out
DOOR_CLOSED = 4  # moving into it opens it (NetHack's autoopen); never diagonally
WATER = 5
LAVA = 6
TRAP = 7  # a known trap: walkable, but the planner avoids it
GOAL = 8  # staircase down, MiniHack's default goal

# NetHack 3.6 cmap indices (rm.h) that are not plain walkable floor.
_S_STONE = 0
_WALLS = range(1, 12)  # S_vwall .. S_trwall
_S_NDOOR = 12  # doorless or broken doorway: diagonal moves allowed
_OPEN_DOORS = (13, 14)
_CLOSED_DOORS = (15, 16)
_S_BARS, _S_TREE = 17, 18
_S_DNSTAIR, _S_DNLADDER = 24, 26
_S_POOL, _S_LAVA, _S_WATER = 32, 34, 41
_RAISED_DRAWBRIDGE = (37, 38)
_TRAPS = range(42, 65)  # S_arrow_trap .. S_vibrating_square
_EFFECTS_START = 65  # beams, explosions, ...: transient, say nothing about the terrain

_CMAP_TO_CLASS = np.full(nethack.MAXPCHARS, FLOOR, dtype=np.int8)
_CMAP_TO_CLASS[_S_STONE] = UNKNOWN
_CMAP_TO_CLASS[list(_WALLS)] = WALL
_CMAP_TO_CLASS[[_S_BARS, _S_TREE, *_RAISED_DRAWBRIDGE]] = WALL
_CMAP_TO_CLASS[list(_OPEN_DOORS)] = DOOR_OPEN
_CMAP_TO_CLASS[list(_CLOSED_DOORS)] = DOOR_CLOSED
_CMAP_TO_CLASS[[_S_POOL, _S_WATER]] = WATER
_CMAP_TO_CLASS[_S_LAVA] = LAVA
_CMAP_TO_CLASS[list(_TRAPS)] = TRAP
_CMAP_TO_CLASS[[_S_DNSTAIR, _S_DNLADDER]] = GOAL
_CMAP_TO_CLASS[_S_NDOOR] = FLOOR
_CMAP_TO_CLASS[_EFFECTS_START:] = UNKNOWN

_BOULDER_OBJ = next(i for i in range(nethack.NUM_OBJECTS) if nethack.OBJ_NAME(nethack.objclass(i)) == "boulder")
BOULDER_GLYPH: int = nethack.GLYPH_OBJ_OFF + _BOULDER_OBJ

# Classes the planner may step onto (TRAP is walkable but priced high by the caller).
WALKABLE = np.zeros(GOAL + 1, dtype=bool)
WALKABLE[[FLOOR, DOOR_OPEN, DOOR_CLOSED, TRAP, GOAL]] = True
DOORS = np.zeros(GOAL + 1, dtype=bool)
DOORS[[DOOR_OPEN, DOOR_CLOSED]] = True


def terrain_of(glyphs: np.ndarray) -> np.ndarray:
    """Terrain class [21, 79] int8 of every cell, -1 where a monster or object hides it.

    Cells showing a monster, an object (boulders included) or a transient effect say nothing
    about the floor beneath; the caller fills them from memory.
    """
    glyphs = np.asarray(glyphs)
    out = np.full(glyphs.shape, -1, dtype=np.int8)
    is_cmap = nethack.glyph_is_cmap(glyphs)
    cmap = np.where(is_cmap, glyphs - nethack.GLYPH_CMAP_OFF, 0)
    out[is_cmap] = _CMAP_TO_CLASS[cmap[is_cmap]]
    # An effect glyph is classed UNKNOWN above; hidden (-1) is what it really is.
    out[is_cmap & (cmap >= _EFFECTS_START)] = -1
    return out


def monster_mask(glyphs: np.ndarray, agent: tuple[int, int] | None = None) -> np.ndarray:
    """[21, 79] bool: cells holding a monster (pets excluded, the 'I' marker included).

    ``agent`` (x, y), when given, is left out. The 'remembered, unseen monster' marker counts:
    moving there attacks whatever is there.
    """
    glyphs = np.asarray(glyphs)
    mask = (nethack.glyph_is_monster(glyphs) & ~nethack.glyph_is_pet(glyphs)) | (glyphs == nethack.GLYPH_INVISIBLE)
    if agent is not None:
        mask[agent[1], agent[0]] = False
    return mask


def boulder_mask(glyphs: np.ndarray) -> np.ndarray:
    """[21, 79] bool: cells showing a boulder."""
    return np.asarray(glyphs) == BOULDER_GLYPH


def monster_name(glyph: int) -> str | None:
    """NetHack name of the monster a glyph shows (e.g. 'blue jelly'), None for non-monsters."""
    if not nethack.glyph_is_monster(int(glyph)):
        return None
    return nethack.permonst(nethack.glyph_to_mon(int(glyph))).mname


def agent_position(blstats: np.ndarray) -> tuple[int, int]:
    """The agent's (x, y) from the bottom-line stats."""
    return int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])
