"""Recall: the action an earlier episode of the context took at a step that matches this one.

With ``data.recall`` / ``model.recall`` set, every step of a context carries one more input, the
*recalled action*: looking back over the context's earlier episodes (never the step's own
episode), the action taken at the last step whose key equals this step's key, or ``NO_RECALL``
where none matches. The model embeds it into the step's observation token
(``icrl.model.tokens``). Keys:

    cell    the cursor's cell (row, col): NetHack's cursor sits on the agent, so in a level seen
            before this is "what the earlier episode did where I stand now"
    screen  the whole observation (every array's bytes): Hashmap's key (exact screen match)
    nearest no exact key: the action of the nearest earlier step by R&P's distance
            (``retrieval_features``: RGB frames summed over 4x4 pixels, squared Euclidean; tty
            screens by the number of differing characters), ties to the last; for Procgen, where
            sticky actions and moving enemies make exact matches rare

Why: a model that must discover copying by attention alone learned to read same-level context on
its training tasks (diagnostic gap 0.16) but not on held-out ones (0.02-0.04, README). A lookup
of the context done outside the network is the same on every task; the network learns *when* to
follow it (the recall may be stale, or missing after a sticky action moved the agent somewhere the
demo never went) and what to do without it. This is retrieval in the spirit of REGENT (Sridhar et
al., ICLR 2025), restricted to the context: nothing outside the k demos is looked up.

One implementation for both ends: training rows (``icrl.data.layout.pack_parts``: each part looks
up the earlier parts of its segment, then is added) and evaluation (``icrl.eval.model_policy``: a
table of the level's k demo windows, looked up at every rollout step) use ``RecallTable``; the
Hashmap baseline is a ``RecallTable`` of ``screen`` keys, ``hashmap-cell`` one of ``cell`` keys, and
R&P (``icrl.eval.policies.RetrievePlayPolicy``) compares the same features as ``nearest``.
A key seen more than once keeps the action of its *last* occurrence (Hashmap's rule: from there
the episode went on without coming back, so following it cannot loop in a deterministic level).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from icrl.envs.actions import PAD_ACTION, VOCAB_SIZE
from icrl.envs.base import Obs

RecallMode = Literal["none", "cell", "screen", "nearest"]
RECALL_MODES: tuple[str, ...] = ("none", "cell", "screen", "nearest")
NO_RECALL: int = VOCAB_SIZE  # the recalled "action" of a step without a match: row V of a V + 1 table
RECALL_VOCAB: int = VOCAB_SIZE + 1


RNP_POOL = 4  # R&P compares frames summed over 4x4 pixels: 64x64x3 -> 16x16x3


def retrieval_features(obs: Obs) -> np.ndarray:
    """Features [B, d] that R&P and ``nearest`` recall compare, from observations with a batch axis
    (obs key -> [B, ...]): RGB frames [B, 64, 64, 3] summed over 4x4 pixels to [B, 16 * 16 * 3]
    float64 (whole numbers, so the distances below are exact and equal frames tie exactly); tty
    screens as their characters [B, 24 * 80] uint8."""
    if "rgb" in obs:
        rgb = np.asarray(obs["rgb"], np.float64)
        b, h, w, c = rgb.shape
        return rgb.reshape(b, h // RNP_POOL, RNP_POOL, w // RNP_POOL, RNP_POOL, c).sum(axis=(2, 4)).reshape(b, -1)
    chars = np.asarray(obs["tty_chars"], np.uint8)
    return chars.reshape(len(chars), -1)


def retrieval_distances(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Distances [q, n] between query features [q, d] and demo-step features [n, d]: squared
    Euclidean for frames, the number of differing cells (Hamming) for tty screens."""
    if bank.dtype == np.uint8:
        return (queries[:, None, :] != bank[None, :, :]).sum(axis=2).astype(np.float64)
    norms = (bank * bank).sum(axis=1)
    return norms[None, :] - 2.0 * queries @ bank.T + (queries * queries).sum(axis=1)[:, None]


def recall_keys(obs: Mapping[str, np.ndarray], mode: RecallMode) -> list:
    """Keys of n steps, obs key -> [n, ...] (one episode's observations, or a batch of rows'):
    ``cell``: (row, col) of ``tty_cursor`` [n, 2]; ``screen``: the bytes of every array, in key order;
    ``nearest``: ``retrieval_features`` [n, d]."""
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
    if mode == "nearest":
        return retrieval_features(obs)
    raise ValueError(f"no keys for recall mode {mode!r}; modes: {', '.join(RECALL_MODES)}")


class RecallTable:
    """Key -> the action of the key's last occurrence among the steps added so far; for
    ``nearest``, the action of the nearest step added so far (ties: the last)."""

    def __init__(self, mode: RecallMode):
        if mode not in ("cell", "screen", "nearest"):
            raise ValueError(f"no recall table for mode {mode!r}; modes with keys: cell, screen, nearest")
        self.mode = mode
        self.table: dict = {}
        self._features: list[np.ndarray] = []  # nearest: [n_i, d] per add
        self._actions: list[np.ndarray] = []
        self._bank: tuple[np.ndarray, np.ndarray] | None = None  # the two joined, until the next add

    def keys(self, obs: Mapping[str, np.ndarray]) -> list | np.ndarray:
        """The keys of n steps' observations, obs key -> [n, ...] (``recall_keys``)."""
        return recall_keys(obs, self.mode)

    def add(self, keys: list | np.ndarray, actions: np.ndarray) -> None:
        """Steps in order: keys [n], actions [n] (PAD_ACTION steps, e.g. observation-only data, are skipped)."""
        actions = np.asarray(actions)
        if self.mode == "nearest":
            kept = actions != PAD_ACTION
            if kept.any():
                self._features.append(np.asarray(keys)[kept])
                self._actions.append(actions[kept].astype(np.int32))
                self._bank = None
            return
        for key, a in zip(keys, actions.tolist()):
            if a != PAD_ACTION:
                self.table[key] = int(a)

    def lookup(self, keys: list | np.ndarray) -> np.ndarray:
        """Recalled actions [n] int32 of keys [n]: the stored action, or NO_RECALL."""
        if self.mode == "nearest":
            if not self._features:
                return np.full(len(keys), NO_RECALL, np.int32)
            if self._bank is None:  # a rollout looks one row up per call: join once, not at every step
                self._bank = (np.concatenate(self._features), np.concatenate(self._actions))
            bank, acts = self._bank
            dist = retrieval_distances(bank, np.asarray(keys))
            # Distances are whole numbers: within 0.5 of the minimum is an exact tie; the last one wins.
            last = bank.shape[0] - 1 - np.argmax((dist <= dist.min(axis=1, keepdims=True) + 0.5)[:, ::-1], axis=1)
            return acts[last]
        return np.array([self.table.get(k, NO_RECALL) for k in keys], np.int32).reshape(len(keys))

    def get(self, key, default=None):
        """The stored action of one key (for ``nearest``: one feature row [d]), or ``default``."""
        if self.mode == "nearest":
            a = int(self.lookup(np.asarray(key)[None])[0])
            return default if a == NO_RECALL else a
        return self.table.get(key, default)
