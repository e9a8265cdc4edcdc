"""Bridge water with boulders, as MiniHack's River task asks.

In NetHack, walking into a boulder pushes it one cell on (diagonally too, outside Sokoban) if the
cell beyond is free; pushed into water it fills the pool with probability 0.9 (else it sinks) and
the cell becomes floor. ``plan_push`` finds the cheapest way to get one boulder into one of the
chosen water cells: a search over (boulder cell, agent cell) where every push is followed by a walk
to the next pushing side. ``BoulderPlanner`` picks which water cells are worth filling (those that
shorten the way to the goal the most), keeps the plan, and plans again whenever the world stops
matching what the plan expected (a sticky repeat, a boulder that sank).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

import numpy as np

from icrl.experts.planning import DIAGONAL, DIRECTIONS, NO_DIRECTION, dijkstra, neighbours_any

# Price of a water cell on the way to the goal, in steps: filling one costs a whole boulder push.
FILL_PENALTY = 30.0
# Price of an unseen cell inside the level: it may be floor, or more water (River's far column is
# hidden behind the near one until the agent stands next to it).
UNSEEN_PENALTY = FILL_PENALTY / 2
# Candidates this close to the best one are planned for together (the cheapest push wins).
NEAR_BEST = FILL_PENALTY / 4
# Search budget per plan (states expanded); River's plans need a few hundred.
MAX_EXPANSIONS = 20_000

Step = tuple[tuple[int, int], frozenset, int]  # (agent (x, y) before, boulder cells before, direction)


def _walk(ground: list[bool], no_diag: list[bool], blocked: set[int], src: int, w: int, h: int,
          moves: list[tuple[int, int, int, bool]]) -> dict[int, tuple[int, int]]:
    """BFS over walkable cells from ``src``: cell -> (previous cell, direction), src -> (-1, -1)."""
    parent = {src: (-1, -1)}
    queue = deque([src])
    while queue:
        u = queue.popleft()
        ux, uy = u % w, u // w
        for d, dx, dy, diag in moves:
            vx, vy = ux + dx, uy + dy
            if not (0 <= vx < w and 0 <= vy < h):
                continue
            v = vy * w + vx
            if v in parent or not ground[v] or v in blocked or (diag and (no_diag[u] or no_diag[v])):
                continue
            parent[v] = (u, d)
            queue.append(v)
    return parent


def _path(parent: dict[int, tuple[int, int]], cell: int) -> list[int]:
    """Directions from the BFS source to ``cell``."""
    out = []
    while parent[cell][0] != -1:
        cell, d = parent[cell]
        out.append(d)
    return out[::-1]


def plan_push(
    rollable: np.ndarray,
    ground: np.ndarray,
    no_diagonal: np.ndarray,
    boulders: np.ndarray,
    targets: np.ndarray,
    start: tuple[int, int],
    allowed_directions: Iterable[int] = range(8),
) -> list[int] | None:
    """Moves (indices into DIRECTIONS) that push some boulder into some target cell, or None.

    Args:
      rollable: [H, W] bool, cells a boulder may be pushed onto (water excluded: see targets).
      ground: [H, W] bool, cells the agent may walk on (boulder cells included: there is floor
        under them); water and walls are False.
      no_diagonal: [H, W] bool, door cells (no diagonal moves in or out).
      boulders: [H, W] bool, the boulders now.
      targets: [H, W] bool, the water cells worth filling.
      start: the agent's (x, y).
    """
    h, w = ground.shape
    g = ground.ravel().tolist()
    roll = rollable.ravel().tolist()
    nd = no_diagonal.ravel().tolist()
    tgt = targets.ravel().tolist()
    target_xy = [(i % w, i // w) for i in np.flatnonzero(targets)]
    if not target_xy:
        return None
    moves = [(d, *DIRECTIONS[d], DIAGONAL[d]) for d in allowed_directions]
    allowed = {d for d, *_ in moves}
    all_boulders = {int(i) for i in np.flatnonzero(boulders)}

    def pushes_needed(b: int) -> int:
        bx, by = b % w, b // w
        return min(max(abs(bx - tx), abs(by - ty)) for tx, ty in target_xy)

    def direction(a: int, b: int) -> int:
        dx, dy = b % w - a % w, b // w - a // w
        return DIRECTIONS.index((dx, dy))

    src = start[1] * w + start[0]
    first_walk = _walk(g, nd, all_boulders, src, w, h, moves)
    # State: (boulder's original cell, boulder cell, agent cell next to it). Parent: (state, moves).
    parents: dict[tuple[int, int, int], tuple[tuple[int, int, int] | None, list[int]]] = {}
    best: dict[tuple[int, int, int], int] = {}
    heap: list[tuple[int, int, int, tuple[int, int, int]]] = []
    counter = 0
    for o in all_boulders:
        ox, oy = o % w, o // w
        for dx, dy in DIRECTIONS:
            ax, ay = ox - dx, oy - dy
            a = ay * w + ax
            if 0 <= ax < w and 0 <= ay < h and a in first_walk:
                walk = _path(first_walk, a)
                state = (o, o, a)
                best[state] = len(walk)
                parents[state] = (None, walk)
                heapq.heappush(heap, (len(walk) + pushes_needed(o), counter, len(walk), state))
                counter += 1
    expansions = 0
    while heap and expansions < MAX_EXPANSIONS:
        _, _, cost, state = heapq.heappop(heap)
        if cost > best.get(state, cost):
            continue
        expansions += 1
        o, b, a = state
        d = direction(a, b)
        if d not in allowed or (DIAGONAL[d] and (nd[a] or nd[b])):
            continue
        dx, dy = DIRECTIONS[d]
        nx, ny = b % w + dx, b // w + dy
        if not (0 <= nx < w and 0 <= ny < h):
            continue
        nb = ny * w + nx
        others = all_boulders - {o}
        if tgt[nb]:
            return _moves_of(state, parents, direction)
        if not roll[nb] or nb in others:
            continue
        walks = _walk(g, nd, others | {nb}, b, w, h, moves)
        for ddx, ddy in DIRECTIONS:
            ax, ay = nx - ddx, ny - ddy
            a2 = ay * w + ax
            if not (0 <= ax < w and 0 <= ay < h) or a2 not in walks:
                continue
            walk = _path(walks, a2)
            new_cost = cost + 1 + len(walk)
            new_state = (o, nb, a2)
            if new_cost < best.get(new_state, new_cost + 1):
                best[new_state] = new_cost
                parents[new_state] = (state, walk)
                heapq.heappush(heap, (new_cost + pushes_needed(nb), counter, new_cost, new_state))
                counter += 1
    return None


def _moves_of(state, parents, direction) -> list[int]:
    """The move list of a solved search: for each state from the first, its walk, then its push."""
    chain = []
    node = state
    while node is not None:
        chain.append(node)
        node = parents[node][0]
    moves: list[int] = []
    for node in reversed(chain):
        moves += parents[node][1]
        moves.append(direction(node[2], node[1]))
    return moves


def simulate(moves: list[int], start: tuple[int, int], boulders: frozenset) -> list[Step]:
    """The (agent, boulders) each move of a push plan expects to start from, assuming it works."""
    steps: list[Step] = []
    pos, rocks = start, set(boulders)
    for d in moves:
        steps.append((pos, frozenset(rocks), d))
        dx, dy = DIRECTIONS[d]
        nxt = (pos[0] + dx, pos[1] + dy)
        if nxt in rocks:
            rocks.remove(nxt)
            rocks.add((nxt[0] + dx, nxt[1] + dy))
        pos = nxt
    return steps


def fill_targets(ground: np.ndarray, water: np.ndarray, unseen: np.ndarray, goals: np.ndarray,
                 no_diagonal: np.ndarray, start: tuple[int, int]) -> list[np.ndarray]:
    """Water cells worth filling next, best group first.

    A candidate touches the ground the agent can reach (boulders ignored: they move). Candidates
    are ranked by the cost of the way from them to a goal, where each water cell on the way costs
    FILL_PENALTY and an unseen cell UNSEEN_PENALTY, but only inside the bounding box of what has
    been seen and the goals (outside it lies the rock around the level). The first group holds the
    candidates within NEAR_BEST of the best, the second all of them.
    """
    if not goals.any():
        return []
    box = np.zeros_like(goals)
    ys, xs = np.nonzero(ground | water | goals)
    box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    cost = np.where(ground, 1.0, np.where(water, FILL_PENALTY, np.where(unseen & box, UNSEEN_PENALTY, np.inf)))
    to_goal, _ = dijkstra(cost, no_diagonal, [(int(x), int(y)) for y, x in zip(*np.nonzero(goals))])
    reach, _ = dijkstra(np.where(ground, 1.0, np.inf), no_diagonal, start)
    candidates = water & neighbours_any(np.isfinite(reach)) & np.isfinite(to_goal)
    if not candidates.any():
        return []
    best = to_goal[candidates].min()
    near_best = candidates & (to_goal <= best + NEAR_BEST)
    return [near_best, candidates] if (candidates & ~near_best).any() else [near_best]


class BoulderPlanner:
    """Keeps a boulder-push plan across steps and re-plans when the world leaves it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._steps: list[Step] = []

    def next_move(self, walk_cost: np.ndarray, no_diagonal: np.ndarray, boulders: np.ndarray,
                  water: np.ndarray, no_boulder: np.ndarray, unseen: np.ndarray, goals: np.ndarray,
                  pos: tuple[int, int], allowed_directions: Iterable[int]) -> int:
        """The next move towards bridging the water, NO_DIRECTION when no push can help.

        walk_cost: [H, W] step prices (inf: not walkable; boulder cells inf too); water: the water
        cells a boulder may fill; no_boulder: cells no boulder can be pushed into; unseen: cells
        that may hide floor; goals: where the agent wants to get to.
        """
        rocks = frozenset((int(x), int(y)) for y, x in zip(*np.nonzero(boulders)))
        if self._steps and self._steps[0][0] == pos and self._steps[0][1] == rocks:
            return self._steps.pop(0)[2]
        allowed = list(allowed_directions)
        ground = np.isfinite(walk_cost) | boulders
        self._steps = []
        for targets in fill_targets(ground, water, unseen, goals, no_diagonal, pos):
            moves = plan_push(ground & ~no_boulder, ground, no_diagonal, boulders, targets, pos, allowed)
            if moves:
                self._steps = simulate(moves, pos, rocks)
                return self._steps.pop(0)[2]
        return NO_DIRECTION
