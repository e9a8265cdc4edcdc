"""``icrl nld sample``: write a small directory in the exact NLD-AA format, recorded by NLE itself.

NLD-AA is a set of ``NetHackChallenge-v0`` recordings (AutoAscend playing, ``save_ttyrec_every=1``).
This module lets a simple bot play games in the same environment with the same recording options,
so the output is what ``nle.dataset.populate_db.add_nledata_directory`` expects::

    OUT/
    ├── sample-seed<S>/                     one NLE savedir (NLE names its files by process id)
    │   ├── nle.<pid>.0.ttyrec3.bz2         game 0: tty output, keypresses and scores (ttyrec v3)
    │   ├── nle.<pid>.1.ttyrec3.bz2
    │   └── nle.<pid>.xlogfile              one line per finished game, ``ttyrecname=`` links it
    └── seeds.json                          sidecar (icrl's, ignored by nle): which NetHack seeds
                                            played each ttyrec, so a test can replay the game

Every game really ends (the xlogfile only lists ended games): the bot explores and fights, and once
its step budget is spent it quits with NetHack's own ``#quit`` command (``M-q``, then ``y``), which
NetHack records as ``death=quit``; a game where the bot dies first ends by death.

Seeding: ``NetHackChallenge-v0`` forbids reseeding (a 2021 competition rule), so the core and
display seeds are set through the unlocked method of NetHack's class, with NetHack's own reseeding
off, and ``fix_moon_phase=True`` so that the moon phase (luck) follows the seed, not today's date.
The same seeds and keypresses then replay the game exactly (tested in tests/test_nld.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

from icrl.errors import IcrlError

SIDECAR = "seeds.json"
TTY_KEYS = ("tty_chars", "tty_colors", "tty_cursor")

# Keycodes the bot uses; every one is an NLE action (the sample's keypresses all map).
_MOVES = tuple(ord(c) for c in "kjhlyubn")  # N S W E NW NE SW SE
_DELTAS = {ord("k"): (-1, 0), ord("j"): (1, 0), ord("h"): (0, -1), ord("l"): (0, 1),
           ord("y"): (-1, -1), ord("u"): (-1, 1), ord("b"): (1, -1), ord("n"): (1, 1)}
_ENTER, _ESC, _SEARCH, _LOOK, _INVENTORY, _PICKUP = 13, 27, ord("s"), ord(":"), ord("i"), ord(",")
_QUIT = 241  # M-q: #quit (nle.nethack.Command.QUIT)
_YES = ord("y")
_PAGE = re.compile(r"\(\d+ of \d+\)")
_MONSTER_CHARS = frozenset(range(ord("a"), ord("z") + 1)) | frozenset(range(ord("A"), ord("Z") + 1))


@dataclasses.dataclass(frozen=True)
class SampledGame:
    """One recorded game: its ttyrec (relative to the sample dir), seeds, and how it went."""

    ttyrec: str
    core: int
    disp: int
    steps: int  # env.step calls the bot made (the ttyrec also holds keys NLE sends itself)
    ended_by: str  # "quit" | "death"
    reward: float  # sum of NLE's score-delta rewards


def _screen_text(chars: np.ndarray) -> list[str]:
    """[24, 80] uint8 -> 24 strings (latin-1)."""
    return [bytes(row).decode("latin-1") for row in chars]


class ExploreBot:
    """A simple explorer: keeps a heading and turns when blocked, attacks adjacent monsters by moving
    into them, now and then searches, looks, opens the inventory or picks up, and answers the
    game's prompts (``--More--`` with Enter, menus and unknown questions with Escape).

    ``act(obs)`` returns a keycode; ``quit_now`` makes it quit the game (``M-q`` then ``y``).
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.heading = int(rng.choice(_MOVES))
        self.last_cursor: tuple[int, int] | None = None
        self.last_key: int | None = None
        self.quit_now = False
        self.quit_sent = False

    def act(self, obs: dict[str, np.ndarray]) -> int:
        key = self._choose(obs)
        self.last_key = key
        return key

    def _choose(self, obs: dict[str, np.ndarray]) -> int:
        lines = _screen_text(obs["tty_chars"])
        top = lines[0]
        screen = "\n".join(lines)
        if "--More--" in screen:
            return _ENTER
        if self.quit_sent and "Really quit?" in top:
            return _YES
        if "(end)" in screen or _PAGE.search(screen):
            return _ESC  # a menu or text window (inventory, pick-up list)
        if "[yn" in top or "[ynq" in top or top.rstrip().endswith("?") or "In what direction" in top:
            return _ESC  # decline questions the bot does not handle
        if self.quit_now:
            self.quit_sent = True
            return _QUIT
        return self._explore(obs)

    def _explore(self, obs: dict[str, np.ndarray]) -> int:
        chars = obs["tty_chars"]
        row, col = (int(v) for v in obs["tty_cursor"])
        cursor = (row, col)
        # Attack (move into) an adjacent monster letter; the map is rows 1..21.
        for key, (dr, dc) in _DELTAS.items():
            r, c = row + dr, col + dc
            if 1 <= r <= 21 and 0 <= c < 80 and int(chars[r, c]) in _MONSTER_CHARS:
                return key
        roll = self.rng.random()
        if roll < 0.03:
            return _SEARCH
        if roll < 0.04:
            return _LOOK
        if roll < 0.05:
            return _INVENTORY
        if roll < 0.06:
            return _PICKUP
        blocked = self.last_key in _DELTAS and cursor == self.last_cursor
        if blocked or roll > 0.9:
            self.heading = int(self.rng.choice(_MOVES))
        self.last_cursor = cursor
        return self.heading


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IcrlError(f"{out}: exists and is not an empty directory (nld sample never overwrites data)")


def write_sample(out: str | os.PathLike, games: int, *, seed: int = 0, min_steps: int = 150,
                 max_steps: int = 400) -> list[SampledGame]:
    """Let ``ExploreBot`` play ``games`` games of ``NetHackChallenge-v0`` recorded into ``out``.

    Game ``g`` uses NetHack seeds drawn from ``seed`` and plays a step budget drawn uniformly from
    [min_steps, max_steps] before quitting (or dies first). Writes the sidecar ``seeds.json``.
    Returns the games in order.
    """
    import gymnasium as gym
    import nle  # noqa: F401  (registers NetHackChallenge-v0)

    if games < 1:
        raise IcrlError(f"--games must be >= 1, got {games}")
    if not 1 <= min_steps <= max_steps:
        raise IcrlError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    out = Path(out)
    _check_out_dir(out)
    savedir = out / f"sample-seed{seed}"
    savedir.mkdir(parents=True)
    env = gym.make("NetHackChallenge-v0", savedir=str(savedir), save_ttyrec_every=1,
                   observation_keys=TTY_KEYS, fix_moon_phase=True)
    nle_env = env.unwrapped
    native = {int(a): i for i, a in reversed(list(enumerate(nle_env.actions)))}  # keycode -> first index
    rng = np.random.default_rng(seed)
    played: list[SampledGame] = []
    try:
        for g in range(games):
            core, disp = (int(s) for s in rng.integers(1, 2**31 - 1, size=2))
            budget = int(rng.integers(min_steps, max_steps + 1))
            bot = ExploreBot(np.random.default_rng([seed, g]))
            nh = nle_env.nethack
            # The class method, not the instance attribute NetHackChallenge replaces with a refusal.
            type(nh).set_initial_seeds(nh, core, disp, False, None)
            obs, _ = env.reset()
            ttyrec = Path(nle_env.nethack._ttyrec).name
            steps, total, done, info = 0, 0.0, False, {}
            while not done:
                bot.quit_now = steps >= budget
                obs, reward, terminated, truncated, info = env.step(native[bot.act(obs)])
                total += reward
                steps += 1
                done = terminated or truncated
                if steps > budget + 500:
                    raise RuntimeError(f"game {g} (seeds {core}, {disp}) did not end after quitting")
            played.append(SampledGame(ttyrec=f"{savedir.name}/{ttyrec}", core=core, disp=disp, steps=steps,
                                      ended_by="quit" if bot.quit_sent else "death", reward=total))
    finally:
        env.close()  # closes (flushes) the last ttyrec
    sidecar = {
        "format": "icrl-nld-sample", "version": 1, "env": "NetHackChallenge-v0",
        "seed": seed, "fix_moon_phase": True, "reseed": False,
        "games": [dataclasses.asdict(p) for p in played],
    }
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
    return played


def read_sidecar(sample_dir: str | os.PathLike) -> dict[str, SampledGame]:
    """The sidecar of a sample directory: ttyrec path (relative to the sample dir) -> game."""
    path = Path(sample_dir) / SIDECAR
    if not path.is_file():
        raise IcrlError(f"{path}: no sidecar (not written by `icrl nld sample`)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {g["ttyrec"]: SampledGame(**g) for g in meta["games"]}
