"""Which blank cells the agent has in fact looked at from afar (lit areas).

NetHack draws solid rock and never-seen cells alike (blank). Next to the agent a blank cell is
rock, but a blank cell across a lit room may be rock or may be floor out of sight. A blank cell
next to lit floor *now in view* (NetHack shows that floor as S_room, remembered floor as
S_darkroom) with a straight clear line from the agent would have been drawn if it were floor: it
is rock (the agent's own neighbours do not count: NetHack draws them as lit floor even in the
dark). The line is Bresenham's, which approximates NetHack's vision, so these cells are only
explored last, never ruled out (see ``MiniHackOracle``).
"""

from __future__ import annotations

import numpy as np
from nle import nethack

from icrl.experts.glyph_map import BOULDER_GLYPH
from icrl.experts.planning import neighbours_any

_S_ROOM, _S_LITCORR = 19, 22
# cmap symbols sight passes through: doorways and open doors (12-14), iron bars (17), floor,
# corridors, stairs, altar, fountain, pool, ice, lava, lowered drawbridge (19-36), air (39), traps
# (42-64). Sight stops at rock, walls, closed doors, trees, raised drawbridges, clouds and the
# Plane-of-Water water (S_water, 41), which MiniHack's River uses.
_CLEAR_CMAP = np.zeros(nethack.MAXPCHARS, dtype=bool)
_CLEAR_CMAP[[12, 13, 14, 17, *range(19, 37), 39, *range(42, 65)]] = True


def transparent(glyphs: np.ndarray) -> np.ndarray:
    """[H, W] bool: cells whose current display shows something sight passes through.

    Monsters and objects other than boulders stand on see-through ground; boulders block sight.
    """
    glyphs = np.asarray(glyphs)
    is_cmap = nethack.glyph_is_cmap(glyphs)
    cmap = np.where(is_cmap, glyphs - nethack.GLYPH_CMAP_OFF, 0)
    out = np.where(is_cmap, _CLEAR_CMAP[cmap], True)
    return out & (glyphs != BOULDER_GLYPH)


def lit_in_view(glyphs: np.ndarray) -> np.ndarray:
    """[H, W] bool: lit floor or corridor that the agent sees right now."""
    glyphs = np.asarray(glyphs)
    return (glyphs == nethack.GLYPH_CMAP_OFF + _S_ROOM) | (glyphs == nethack.GLYPH_CMAP_OFF + _S_LITCORR)


def bresenham(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Cells strictly between (x0, y0) and (x1, y1) on Bresenham's line."""
    cells = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x1 > x0 else -1), (1 if y1 > y0 else -1)
    err = dx + dy
    x, y = x0, y0
    while True:
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x += sx
        if e2 <= dx:
            err += dx
            y += sy
        if (x, y) == (x1, y1):
            return cells
        cells.append((x, y))


def sighted_rock(glyphs: np.ndarray, candidates: np.ndarray, agent: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: candidate blank cells next to lit floor in view, on a clear line from the agent."""
    clear = transparent(glyphs)
    ax, ay = agent
    lit = lit_in_view(glyphs)
    # The agent's neighbours are drawn as lit floor even in an unlit room: they prove nothing.
    lit[max(0, ay - 1) : ay + 2, max(0, ax - 1) : ax + 2] = False
    near_lit = neighbours_any(lit)
    out = np.zeros_like(candidates, dtype=bool)
    for y, x in zip(*np.nonzero(candidates & near_lit)):
        line = bresenham(ax, ay, int(x), int(y))
        if all(clear[cy, cx] for cx, cy in line):
            out[y, x] = True
    return out


_S_DARKROOM, _S_CORR = 20, 21


def in_the_dark(glyphs: np.ndarray, agent: tuple[int, int]) -> bool:
    """Whether the agent stands in an unlit room or corridor, where it sees only its neighbours.

    NetHack draws floor in view and lit as S_room, floor out of view as S_darkroom, unlit
    corridor as S_corr. Cells next to the agent are always in view; a dark-drawn floor cell two
    steps away with nothing between blocking sight must be unlit.
    """
    glyphs = np.asarray(glyphs)
    h, w = glyphs.shape
    x, y = agent
    clear = transparent(glyphs)
    dark = (_S_DARKROOM + nethack.GLYPH_CMAP_OFF, _S_CORR + nethack.GLYPH_CMAP_OFF)
    for cy in range(max(0, y - 2), min(h, y + 3)):
        for cx in range(max(0, x - 2), min(w, x + 3)):
            if max(abs(cx - x), abs(cy - y)) != 2 or glyphs[cy, cx] not in dark:
                continue
            if all(clear[my, mx] for mx, my in bresenham(x, y, cx, cy)):
                return True
    return False
