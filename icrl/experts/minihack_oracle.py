"""A planning oracle for MiniHack navigation tasks: it reads the map, explores, and walks to the goal.

Every step it re-reads the observation and plans afresh, so sticky actions (the environment
sometimes repeats the previous move instead) only cost a detour:

1. fold the observation into the episode's map memory (``MapMemory``) and learn from the last
   move if it left the agent in place (``MoveLog``);
2. in the dark, where only adjacent monsters are visible, fight from a chokepoint (``tactics``);
3. price every cell: floor 1, a closed door 2 (the first bump opens it), a monster or a cell next
   to one dearer (fighting and being hit cost turns and hit points), a known trap very dear;
   walls, water, lava, boulders and cells a rule forbids cannot be entered. A move whose sticky
   repeat would walk into lava, water or a forbidden cell costs extra, so the planner does not
   point moves at them when it need not (nor two or three cells short of them);
4. run Dijkstra from the agent (NetHack's rule: no diagonal moves through doors);
5. head for the goal (the staircase down, or a task rule's target) when a path exists, else for the
   nearest frontier cell (known floor next to unexplored cells, or floor never seen bare); when
   neither exists but boulders and water do, push a boulder into the water (River); then try
   cells judged rock only from afar; else take a random move onto known ground.

A task rule (``icrl.experts.rules``) adds what the map alone does not say: Memento's cue, where
River's staircase lies behind the water.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icrl.experts import glyph_map as gm
from icrl.experts.boulders import BoulderPlanner
from icrl.experts.bumps import MoveLog
from icrl.experts.memory import MapMemory
from icrl.experts.planning import (DIAGONAL, DIRECTION_KEYS, DIRECTIONS, NO_DIRECTION, cheapest, dijkstra,
                                   dilate, frontier, overshoot_costs)
from icrl.experts.rules import Guidance, TaskRule
from icrl.experts.tactics import melee_move
from icrl.experts.vision import in_the_dark

REQUIRED_KEYS: tuple[str, ...] = ("glyphs", "blstats", "message")

# Step prices (see the module docstring). Only their order matters much: a detour of a few cells
# beats fighting, and almost any detour beats a trap.
FLOOR_COST = 1.0
CLOSED_DOOR_COST = 2.0
MONSTER_COST = 8.0
NEAR_MONSTER_COST = 4.0
TRAP_COST = 50.0
UNEXPLORED_COST = 2.0  # only for rules that aim at cells nobody has seen (optimistic planning)
# Extra price of a move that, repeated once, twice or thrice by sticky actions, would walk into lava
# or water (death): about 40 steps times the chance of so many repeats at p = 0.2. And of a move
# whose repeat would bump into a wall (a wasted turn, which MiniHack fines).
OVERSHOOT_DEADLY = (40.0, 8.0, 1.6)
OVERSHOOT_WALL = 0.1


def message_text(obs: dict) -> str:
    """The top-line message of an observation, as text."""
    raw = np.asarray(obs["message"], dtype=np.uint8).tobytes()
    return raw.split(b"\0", 1)[0].decode("latin-1")


class MiniHackOracle:
    """Expert policy for MiniHack navigation tasks.

    Args:
      native_actions: the task's NLE action tuple (``env.unwrapped.actions``); ``act`` returns an
        index into it. Only its compass moves are used.
      rng: draws the random move made when nothing is worth doing; default seed 0.
      rule: optional task knowledge (``icrl.experts.rules.rule_for_task``).

    Observations must hold ``REQUIRED_KEYS``.
    """

    def __init__(self, native_actions: Sequence[int], rng: np.random.Generator | None = None,
                 rule: TaskRule | None = None):
        keycodes = [int(a) for a in native_actions]
        self._dir_to_action: dict[int, int] = {}
        for d, key in enumerate(DIRECTION_KEYS):
            if ord(key) in keycodes:
                self._dir_to_action[d] = keycodes.index(ord(key))
        if not self._dir_to_action:
            raise ValueError(f"no compass moves among the actions {keycodes}")
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._rule = rule
        self._boulders = BoulderPlanner()
        self._moves = MoveLog()
        self.reset()

    def reset(self) -> None:
        """Forget the level: call at the start of every episode."""
        self.memory = MapMemory()
        self._moves.reset()
        self._boulders.reset()
        self._t = 0
        if self._rule is not None:
            self._rule.reset()

    def act(self, obs: dict) -> int:
        """Index into ``native_actions`` of the move to make now."""
        glyphs = np.asarray(obs["glyphs"])
        pos = gm.agent_position(obs["blstats"])
        self.memory.update(glyphs, pos)
        self._moves.observe(pos, message_text(obs), self._t)
        monsters = gm.monster_mask(glyphs, pos)
        boulders = gm.boulder_mask(glyphs)
        guidance = self._rule.guide(glyphs, pos, self.memory) if self._rule is not None else Guidance()

        direction = self._choose(pos, monsters, boulders, guidance, in_the_dark(glyphs, pos))
        if direction == NO_DIRECTION:
            direction = self._random_move(pos)
        self._moves.record(pos, direction, self.memory.terrain, monsters, boulders)
        self._t += 1
        return self._dir_to_action[direction]

    def _choose(self, pos: tuple[int, int], monsters: np.ndarray, boulders: np.ndarray,
                guidance: Guidance, dark: bool) -> int:
        """Direction of the planned move, NO_DIRECTION when there is nothing to head for."""
        base, no_diag = self._base_costs(boulders, guidance)
        if dark:
            targets = guidance.goals if guidance.goals is not None else np.zeros(gm.MAP_SHAPE, dtype=bool)
            may_walk = gm.WALKABLE[self.memory.terrain] | self.memory.unexplored()
            melee = melee_move(base, no_diag, may_walk, monsters & ~targets, pos, self._dir_to_action)
            if melee is not None:
                return melee
        cost = self._monster_costs(base, monsters)
        dist, first = dijkstra(cost, no_diag, pos, self._moves.blocked_edges, self._dir_to_action,
                               self._overshoot(guidance, boulders))
        goals = self.memory.terrain == gm.GOAL if guidance.goals is None else guidance.goals
        walkable = gm.WALKABLE[self.memory.terrain] & ~boulders
        target = cheapest(dist, goals)
        if target is None:
            # Unexplored ground next, and floor nobody has seen bare (the staircase may lie under
            # an object, or under a monster once it moves away).
            front = frontier(walkable, self.memory.unexplored(include_sighted=False))
            target = cheapest(dist, front | (self.memory.covered & ~monsters))
        water = (self.memory.terrain == gm.WATER) & ~self._moves.no_boulder
        if target is None and boulders.any() and water.any():
            # Nothing reachable to walk to: bridge the water with a boulder towards the goal.
            walk_cost = np.where(boulders | monsters, np.inf, cost)
            unseen = self.memory.unexplored(include_sighted=False)
            direction = self._boulders.next_move(walk_cost, no_diag, boulders, water, self._moves.no_boulder,
                                                 unseen, goals, pos, self._dir_to_action)
            if direction != NO_DIRECTION:
                return direction
        if target is None:
            # Last resort: blank cells judged rock from afar may hide floor after all.
            target = cheapest(dist, frontier(walkable, self.memory.unexplored()))
        if target is None:
            return NO_DIRECTION
        self._boulders.reset()
        return int(first[target[1], target[0]])

    def _random_move(self, pos: tuple[int, int]) -> int:
        """A random move onto known walkable ground (any move if there is none): time passes, and
        whatever blocked the way (a monster, a peaceful one) may move."""
        terrain = self.memory.terrain
        here_door = gm.DOORS[terrain[pos[1], pos[0]]]
        options = []
        for d in sorted(self._dir_to_action):
            dx, dy = DIRECTIONS[d]
            tx, ty = pos[0] + dx, pos[1] + dy
            if not (0 <= tx < gm.MAP_SHAPE[1] and 0 <= ty < gm.MAP_SHAPE[0]) or not gm.WALKABLE[terrain[ty, tx]]:
                continue
            if DIAGONAL[d] and (here_door or gm.DOORS[terrain[ty, tx]]):
                continue
            options.append(d)
        return int(self._rng.choice(options or sorted(self._dir_to_action)))

    def _base_costs(self, boulders: np.ndarray, guidance: Guidance) -> tuple[np.ndarray, np.ndarray]:
        """Step price [21, 79] of every cell, monsters aside, and the cells that forbid diagonal moves."""
        terrain = self.memory.terrain
        cost = np.full(gm.MAP_SHAPE, np.inf)
        cost[gm.WALKABLE[terrain]] = FLOOR_COST
        cost[terrain == gm.DOOR_CLOSED] = CLOSED_DOOR_COST
        cost[terrain == gm.TRAP] = TRAP_COST
        if guidance.optimistic:
            # Only inside the box around what is known and the goals: the rock around the level is
            # no way to anywhere, and a smaller search is a faster one.
            box = np.zeros(gm.MAP_SHAPE, dtype=bool)
            ys, xs = np.nonzero((terrain != gm.UNKNOWN) | (guidance.goals if guidance.goals is not None else False))
            box[max(0, ys.min() - 1) : ys.max() + 2, max(0, xs.min() - 1) : xs.max() + 2] = True
            cost[self.memory.unexplored() & box] = UNEXPLORED_COST
        cost[boulders] = np.inf
        if guidance.forbidden is not None:
            cost[guidance.forbidden] = np.inf
        for x, y in self._moves.off_limits(self._t):
            cost[y, x] = np.inf
        return cost, gm.DOORS[terrain]

    @staticmethod
    def _monster_costs(base: np.ndarray, monsters: np.ndarray) -> np.ndarray:
        """``base`` with monsters' cells and their neighbours made dearer (still passable)."""
        cost = base.copy()
        walk = np.isfinite(cost)
        cost[walk & dilate(monsters, 1)] += NEAR_MONSTER_COST
        cost[walk & monsters] += MONSTER_COST
        return cost

    def _overshoot(self, guidance: Guidance, boulders: np.ndarray) -> np.ndarray:
        """[8, 21, 79] price of entering each cell by each direction (``overshoot_costs``)."""
        terrain = self.memory.terrain
        deadly = (terrain == gm.LAVA) | (terrain == gm.WATER)
        if guidance.forbidden is not None:
            deadly = deadly | guidance.forbidden
        stops = ~gm.WALKABLE[terrain] | boulders
        return overshoot_costs(deadly, stops & ~deadly, OVERSHOOT_DEADLY, terrain == gm.WALL, OVERSHOOT_WALL)
