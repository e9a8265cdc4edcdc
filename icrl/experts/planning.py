"""Shortest paths on the NetHack map grid: NetHack's 8-way moves, door rules, per-cell costs.

Everything here is a pure function of numpy arrays of the map shape [H, W] (H rows = y,
W columns = x) and returns new arrays; positions are (x, y) like NetHack's.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

import numpy as np

# (dx, dy) of the 8 compass moves, in nle.nethack.CompassDirection's order: N E S W NE SE SW NW.
DIRECTIONS: tuple[tuple[int, int], ...] = ((0, -1), (1, 0), (0, 1), (-1, 0), (1, -1), (1, 1), (-1, 1), (-1, -1))
# The keys NetHack reads for them (vi-keys), used to find each move among a task's actions.
DIRECTION_KEYS: tuple[str, ...] = ("k", "l", "j", "h", "u", "n", "b", "y")
DIAGONAL: tuple[bool, ...] = tuple(dx != 0 and dy != 0 for dx, dy in DIRECTIONS)

NO_DIRECTION = -1


def dijkstra(
    cost: np.ndarray,
    no_diagonal: np.ndarray,
    start: tuple[int, int] | Sequence[tuple[int, int]],
    blocked_edges: Iterable[tuple[int, int, int]] = (),
    allowed_directions: Iterable[int] = range(8),
    arrival_cost: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest paths from ``start`` to every cell.

    Args:
      cost: [H, W] float, the price of stepping onto each cell; ``inf`` where it cannot be entered.
      no_diagonal: [H, W] bool, cells that may be entered or left only orthogonally (doors).
      start: (x, y), or a list of them (distance to the nearest); start cells' own costs do not count.
      blocked_edges: (x, y, direction) moves known to fail (e.g. learnt from bumping into them).
      allowed_directions: indices into DIRECTIONS the agent can take (a task's action set).
      arrival_cost: [8, H, W] float, extra price of entering a cell by each direction (e.g.
        ``overshoot_costs``).

    Returns:
      dist [H, W] float (inf where unreachable) and first [H, W] int8: the index into DIRECTIONS
      of the first move of a cheapest path to each cell (NO_DIRECTION at start or unreachable).
    """
    h, w = cost.shape
    flat_cost = cost.ravel().tolist()
    flat_nodiag = no_diagonal.ravel().tolist()
    flat_arrival = [arrival_cost[d].ravel().tolist() for d in range(8)] if arrival_cost is not None else None
    blocked = {(y * w + x, d) for x, y, d in blocked_edges}
    moves = [(d, DIRECTIONS[d][0], DIRECTIONS[d][1], DIRECTIONS[d][1] * w + DIRECTIONS[d][0], DIAGONAL[d])
             for d in allowed_directions]
    inf = float("inf")
    dist = [inf] * (h * w)
    first = [NO_DIRECTION] * (h * w)
    starts = [start] if isinstance(start[0], (int, np.integer)) else list(start)
    sources = {int(y) * w + int(x) for x, y in starts}
    heap: list[tuple[float, int]] = []
    for s in sources:
        dist[s] = 0.0
        heap.append((0.0, s))
    while heap:
        d_u, u = heapq.heappop(heap)
        if d_u > dist[u]:
            continue
        ux, uy = u % w, u // w
        for d, dx, dy, step, diag in moves:
            vx, vy = ux + dx, uy + dy
            if not (0 <= vx < w and 0 <= vy < h):
                continue
            v = u + step
            c = flat_cost[v]
            if c == inf or (diag and (flat_nodiag[u] or flat_nodiag[v])) or (u, d) in blocked:
                continue
            nd = d_u + c
            if flat_arrival is not None:
                nd += flat_arrival[d][v]
            if nd < dist[v]:
                dist[v] = nd
                first[v] = d if u in sources else first[u]
                heapq.heappush(heap, (nd, v))
    return np.asarray(dist).reshape(h, w), np.asarray(first, dtype=np.int8).reshape(h, w)


def shifted(grid: np.ndarray, dx: int, dy: int, fill: float | bool = 0) -> np.ndarray:
    """``out[y, x] = grid[y + dy, x + dx]`` (``fill`` where that lies outside the grid)."""
    h, w = grid.shape
    out = np.full_like(grid, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = grid[ys, xs]
    return out


def overshoot_costs(deadly: np.ndarray, stops: np.ndarray, weights: Sequence[float],
                    bump: np.ndarray | None = None, bump_weight: float = 0.0) -> np.ndarray:
    """[8, H, W] price of entering each cell by each direction, for the sticky repeats it risks.

    Under sticky actions the environment repeats the last move with probability p, once (p),
    twice (p^2)... A move in direction d onto v is then followed by moves on to v + d, v + 2d, ...
    until something stops them. Entering v by d costs ``weights[k-1]`` when the k-th cell on is
    ``deadly`` (lava, water) with no ``stops`` cell (walls: the repeat bumps and stays) before it,
    plus ``bump_weight`` when the next cell is in ``bump`` (a wasted turn against a wall).
    """
    out = np.zeros((8, *deadly.shape))
    for d, (dx, dy) in enumerate(DIRECTIONS):
        open_ray = np.ones(deadly.shape, dtype=bool)
        for k, weight in enumerate(weights, start=1):
            out[d] += weight * (open_ray & shifted(deadly, k * dx, k * dy, False))
            open_ray &= ~shifted(stops | deadly, k * dx, k * dy, True)
        if bump is not None:
            out[d] += bump_weight * shifted(bump, dx, dy, False)
    return out


def neighbours_any(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: cells with at least one 8-neighbour where ``mask`` is True."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for dx, dy in DIRECTIONS:
        out |= padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return out


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """[H, W] bool: cells within Chebyshev distance ``radius`` of a True cell (the cells included)."""
    out = mask.astype(bool)
    for _ in range(radius):
        out = out | neighbours_any(out)
    return out


def frontier(walkable_known: np.ndarray, unexplored: np.ndarray) -> np.ndarray:
    """[H, W] bool: known walkable cells next to an unexplored cell: where exploring continues."""
    return walkable_known & neighbours_any(unexplored)


def cheapest(dist: np.ndarray, targets: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the reachable target with the smallest distance (first in row-major order on ties)."""
    masked = np.where(targets, dist, np.inf)
    i = int(np.argmin(masked))
    if not np.isfinite(masked.flat[i]):
        return None
    y, x = divmod(i, dist.shape[1])
    return x, y
