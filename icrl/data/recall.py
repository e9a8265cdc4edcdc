"""Recall: the action an earlier episode of the context took at a step that matches this one.

With ``data.recall`` / ``model.recall`` set, every step of a context carries one more input, the
*recalled action*: looking back over the context's earlier episodes (never the step's own
episode), the action taken at the last step whose key equals this step's key, or ``NO_RECALL``
where none matches. The model embeds it into the step's observation token
(``icrl.model.tokens``). Keys:

    cell    the cursor's cell (row, col): NetHack's cursor sits on the agent, so in a level seen
            before this is "what the earlier episode did where I stand now"
    screen  the whole observation (every array's bytes): Hashmap's key (exact screen match)

Why: a model that must discover copying by attention alone learned to read same-level context on
its training tasks (diagnostic gap 0.16) but not on held-out ones (0.02-0.04, README). A lookup
of the context done outside the network is the same on every task; the network learns *when* to
follow it (the recall may be stale, or missing after a sticky action moved the agent somewhere the
demo never went) and what to do without it. This is retrieval in the spirit of REGENT (Sridhar et
al., ICLR 2025), restricted to the context: nothing outside the k demos is looked up.

One implementation for both ends: training rows (``icrl.data.layout.pack_parts``: each part looks
up the earlier parts of its segment, then is added) and evaluation (``icrl.eval.model_policy``: a
table of the level's k demo windows, looked up at every rollout step) use ``RecallTable``; the
Hashmap baseline is a ``RecallTable`` of ``screen`` keys, and ``hashmap-cell`` one of ``cell`` keys.
A key seen more than once keeps the action of its *last* occurrence (Hashmap's rule: from there
the episode went on without coming back, so following it cannot loop in a deterministic level).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from icrl.envs.actions import PAD_ACTION, VOCAB_SIZE

RecallMode = Literal["none", "cell", "screen"]
RECALL_MODES: tuple[str, ...] = ("none", "cell", "screen")
NO_RECALL: int = VOCAB_SIZE  # the recalled "action" of a step without a match: row V of a V + 1 table
RECALL_VOCAB: int = VOCAB_SIZE + 1


def recall_keys(obs: Mapping[str, np.ndarray], mode: RecallMode) -> list:
    """Keys of n steps, obs key -> [n, ...] (one episode's observations, or a batch of rows'):
    ``cell``: (row, col) of ``tty_cursor`` [n, 2]; ``screen``: the bytes of every array, in key order."""
    if mode == "cell":
        if "tty_cursor" not in obs:
            raise ValueError("recall 'cell' needs tty observations (a cursor); use 'screen' for RGB")
        cur = np.asarray(obs["tty_cursor"]).astype(np.int64)
        return (cur[:, 0] * 256 + cur[:, 1]).tolist()
    if mode == "screen":
        names = sorted(obs)
        n = len(obs[names[0]])
        flat = [np.ascontiguousarray(np.asarray(obs[k]).reshape(n, -1)) for k in names]
        return [b"".join(f[i].tobytes() for f in flat) for i in range(n)]
    raise ValueError(f"no keys for recall mode {mode!r}; modes: {', '.join(RECALL_MODES)}")


class RecallTable:
    """Key -> the action of the key's last occurrence among the steps added so far."""

    def __init__(self, mode: RecallMode):
        if mode not in ("cell", "screen"):
            raise ValueError(f"no recall table for mode {mode!r}; modes with keys: cell, screen")
        self.mode = mode
        self.table: dict = {}

    def keys(self, obs: Mapping[str, np.ndarray]) -> list:
        """The keys of n steps' observations, obs key -> [n, ...] (``recall_keys``)."""
        return recall_keys(obs, self.mode)

    def add(self, keys: list, actions: np.ndarray) -> None:
        """Steps in order: keys [n], actions [n] (PAD_ACTION steps, e.g. observation-only data, are skipped)."""
        for key, a in zip(keys, np.asarray(actions).tolist()):
            if a != PAD_ACTION:
                self.table[key] = int(a)

    def lookup(self, keys: list) -> np.ndarray:
        """Recalled actions [n] int32 of keys [n]: the stored action, or NO_RECALL."""
        return np.array([self.table.get(k, NO_RECALL) for k in keys], np.int32).reshape(len(keys))

    def get(self, key, default=None):
        """The stored action of one key, or ``default``."""
        return self.table.get(key, default)
