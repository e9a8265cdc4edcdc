"""The MiniHack planning oracle: pure map/planning helpers on hand-made maps, then real episodes."""

import numpy as np
import pytest
from nle import nethack

from icrl.envs import make_env
from icrl.errors import IcrlError
from icrl.experts import REQUIRED_KEYS, MiniHackOracle, make_expert
from icrl.experts import glyph_map as gm
from icrl.experts.boulders import plan_push, simulate
from icrl.experts.memory import MapMemory
from icrl.experts.planning import DIRECTIONS, NO_DIRECTION, cheapest, dijkstra, frontier, overshoot_costs
from icrl.experts.rules import MementoRule, read_memento_cue
from icrl.experts.tactics import entrances
from icrl.experts.vision import bresenham

N, E, S, W, NE, SE, SW, NW = range(8)
INF = np.inf

# cmap indices (NetHack 3.6 rm.h) used to draw test maps.
CMAP = {" ": 0, "|": 1, "-": 2, ".": 19, "#": 21, ">": 24, "}": 34, "W": 41, "+": 15, "o": 14, "^": 45}


def glyphs_from(rows: list[str]) -> np.ndarray:
    """A [21, 79] glyph array with ``rows`` drawn at the top-left (cmap characters only)."""
    glyphs = np.full(gm.MAP_SHAPE, nethack.GLYPH_CMAP_OFF, dtype=np.int16)
    for y, row in enumerate(rows):
        for x, ch in enumerate(row):
            glyphs[y, x] = nethack.GLYPH_CMAP_OFF + CMAP[ch]
    return glyphs


def monster_glyph(name: str) -> int:
    index = next(i for i in range(nethack.NUMMONS) if nethack.permonst(i).mname == name)
    return nethack.GLYPH_MON_OFF + index


def grid_cost(rows: list[str]) -> np.ndarray:
    """Cost grid of a tiny map: '.' costs 1, '#' is a wall."""
    return np.array([[1.0 if c == "." else INF for c in row] for row in rows])


# ---------------------------------------------------------------------------------- planning
def test_dijkstra_goes_round_a_wall():
    rows = ["....",
            ".##.",
            "...."]
    dist, first = dijkstra(grid_cost(rows), np.zeros((3, 4), bool), (0, 1))
    assert dist[1, 3] == 3  # NE, E, SE around the wall
    assert first[1, 3] in (NE, SE)
    assert not np.isfinite(dist[1, 1])
    assert first[1, 0] == NO_DIRECTION


def test_dijkstra_never_moves_diagonally_through_a_door():
    rows = ["...",
            "...",
            "..."]
    no_diag = np.zeros((3, 3), bool)
    no_diag[1, 1] = True  # a door in the middle
    dist, _ = dijkstra(grid_cost(rows), no_diag, (0, 0))
    assert dist[1, 1] == 2  # E then S (or S then E), not SE
    assert dist[2, 2] == 3  # the diagonal through the door is closed: E, SE, S around it


def test_dijkstra_respects_blocked_edges_and_action_set():
    rows = ["..."]
    dist, _ = dijkstra(grid_cost(rows), np.zeros((1, 3), bool), (0, 0), blocked_edges={(0, 0, E)})
    assert not np.isfinite(dist[0, 2])
    dist, _ = dijkstra(grid_cost(["..", ".."]), np.zeros((2, 2), bool), (0, 0), allowed_directions=[N, E, S, W])
    assert dist[1, 1] == 2  # no diagonal moves in the action set


def test_overshoot_costs_price_repeats_that_reach_lava():
    # Row: floor x=0..3, lava at x=4; a wall at x=1 of a second row stops repeats there.
    deadly = np.array([[False, False, False, False, True], [False] * 5])
    stops = np.array([[False] * 5, [False, True, False, False, False]])
    cost = overshoot_costs(deadly, stops, (40.0, 8.0), bump=stops, bump_weight=0.1)
    assert cost[E, 0, 3] == 40.0  # entering x=3 eastwards: one repeat reaches the lava
    assert cost[E, 0, 2] == 8.0  # two repeats
    assert cost[E, 0, 1] == 0.0  # three: not priced
    assert cost[W, 0, 3] == 0.0  # pointing away
    assert cost[W, 1, 2] == 0.1  # a repeat would bump into the wall at (1, 1)
    assert cost[W, 1, 4] == 0.0 and cost[W, 1, 3] == 0.0


def test_dijkstra_overshoot_avoids_pointing_at_lava():
    # Going E along the middle row ends pointing at lava: the planner arrives from above instead.
    rows = ["...",
            "...",
            "..."]
    deadly = np.zeros((3, 3), bool)
    deadly[1, 2] = True  # lava at (2, 1): stepping E onto (1, 1) points at it
    arrival = overshoot_costs(deadly, np.zeros((3, 3), bool), (40.0,))
    dist, first = dijkstra(grid_cost(rows), np.zeros((3, 3), bool), (0, 1), arrival_cost=arrival)
    assert dist[1, 1] == 2  # not the direct E step (1 + 40)
    assert first[1, 1] != E


def test_dijkstra_multiple_sources_gives_distance_to_nearest():
    dist, _ = dijkstra(grid_cost(["....."]), np.zeros((1, 5), bool), [(0, 0), (4, 0)])
    assert dist.tolist() == [[0, 1, 2, 1, 0]]


def test_frontier_and_cheapest():
    walkable = np.array([[True, True, False], [True, True, False]])
    unexplored = np.array([[False, False, True], [False, False, False]])
    front = frontier(walkable, unexplored)
    assert front.tolist() == [[False, True, False], [False, True, False]]
    dist = np.array([[0.0, 3.0, INF], [1.0, 2.0, INF]])
    assert cheapest(dist, front) == (1, 1)
    assert cheapest(dist, np.zeros_like(front)) is None


def test_bresenham_lists_cells_between():
    assert bresenham(0, 0, 3, 0) == [(1, 0), (2, 0)]
    assert bresenham(0, 0, 1, 1) == []
    assert bresenham(0, 0, 2, 2) == [(1, 1)]


# ---------------------------------------------------------------------------------- map reading
def test_terrain_of_classifies_cells_and_hides_what_stands_on_them():
    glyphs = glyphs_from(["|.>}W+o^"])
    glyphs[1, 0] = monster_glyph("jackal")
    glyphs[1, 1] = gm.BOULDER_GLYPH
    t = gm.terrain_of(glyphs)
    assert t[0, :8].tolist() == [gm.WALL, gm.FLOOR, gm.GOAL, gm.LAVA, gm.WATER, gm.DOOR_CLOSED,
                                 gm.DOOR_OPEN, gm.TRAP]
    assert t[1, 0] == -1 and t[1, 1] == -1
    assert t[5, 5] == gm.UNKNOWN
    assert gm.boulder_mask(glyphs)[1, 1] and gm.boulder_mask(glyphs).sum() == 1


def test_monster_mask_leaves_out_the_agent():
    glyphs = glyphs_from(["...."])
    glyphs[0, 1] = monster_glyph("rogue")
    glyphs[0, 3] = monster_glyph("jackal")
    mask = gm.monster_mask(glyphs, agent=(1, 0))
    assert mask[0].tolist()[:4] == [False, False, False, True]
    assert gm.monster_name(glyphs[0, 3]) == "jackal"


def test_memory_remembers_floor_under_monsters_and_what_was_looked_at():
    mem = MapMemory()
    glyphs = glyphs_from(["...", "..."])
    glyphs[0, 2] = monster_glyph("jackal")
    mem.update(glyphs, (0, 0))
    assert mem.terrain[0, 2] == gm.FLOOR and mem.covered[0, 2]
    assert mem.observed[1, 1] and not mem.observed[5, 5]
    glyphs = glyphs_from(["...", "..."])
    mem.update(glyphs, (1, 0))
    assert not mem.covered[0, 2]  # now seen bare
    assert mem.unexplored()[0, 3]  # blank, never next to the agent (sighted or not)


def test_entrances_count_door_rule():
    walkable = np.ones((3, 3), bool)
    no_diag = np.zeros((3, 3), bool)
    assert entrances(walkable, no_diag)[1, 1] == 8
    no_diag[1, 1] = True
    assert entrances(walkable, no_diag)[1, 1] == 4


# ---------------------------------------------------------------------------------- boulders
def test_plan_push_bridges_the_water():
    # Agent at x=0, boulder at x=2, water at x=4; the plan walks to the boulder and pushes it east.
    ground = np.array([[True, True, True, True, False]] * 3)
    water = np.zeros((3, 5), bool)
    water[:, 4] = True
    boulders = np.zeros((3, 5), bool)
    boulders[1, 2] = True
    moves = plan_push(ground, ground, np.zeros((3, 5), bool), boulders, water, (0, 1))
    assert moves is not None
    steps = simulate(moves, (0, 1), frozenset({(2, 1)}))
    final_pos, _, last = steps[-1]
    dx, dy = DIRECTIONS[last]
    pushed_to = (final_pos[0] + 2 * dx, final_pos[1] + 2 * dy)
    assert water[pushed_to[1], pushed_to[0]]
    assert len(moves) == 3  # E, then two pushes E


def test_plan_push_respects_cells_a_boulder_cannot_enter():
    ground = np.array([[True, True, True, True, False]])
    water = np.array([[False, False, False, False, True]])
    boulders = np.array([[False, True, False, False, False]])
    no_diag = np.zeros_like(ground)
    assert plan_push(ground, ground, no_diag, boulders, water, (0, 0)) == [E, E, E]
    rollable = ground.copy()
    rollable[0, 3] = False  # e.g. a boulder already sunk there: this one cannot pass
    assert plan_push(rollable, ground, no_diag, boulders, water, (0, 0)) is None
    assert plan_push(ground, ground, no_diag, boulders, np.zeros_like(water), (0, 0)) is None


# ---------------------------------------------------------------------------------- Memento cue
@pytest.mark.parametrize("floors,names,safe", [
    (2, ("blue jelly", None), -1),
    (2, ("lichen", None), 5),
    (4, ("blue jelly", "red mold"), -1),
    (4, ("spotted jelly", "red mold"), 1),
    (4, ("blue jelly", "green mold"), 3),
    (4, ("spotted jelly", "green mold"), 5),
])
def test_memento_cue_decides_the_branch(floors, names, safe):
    glyphs = glyphs_from(["." * 10] * 10)
    glyphs[3, 4] = monster_glyph(names[0])
    if names[1]:
        glyphs[7, 4] = monster_glyph(names[1])
    (x, y), got, others = read_memento_cue(glyphs, floors)
    assert (x, y, got) == (4, 3, safe)
    assert safe not in others and len(others) == floors - 1
    guidance = MementoRule(floors).guide(glyphs, (0, 0), MapMemory())
    assert guidance.goals[3 + safe, 4 + 69] and guidance.goals.sum() == 1
    for dy in others:  # every other branch, from its mouth (+59) to its end (+69), board (+65) included
        assert guidance.forbidden[3 + dy, 4 + 59 : 4 + 70].all()
    assert guidance.forbidden.sum() == 11 * (floors - 1)


def test_memento_cue_waits_for_both_f4_monsters():
    glyphs = glyphs_from(["." * 10] * 10)
    glyphs[3, 4] = monster_glyph("blue jelly")
    assert read_memento_cue(glyphs, 4) is None
    assert MementoRule(4).guide(glyphs, (0, 0), MapMemory()).goals is None


# ---------------------------------------------------------------------------------- the oracle
def test_oracle_maps_directions_to_native_actions():
    actions = tuple(nethack.CompassDirection)[::-1]  # a reordered action set
    oracle = MiniHackOracle(actions)
    glyphs = glyphs_from(["-----", "..>..", "-----"])
    glyphs[1, 0] = monster_glyph("rogue")
    obs = {"glyphs": glyphs, "blstats": np.array([0, 1] + [0] * 25), "message": np.zeros(256, np.uint8)}
    a = oracle.act(obs)
    assert int(actions[a]) == int(nethack.CompassDirection.E)


def test_make_expert_names_the_task_it_cannot_play():
    with pytest.raises(IcrlError, match="NetHackChallenge-v0"):
        make_expert("NetHackChallenge-v0", ())
    with pytest.raises(IcrlError, match="MiniHack-Foo"):
        make_expert("MiniHack-Foo-v0", (int(nethack.Command.KICK),))


def play(task: str, level: int, sticky: float = 0.0) -> tuple[bool, int]:
    """(solved, steps) of one oracle episode."""
    env = make_env(task, sticky_p=sticky, extra_keys=REQUIRED_KEYS)
    expert = make_expert(task, env.native_actions, np.random.default_rng(level))
    obs, done, steps, info, reward = env.reset(level), False, 0, {}, 0.0
    while not done:
        obs, reward, term, trunc, info = env.step(int(env.spec.legal_actions[expert.act(obs)]))
        done, steps = term or trunc, steps + 1
    env.close()
    return info["success"], steps


@pytest.mark.parametrize("task", ["MiniHack-MazeWalk-9x9-v0", "MiniHack-MultiRoom-N6-v0",
                                  "MiniHack-Labyrinth-Small-v0"])
def test_oracle_reaches_the_goal(task):
    for level in range(3):
        success, steps = play(task, level)
        assert success, f"{task} level {level}: no success after {steps} steps"


@pytest.mark.parametrize("task", ["MiniHack-MazeWalk-15x15-v0", "MiniHack-MultiRoom-N6-Lava-v0",
                                  "MiniHack-River-Narrow-v0", "MiniHack-Memento-F4-v0"])
def test_oracle_solves_harder_tasks(task):
    for level in range(2):
        success, steps = play(task, level)
        assert success, f"{task} level {level}: no success after {steps} steps"


def test_oracle_copes_with_sticky_actions():
    for level in range(3):
        success, steps = play("MiniHack-MazeWalk-15x15-v0", level, sticky=0.2)
        assert success, f"level {level}: no success after {steps} steps under sticky actions"
