"""NLD keypresses -> the unified action vocabulary.

An NLD-AA frame's keypress is the byte AutoAscend sent to NetHack in reply to that screen (ttyrec
v3 input record; ``TtyrecDataset`` yields it as ``keypresses`` uint8). NLE's action enumeration
(``nle.nethack.ACTIONS``, unified indices [0, 121)) is a set of keycodes too, so the mapping is the
identity on keycodes:

- a byte that is the keycode of an NLE action maps to that action's unified index. Three keycodes
  appear twice in NLE's enumeration (``"`` SEEAMULET/QUOTE, ``$`` SEEGOLD/DOLLAR, ``+``
  SEESPELLS/PLUS); the byte maps to the first (the command). Both send the same byte, so replaying
  either in NetHack is the same input.
- any other byte (118 of the 256 keycodes are NLE actions; e.g. ``?``, ``%``, ``~``, the
  Ctrl-<direction> rush keys, ``\\n``) has no action in the vocabulary. It maps to ``PAD_ACTION``
  (which the loss ignores) and is counted per keycode, so a conversion reports exactly how many
  frames lost their action. No unmapped byte is aliased to a "similar" action: that would put
  actions in the data that the player never took.

NLD-NAO (ttyrec v1) records no keypresses at all: its episodes are observation-only
(``has_actions=False``, every action ``PAD_ACTION``), never filled with guessed actions.
"""

from __future__ import annotations

import numpy as np
from nle import nethack

from icrl.envs.actions import NETHACK_KEYCODES, PAD_ACTION, nethack_index


def _build_table() -> np.ndarray:
    table = np.full(256, PAD_ACTION, dtype=np.int32)
    for key in range(256):
        try:
            table[key] = nethack_index(key)
        except KeyError:
            pass
    return table


KEYPRESS_TO_ACTION: np.ndarray = _build_table()  # [256] int32: byte -> unified index (PAD if none)
MAPPED_KEYS: np.ndarray = np.flatnonzero(KEYPRESS_TO_ACTION != PAD_ACTION)  # the 118 mapped bytes


def map_keypresses(keys: np.ndarray, unmapped: np.ndarray | None = None) -> np.ndarray:
    """[T] uint8 keypresses -> [T] int32 unified actions.

    ``unmapped`` ([256] int64), if given, is incremented by the count of each byte that has no
    action (those frames get ``PAD_ACTION``).
    """
    keys = np.asarray(keys, dtype=np.uint8)
    actions = KEYPRESS_TO_ACTION[keys]
    if unmapped is not None:
        bad = keys[actions == PAD_ACTION]
        if bad.size:
            unmapped += np.bincount(bad, minlength=256)
    return actions


def action_keycode(action: int) -> int:
    """The byte NetHack receives for unified NetHack action ``action`` (the replay direction)."""
    if not 0 <= action < len(NETHACK_KEYCODES):
        raise KeyError(f"unified action {action} is not a NetHack action")
    return NETHACK_KEYCODES[action]


def describe_key(key: int) -> str:
    """A readable name of a keycode: ``'k' (107)``, ``^J (10)``, ``M-q (241)``."""
    if key < 32:
        name = f"^{chr(key + 64)}"
    elif key == 127:
        name = "DEL"
    elif key >= 128:
        base = key - 128
        name = "M-" + (chr(base) if 32 <= base < 127 else describe_key(base).split(" ")[0])
    else:
        name = repr(chr(key))
    return f"{name} ({key})"


def mapping_table() -> list[tuple[int, str, int, str]]:
    """(keycode, key, unified index, NLE action name) for every mapped byte, by keycode."""
    rows = []
    for key in MAPPED_KEYS.tolist():
        index = int(KEYPRESS_TO_ACTION[key])
        action = nethack.ACTIONS[index]
        rows.append((key, describe_key(key), index, f"{type(action).__name__}.{action.name}"))
    return rows
