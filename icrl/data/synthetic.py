"""Synthetic, realistic-looking episodes for tests and benchmarks (no environment needed).

``nethack_episode``: tty screens like MiniHack's: spaces, a room drawn with ``-|.`` whose shape
depends on the level, an ``@`` that walks, a step counter on the status line and now and then a
message on the top line, so consecutive frames differ in a few cells as real ones do.
``procgen_episode``: 64x64 RGB frames of a side-scrolling level (gradient sky, platforms that
depend on the level) with an agent sprite, so frames shift like Procgen's.
Both are deterministic in (seed, level, episode, length).
"""

from __future__ import annotations

import os

import numpy as np

from icrl.store.episode import Episode

_STATUS1 = "Agent the Stripling          St:16 Dx:14 Co:17 In:8 Wi:10 Ch:7 Neutral"
_STATUS2 = "Dlvl:1 $:0 HP:14(14) Pw:4(4) AC:6 Xp:1/0 T:{t}"
_MESSAGES = ("You see here a scroll.", "It's a wall.", "You hear some noises.", "There is a staircase down here.")


def _put(row: np.ndarray, col: int, text: str) -> None:
    row[col : col + len(text)] = np.frombuffer(text.encode("ascii"), np.uint8)


def nethack_episode(
    seed: int = 0, *, task: str = "MiniHack-Synthetic-v0", level: int = 0, episode: int = 0,
    length: int = 64, source: str = "oracle", success: bool = True,
) -> Episode:
    """A ``nethack`` episode of ``length`` steps: tty_chars/tty_colors [T, 24, 80], tty_cursor [T, 2]."""
    lrng = np.random.default_rng(level)  # the room depends on the level only
    rng = np.random.default_rng((seed, level, episode))
    top, left = int(lrng.integers(2, 6)), int(lrng.integers(2, 30))
    height, width = int(lrng.integers(6, 14)), int(lrng.integers(12, 40))
    chars = np.full((24, 80), ord(" "), np.uint8)
    colors = np.zeros((24, 80), np.uint8)
    chars[top, left : left + width] = chars[top + height - 1, left : left + width] = ord("-")
    chars[top : top + height, left] = chars[top : top + height, left + width - 1] = ord("|")
    chars[top + 1 : top + height - 1, left + 1 : left + width - 1] = ord(".")
    colors[top : top + height, left : left + width] = 7
    _put(chars[22], 0, _STATUS1)
    r, c = top + 1 + int(rng.integers(height - 2)), left + 1 + int(rng.integers(width - 2))
    tty_chars = np.empty((length, 24, 80), np.uint8)
    tty_colors = np.empty((length, 24, 80), np.uint8)
    cursor = np.empty((length, 2), np.uint8)
    moves = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
    actions = rng.integers(0, len(moves), size=length).astype(np.int32)
    for t in range(length):
        frame, fcol = chars.copy(), colors.copy()
        frame[23] = ord(" ")
        _put(frame[23], 0, _STATUS2.format(t=t + 1))
        if rng.random() < 0.1:
            _put(frame[0], 0, _MESSAGES[int(rng.integers(len(_MESSAGES)))])
        frame[r, c], fcol[r, c] = ord("@"), 15
        tty_chars[t], tty_colors[t], cursor[t] = frame, fcol, (r, c)
        dr, dc = moves[actions[t]]
        if chars[r + dr, c + dc] == ord("."):
            r, c = r + dr, c + dc
    rewards = np.zeros(length, np.float32)
    if success and length:
        rewards[-1] = 1.0
    return Episode(
        domain="nethack", task=task, level=level, source=source,
        observations={"tty_chars": tty_chars, "tty_colors": tty_colors, "tty_cursor": cursor},
        actions=actions, rewards=rewards, terminated=success, truncated=not success, episode=episode,
    )


def procgen_episode(
    seed: int = 0, *, task: str = "procgen:synthetic", level: int = 0, episode: int = 0,
    length: int = 64, source: str = "ppo", success: bool = True,
) -> Episode:
    """A ``procgen`` episode of ``length`` steps: rgb [T, 64, 64, 3] uint8."""
    lrng = np.random.default_rng(level)
    rng = np.random.default_rng((seed, level, episode))
    world_w = 64 + 2 * length + 8
    y = np.linspace(0, 1, 64, dtype=np.float32)[:, None, None]
    sky = np.array([90, 140, 220], np.float32) * (1 - y) + np.array([200, 220, 255], np.float32) * y
    world = np.broadcast_to(sky, (64, world_w, 3)).astype(np.uint8).copy()
    for _ in range(world_w // 12):  # platforms
        x0, y0 = int(lrng.integers(0, world_w - 12)), int(lrng.integers(30, 60))
        world[y0 : y0 + 4, x0 : x0 + int(lrng.integers(6, 16))] = lrng.integers(60, 140, 3)
    world[60:] = (110, 80, 50)  # ground
    rgb = np.empty((length, 64, 64, 3), np.uint8)
    x, h = 0, 0
    actions = rng.integers(0, 15, size=length).astype(np.int32) + 121  # Procgen block of the vocabulary
    for t in range(length):
        x = min(x + int(rng.integers(0, 3)), world_w - 64)
        h = int(np.clip(h + rng.integers(-2, 3), 0, 20))
        frame = world[:, x : x + 64].copy()
        frame[50 - h : 56 - h, 20:26] = (230, 60, 40)  # the agent
        rgb[t] = frame
    rewards = np.zeros(length, np.float32)
    if success and length:
        rewards[-1] = 10.0
    return Episode(
        domain="procgen", task=task, level=level, source=source, observations={"rgb": rgb},
        actions=actions, rewards=rewards, terminated=success, truncated=not success, episode=episode,
    )


def episode_spec(domain: str, task: str, level: int, episode: int, length: int, seed: int = 0) -> Episode:
    """The synthetic episode of a domain with these coordinates (success on even episodes)."""
    make = nethack_episode if domain == "nethack" else procgen_episode
    return make(seed, task=task, level=level, episode=episode, length=length, success=episode % 2 == 0)


def write_synthetic(
    store_path: str | os.PathLike, name: str, specs: list[tuple[str, str, int, int, int]],
    seed: int = 0, **writer_kwargs: object,
) -> int:
    """Append the synthetic episodes ``specs`` [(domain, task, level, episode, length)] to the
    store with one ``ShardWriter``; returns how many. A picklable target for spawned processes."""
    from icrl.store.writer import ShardWriter

    with ShardWriter(store_path, name, **writer_kwargs) as writer:
        for domain, task, level, ep, length in specs:
            writer.append(episode_spec(domain, task, level, ep, length, seed))
    return len(specs)
