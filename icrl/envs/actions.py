"""The unified action vocabulary shared by every domain.

Layout (indices into one embedding / softmax of size ``VOCAB_SIZE``)::

    [0, 121)    NetHack actions in NLE's enumeration (``nle.nethack.ACTIONS``, the
                NetHackChallenge set). MiniHack's compass moves and NLD keypresses map here.
    [121, 136)  Procgen's 15 actions, in Procgen's own order.
    136         PAD_ACTION: the action of padding tokens; never legal.

Each task exposes a legal-action mask over this vocabulary; the model's head applies it,
so evaluation never samples an action the task's environment cannot take.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nle import nethack

NETHACK_KEYCODES: tuple[int, ...] = tuple(int(a) for a in nethack.ACTIONS)
NUM_NETHACK_ACTIONS: int = len(NETHACK_KEYCODES)
PROCGEN_OFFSET: int = NUM_NETHACK_ACTIONS
NUM_PROCGEN_ACTIONS: int = 15
PAD_ACTION: int = PROCGEN_OFFSET + NUM_PROCGEN_ACTIONS
VOCAB_SIZE: int = PAD_ACTION + 1

# Three keycodes appear twice in NLE's enumeration, once as a command and once as a text
# character ('"' SEEAMULET / QUOTE, '$' SEEGOLD / DOLLAR, '+' SEESPELLS / PLUS). Enum members map
# to their own position; a bare keycode (an NLD keypress) maps to the first, the command.
_MEMBER_TO_INDEX: dict[tuple[type, int], int] = {
    (type(a), int(a)): i for i, a in enumerate(nethack.ACTIONS)
}
_KEYCODE_TO_INDEX: dict[int, int] = {}
for _i, _k in enumerate(NETHACK_KEYCODES):
    _KEYCODE_TO_INDEX.setdefault(_k, _i)


def nethack_index(action: int) -> int:
    """Unified index of an NLE action: an enum member (exact), or an integer keycode.

    Raises KeyError naming the keycode when NLE's enumeration has no such action.
    """
    key = int(action)
    index = _MEMBER_TO_INDEX.get((type(action), key))
    if index is not None:
        return index
    try:
        return _KEYCODE_TO_INDEX[key]
    except KeyError:
        raise KeyError(f"keycode {key} ({chr(key)!r}) is not an NLE action") from None


def nethack_indices(actions: Sequence[int]) -> np.ndarray:
    """Unified indices [n] int32 of an environment's own action list (e.g. MiniHack's 8 moves)."""
    return np.asarray([nethack_index(a) for a in actions], dtype=np.int32)


def procgen_indices() -> np.ndarray:
    """Unified indices [15] int32 of Procgen's actions, in Procgen's order."""
    return np.arange(PROCGEN_OFFSET, PROCGEN_OFFSET + NUM_PROCGEN_ACTIONS, dtype=np.int32)


def legal_mask(indices: np.ndarray) -> np.ndarray:
    """Boolean mask [VOCAB_SIZE] that is True exactly at ``indices``."""
    mask = np.zeros(VOCAB_SIZE, dtype=bool)
    mask[np.asarray(indices, dtype=np.int64)] = True
    return mask


def nethack_actions_of(indices: np.ndarray) -> tuple:
    """The NLE action members (``nle.nethack.ACTIONS``) of unified NetHack indices: the inverse of
    ``nethack_indices`` for a task's legal actions, e.g. to rebuild its native action tuple."""
    return tuple(nethack.ACTIONS[int(i)] for i in indices)
