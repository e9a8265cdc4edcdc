"""Level seeds and attempt seeds of expert collection.

Level ``i`` of split ``s`` is seed ``SPLIT_LEVEL_BASES[s] + i`` (``level_seed``): train levels are
0 .. 2**30-1 and held-out levels 2**30 .. 2**31-1, so the two splits can never share a level,
whatever their sizes, and every seed fits Procgen's int32 ``start_level``. The store records the seed.

Attempt ``a`` of episode ``e`` draws its sticky actions and the expert's tie-breaks from seeds
derived from ``(seed, task, level, e, a)`` (``attempt_seeds``), so an episode is the same whether a
run was interrupted or not.
"""

from __future__ import annotations

import zlib

from icrl.errors import IcrlError


# First seed of each split and the number of seeds each owns: disjoint blocks below 2**31.
LEVELS_PER_SPLIT = 1 << 30
SPLIT_LEVEL_BASES: dict[str, int] = {"train": 0, "heldout": LEVELS_PER_SPLIT}


def level_seed(split: str, index: int) -> int:
    """The level seed of level ``index`` of ``split``: ``SPLIT_LEVEL_BASES[split] + index``."""
    if split not in SPLIT_LEVEL_BASES:
        raise IcrlError(f"no level seeds for split {split!r}; splits: {sorted(SPLIT_LEVEL_BASES)}")
    if not 0 <= index < LEVELS_PER_SPLIT:
        raise IcrlError(f"level index {index} of split {split!r} is outside [0, {LEVELS_PER_SPLIT})")
    return SPLIT_LEVEL_BASES[split] + int(index)


def split_levels(split: str, count: int, first: int = 0) -> range:
    """Seeds of levels ``first .. first+count-1`` of ``split`` (see ``level_seed``)."""
    if count < 0:
        raise IcrlError(f"level count must be >= 0, got {count}")
    start = level_seed(split, first)
    if count:
        level_seed(split, first + count - 1)  # raises if the range leaves the split's block
    return range(start, start + count)


def attempt_seeds(seed: int, task: str, level: int, episode: int, attempt: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sticky-action seed, expert seed) of one attempt: numpy seed sequences, stable across runs.

    The task enters as its CRC-32 (Python's ``hash`` of a string changes between processes).
    """
    base = (int(seed), zlib.crc32(task.encode()), int(level), int(episode), int(attempt))
    return (*base, 0), (*base, 1)
