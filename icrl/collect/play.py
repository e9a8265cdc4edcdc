"""``icrl play``: a person plays one MiniHack level in the terminal; the episode is stored as a human demo.

Keys (``key_to_action``): vi-keys ``h j k l y u b n`` and the arrow keys move (Home, PgUp, End,
PgDn, or the keypad corners, for the diagonals); any other key whose character is one of the task's
own NetHack actions does that action (e.g. ``s`` to search, in tasks that have it). ``q`` and Esc
quit *without saving*: a demo is only ever a finished episode.

An episode that ends (goal, death, or the step limit) is appended to the store with source
``human`` as the next free episode number of its level, if it solved the task; with
``keep_failed`` failed episodes are stored too. ``--level`` is a level *index* within a split, so
``icrl play TASK --split heldout --level 3`` plays the same level (seed ``level_seed("heldout", 3)``)
that ``icrl collect`` calls level 3 of the held-out split.

The loop (``play_episode``, ``play_level``) takes its keys from a ``read_key`` function and shows
screens through a ``show`` function, so it runs the same under curses (``CursesScreen``) and under a
test's scripted keys.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from nle.nethack.actions import CompassDirection as Dir

from icrl.collect.levels import attempt_seeds, level_seed
from icrl.collect.recorder import EpisodeRecorder
from icrl.store.episode import Episode
from icrl.errors import IcrlError

ReadKey = Callable[[], str]  # one key: a character ("h"), or a curses key name ("KEY_UP")
Show = Callable[[dict[str, np.ndarray], str], None]  # (observation, status line)

QUIT_KEYS = frozenset({"q", "\x1b"})
DIRECTION_KEYS: dict[str, Dir] = {
    "k": Dir.N, "j": Dir.S, "h": Dir.W, "l": Dir.E, "y": Dir.NW, "u": Dir.NE, "b": Dir.SW, "n": Dir.SE,
    "KEY_UP": Dir.N, "KEY_DOWN": Dir.S, "KEY_LEFT": Dir.W, "KEY_RIGHT": Dir.E,
    "KEY_HOME": Dir.NW, "KEY_PPAGE": Dir.NE, "KEY_END": Dir.SW, "KEY_NPAGE": Dir.SE,
    "KEY_A1": Dir.NW, "KEY_A3": Dir.NE, "KEY_C1": Dir.SW, "KEY_C3": Dir.SE,
}
HELP = "move: hjklyubn or arrows (Home/PgUp/End/PgDn diagonals); q or Esc quits without saving"


def key_to_action(key: str, native_actions: Sequence[int]) -> int | None:
    """Index into ``native_actions`` of the action ``key`` asks for; None if the key does nothing
    in this task (unmapped, a quit key, or a move the task does not have)."""
    if key in QUIT_KEYS:
        return None
    if key in DIRECTION_KEYS:
        code = int(DIRECTION_KEYS[key])
    elif len(key) == 1:
        code = ord(key)  # NetHack actions are keypresses: a task's own key does its own action
    else:
        return None
    codes = [int(a) for a in native_actions]
    return codes.index(code) if code in codes else None


@dataclasses.dataclass
class PlayOutcome:
    """How a play session ended. ``episode`` is None when the player quit before the end."""

    episode: Episode | None
    success: bool
    saved: bool
    level: int  # the level seed
    message: str


def play_episode(env: Any, task: str, level: int, episode: int, read_key: ReadKey, show: Show) -> tuple[Episode | None, bool]:
    """Let the player play one episode of ``level`` on ``env``: (episode, solved), or (None, False)
    if they quit. Records the player's chosen actions (not the sticky-executed ones)."""
    native = env.native_actions
    legal = env.spec.legal_actions
    rec = EpisodeRecorder(env.spec.domain)
    obs = env.reset(level)
    total = 0.0
    show(obs, f"{task} level {level} | step 0 | {HELP}")
    while True:
        key = read_key()
        if key in QUIT_KEYS:
            return None, False
        index = key_to_action(key, native)
        if index is None:
            show(obs, f"key {key!r} does nothing in this task | {HELP}")
            continue
        action = int(legal[index])
        next_obs, reward, terminated, truncated, info = env.step(action)
        rec.add(obs, action, reward)
        obs, total = next_obs, total + reward
        if terminated or truncated:
            success = bool(info.get("success", False))
            show(obs, f"episode over after {len(rec)} steps: {'solved' if success else 'not solved'}, return {total:+.2f}")
            ep = rec.finish(task=task, level=level, episode=episode, source="human",
                            terminated=terminated, truncated=truncated)
            return ep, success
        show(obs, f"{task} level {level} | step {len(rec)} | return {total:+.2f} | {HELP}")


def next_episode_number(store: Any, task: str, level: int) -> int:
    """One more than the highest episode number stored for (task, level); 0 if none."""
    rows = store.index.rows_of(task, level)
    return int(store.index.columns["episode"][rows].max()) + 1 if len(rows) else 0


def play_level(task: str, level_index: int, out: str | os.PathLike, read_key: ReadKey, show: Show, *,
               split: str = "heldout", sticky: float = 0.0, max_steps: int | None = None,
               keep_failed: bool = False, seed: int = 0) -> PlayOutcome:
    """Play level ``level_index`` of ``split`` of ``task`` and store the episode (see module doc)."""
    from icrl.store.lock import StoreLocked, lock_holder
    from icrl.store.reader import TrajectoryStore
    from icrl.store.writer import ShardWriter
    from icrl.envs import domain_of, make_env

    if domain_of(task) != "nethack":
        raise IcrlError(f"icrl play shows the NetHack tty: {task!r} is not a MiniHack/NetHack task")
    level = level_seed(split, level_index)
    with TrajectoryStore.create(out) as store:
        episode = next_episode_number(store, task, level)
    holder = lock_holder(out)
    if holder is not None:  # before the level is played, not when the demo is saved
        raise StoreLocked(f"{out}: the store is being written by {holder}; play once it has finished")
    sticky_seed, _ = attempt_seeds(seed, task, level, episode, 0)
    env = make_env(task, sticky_p=sticky, max_steps=max_steps, seed=sticky_seed)
    try:
        ep, success = play_episode(env, task, level, episode, read_key, show)
    finally:
        env.close()
    if ep is None:
        return PlayOutcome(None, False, False, level, "quit: nothing saved")
    if not (success or keep_failed):
        return PlayOutcome(ep, False, False, level, f"not solved after {ep.length} steps: not saved "
                                                    "(--keep-failed stores failed episodes)")
    with ShardWriter(out, "play", wait=True) as writer:  # a command started meanwhile: wait, keep the demo
        # Under the store's write lock now: if another command stored this episode number while
        # the level was played, this demo takes the next one.
        with TrajectoryStore(out) as store:
            episode = next_episode_number(store, task, level) if store.contains(task, level, episode) else episode
        ep = dataclasses.replace(ep, episode=episode)
        writer.append(ep)
    return PlayOutcome(ep, success, True, level, f"{'solved' if success else 'not solved'} in {ep.length} steps: "
                                                 f"saved to {out} as {task} level {level} episode {episode}")


# ------------------------------------------------------------------------------------ the terminal

# NetHack colours 0-15 -> (curses colour, bold). 8 is NetHack's "no colour" (dark grey).
_CURSES_COLORS = ("BLACK", "RED", "GREEN", "YELLOW", "BLUE", "MAGENTA", "CYAN", "WHITE")
ROWS, COLS = 24, 80


class CursesScreen:
    """Shows tty observations in a curses window and reads keys as names (``"h"``, ``"KEY_UP"``)."""

    def __init__(self, stdscr: Any):
        import curses

        self.curses = curses
        self.stdscr = stdscr
        height, width = stdscr.getmaxyx()
        if height < ROWS + 2 or width < COLS:
            raise IcrlError(f"icrl play needs a terminal of at least {COLS}x{ROWS + 2}, this one is {width}x{height}")
        stdscr.keypad(True)
        self.attrs = [0] * 16
        if curses.has_colors():
            curses.start_color()
            curses.use_default_colors()
            for i, name in enumerate(_CURSES_COLORS):
                curses.init_pair(i + 1, getattr(curses, f"COLOR_{name}"), -1)
            for c in range(16):
                self.attrs[c] = curses.color_pair(c % 8 + 1) | (curses.A_BOLD if c >= 8 else 0)
            self.attrs[0] = 0  # black on the default background would hide text: plain

    def show(self, obs: dict[str, np.ndarray], status: str) -> None:
        # Control characters (NUL in unused cells) would break addstr: show them as blanks.
        chars = np.where(obs["tty_chars"] < 32, 32, obs["tty_chars"]).astype(np.uint8)
        colors = obs["tty_colors"]
        self.stdscr.erase()
        for r in range(ROWS):
            c = 0
            while c < COLS:  # runs of one colour: one addstr each
                end = c + 1
                while end < COLS and colors[r, end] == colors[r, c]:
                    end += 1
                text = bytes(chars[r, c:end]).decode("latin-1")
                self.stdscr.addstr(r, c, text, self.attrs[int(colors[r, c]) % 16])
                c = end
        self.stdscr.addnstr(ROWS + 1, 0, status, COLS - 1)
        row, col = (int(x) for x in obs["tty_cursor"])
        if 0 <= row < ROWS and 0 <= col < COLS:
            self.stdscr.move(row, col)
        self.stdscr.refresh()

    def message(self, text: str) -> None:
        self.stdscr.move(ROWS + 1, 0)
        self.stdscr.clrtoeol()
        self.stdscr.addnstr(ROWS + 1, 0, text, COLS - 1)
        self.stdscr.refresh()

    def read_key(self) -> str:
        code = self.stdscr.getch()
        if 0 <= code < 256:
            return chr(code)
        name = self.curses.keyname(code)
        return name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)


def play_in_terminal(task: str, level_index: int, out: str | os.PathLike, **kwargs: Any) -> PlayOutcome:
    """``play_level`` under curses; the final screen stays until a key is pressed."""
    import curses
    import sys

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise IcrlError("icrl play needs an interactive terminal (stdin and stdout are not a tty)")
    os.environ.setdefault("ESCDELAY", "25")  # Esc quits promptly instead of after curses' 1 s wait

    def session(stdscr: Any) -> PlayOutcome:
        screen = CursesScreen(stdscr)
        outcome = play_level(task, level_index, out, screen.read_key, screen.show, **kwargs)
        if outcome.episode is not None:
            screen.message(f"{outcome.message} -- press any key")
            screen.read_key()
        return outcome

    return curses.wrapper(session)
