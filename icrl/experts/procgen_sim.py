"""A batch of Procgen games to search in: K slots of one game, each put on any saved state.

Procgen 0.10 saves and restores a game's whole state (``get_state`` / ``set_state``, about 100 µs
each), random number generator included, so a game restored from a state and given the same actions
plays out exactly the same way (byte-identical states; ``tests/test_procgen_search.py``). The search
expert (``procgen_search``) uses a ``ProcgenSimulator`` as its model of the level.

Also here: the actions worth trying in each game (``GAME_ACTIONS``) and the novelty cells of a state:
the agent's place read from the saved state (``position_cells``), or a shrunk frame (``frame_cells``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from icrl.envs.procgen import _gym3_env_class

NOOP = 4  # Procgen's native action 4 is "no buttons"

# Native actions that change the game, per game: every action whose outcome differed from NOOP's
# from 30 random states (6 steps each), with duplicates dropped (LEFT+DOWN / RIGHT+DOWN where DOWN
# does nothing), plus NOOP. Fewer actions make the search wider where it matters; the games' full
# action set stays legal for the environment. Ninja's keys 9-14 (throwing stars) are left out: with
# them it completed 6 of 10 train levels, without them 7 (docs/experts.md).
#   0 LEFT+DOWN 1 LEFT 2 LEFT+UP 3 DOWN 4 NOOP 5 UP 6 RIGHT+DOWN 7 RIGHT 8 RIGHT+UP 9 D 10 A 11 W 12 S 13 Q 14 E
_MOVES_8 = (0, 1, 2, 3, 4, 5, 6, 7, 8)
_PLATFORM = (1, 2, 4, 5, 7, 8)  # DOWN does nothing: left / right, with or without jumping
GAME_ACTIONS: dict[str, tuple[int, ...]] = {
    "bigfish": _MOVES_8, "bossfight": _MOVES_8 + (9,), "caveflyer": _MOVES_8 + (9,), "chaser": _MOVES_8,
    "climber": _PLATFORM, "coinrun": _PLATFORM, "dodgeball": _MOVES_8 + (9,), "fruitbot": (1, 4, 7, 9),
    "heist": _MOVES_8, "jumper": _PLATFORM, "leaper": _MOVES_8, "maze": (1, 3, 4, 5, 7), "miner": (1, 3, 4, 5, 7),
    "ninja": _PLATFORM, "plunder": (1, 4, 7, 9), "starpilot": _MOVES_8 + (9, 10),
}


def frame_cells(frames: np.ndarray, grid: int = 8, levels: int = 8) -> list[bytes]:
    """Go-Explore cells of frames [K, 64, 64, 3] uint8: the grey image averaged over a ``grid`` x
    ``grid`` grid and cut into ``levels`` intensities, as K byte strings. Two frames share a cell when
    they look alike at that coarseness (in the scrolling games the view follows the agent, so a cell
    is roughly a place)."""
    k = frames.shape[0]
    grey = frames.astype(np.float32).mean(axis=-1)
    side = frames.shape[1] // grid
    small = grey.reshape(k, grid, side, grid, side).mean(axis=(2, 4))
    return [row.tobytes() for row in (small * (levels / 256.0)).astype(np.uint8)]


def agent_position(state: bytes) -> tuple[float, float] | None:
    """The agent's (x, y) in grid units, read from a saved Procgen state; None if not found.

    Procgen writes each entity as floats x, y, vx, vy, rx, ry then ints type, image_type,
    image_theme, render_z, will_erase, collides_with_entities, ... (``Entity::serialize``), and the
    agent has type PLAYER = 0. Its offset moves from state to state (the random generators before it
    are saved as text), so the state is scanned at each byte alignment for that pattern with
    plausible values: in every game one entity matches (measured on all 16), and its x follows LEFT
    and RIGHT. With no match, or more than one, the caller falls back to frame cells.
    """
    # The agent sat 13,548 .. 13,602 bytes in on all 16 games: look near there first (5x faster).
    count, found = _scan(state[_WINDOW[0]:_WINDOW[1]])
    if count != 1:
        count, found = _scan(state)
    return found if count == 1 else None


_WINDOW = (12_000, 16_000)


def _scan(state: bytes) -> tuple[int, tuple[float, float] | None]:
    """(number of agent-like entities in ``state``, the last one's (x, y))."""
    found, count = None, 0
    for align in range(4):
        n = (len(state) - align) // 4
        if n < 13:
            continue
        ints = np.frombuffer(state, np.int32, n, align)
        floats = np.frombuffer(state, np.float32, n, align)
        idx = np.flatnonzero(ints[6:n - 6] == 0) + 6
        rx, ry, x, y = floats[idx - 2], floats[idx - 1], floats[idx - 6], floats[idx - 5]
        with np.errstate(invalid="ignore"):
            ok = (rx > 0.05) & (rx < 5) & (ry > 0.05) & (ry < 5) & (x >= -1) & (x < 200) & (y >= -1) & (y < 200)
        ok &= ((ints[idx + 4] == 0) | (ints[idx + 4] == 1)) & ((ints[idx + 5] == 0) | (ints[idx + 5] == 1))
        ok &= (np.abs(ints[idx + 1]) < 1000) & (np.abs(ints[idx + 3]) < 100)
        for i in idx[ok]:
            count += 1
            found = (float(floats[i - 6]), float(floats[i - 5]))
    return count, found


def position_cells(states: Sequence[bytes], returns: np.ndarray, quantum: float = 1.0) -> list[bytes | None]:
    """Go-Explore cells from the agent's place: (x // quantum, y // quantum, return so far), one per
    state [K]; None where the position cannot be read."""
    out: list[bytes | None] = []
    for state, ret in zip(states, returns):
        pos = agent_position(state)
        out.append(None if pos is None else
                   np.array([pos[0] // quantum, pos[1] // quantum, round(float(ret), 1)], np.float32).tobytes())
    return out


class ProcgenSimulator:
    """K slots of one Procgen game. ``steps`` counts every slot-step taken (the search budget).

    ``load(states)`` puts slot i on ``states[i]`` (K byte strings); ``step(actions)`` steps every
    slot with native actions [K] and returns (reward [K] float32, frames [K, 64, 64, 3] uint8,
    ended [K] bool, complete [K] bool). A slot whose episode ended is reset by Procgen to a fresh
    episode: its later steps mean nothing until it is loaded again.
    """

    def __init__(self, game: str, num: int, distribution_mode: str = "easy"):
        self.game, self.num = game, num
        self._env = _gym3_env_class()(num=num, env_name=game, start_level=0, num_levels=1,
                                      distribution_mode=distribution_mode)
        self.steps = 0

    def load(self, states: Sequence[bytes]) -> None:
        if len(states) != self.num:
            raise ValueError(f"{self.num} slots need {self.num} states, got {len(states)}")
        self._env.callmethod("set_state", list(states))

    def states(self) -> list[bytes]:
        return list(self._env.callmethod("get_state"))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._env.act(np.asarray(actions, np.int32).reshape(self.num))
        reward, obs, first = self._env.observe()
        self.steps += self.num
        complete = np.zeros(self.num, bool)
        if first.any():  # get_info costs a dict per slot: read it only when an episode ended
            info = self._env.get_info()
            for i in np.flatnonzero(first):
                complete[i] = bool(info[i].get("prev_level_complete", 0))
        return reward.astype(np.float32), obs["rgb"], first.astype(bool), complete

    def close(self) -> None:
        self._env.close()


@functools.lru_cache(maxsize=8)
def shared_simulator(game: str, num: int, distribution_mode: str = "easy") -> ProcgenSimulator:
    """One simulator per (game, slots, mode) and process: experts are made per episode, and making a
    Procgen env loads its assets. Only ever used by one expert at a time (experts load every slot
    before stepping, so nothing carries over between them)."""
    return ProcgenSimulator(game, num, distribution_mode)
