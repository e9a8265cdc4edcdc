"""Cut streamed NLD games into fixed-length trajectory segments (Episodes).

``TtyrecDataset`` yields batches ``[B, S, ...]`` where row b streams its games one after another
(``gameids`` [B, S] says which game each frame belongs to; 0 is padding once a row runs out) and
it overwrites the same numpy buffers for every batch. ``RowCutter`` follows one row: it copies
each game's frames out of those buffers into the current segment (that copy is the only one), and
once a segment holds ``length`` frames it becomes an Episode:

- ``task`` ``<source>:<Role>`` (``nld-aa:Valkyrie``), ``level`` = game id, ``episode`` = segment
  number within the game, so "episodes of the same (task, level)" are segments of one game and
  bursty sequences put segments of the same game in one context;
- observations ``tty_chars`` [T, 24, 80] uint8, ``tty_colors`` [T, 24, 80] uint8 (nle's int8
  colours, same bits), ``tty_cursor`` [T, 2] uint8 (nle's int16, rows < 24 and columns < 80);
- ``actions`` [T] int32: keypresses mapped by icrl.nld.actions (``PAD_ACTION`` where a
  byte has no NLE action, or everywhere for screen-only NLD-NAO);
- ``rewards`` [T] float32: the in-game score delta ``score[t+1] - score[t]`` (ttyrec v3 scores);
  the last frame of a game has no next score and gets 0, the game-over screens' score of 0 is no
  reward (see ``GameCutter``), and recordings without scores (v1, v2) get 0;
- ``terminated`` on a game's last segment (every indexed game ended: it has an xlogfile line),
  ``truncated`` on the others (cut by segmenting).

A segment is emitted only once the next frame arrives (its score closes the last reward) or the
game ends, so segments never depend on how ``TtyrecDataset`` chunks the stream.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from icrl.store.episode import Episode
from icrl.nld.actions import map_keypresses
from icrl.envs.actions import PAD_ACTION

ROWS, COLS = 24, 80


class _Segment:
    """Buffers of one segment being filled (or waiting for its last reward): k = its number."""

    def __init__(self, k: int, length: int):
        self.k, self.n = k, 0
        self.chars = np.empty((length, ROWS, COLS), np.uint8)
        self.colors = np.empty((length, ROWS, COLS), np.uint8)
        self.cursor = np.empty((length, 2), np.uint8)
        self.keys = np.empty(length, np.uint8)
        self.scores = np.empty(length, np.int64)


class GameCutter:
    """Cuts one game's frames into Episodes of ``length`` frames (the last may be shorter).

    The game-over screens of a recording carry score 0 (NetHack has cleared its status by then),
    which is not a reward of -score. So once a game has scored, a full segment followed by a zero
    score waits: if a non-zero score comes later, the zeros were real (gold spent) and the rewards
    stand; if the game ends first, its trailing zeros take the last score and give no reward. The
    sum of a game's rewards is then the in-game score shown before the game ended. (Only a zero run
    after a score can make segments wait; it lasts a few game-over frames in practice.)
    """

    def __init__(self, gameid: int, task: str, source: str, length: int, *, has_actions: bool,
                 has_scores: bool, stored: frozenset[int] = frozenset(), unmapped: np.ndarray | None = None):
        """``stored``: segment numbers already in the store (resuming): counted, not emitted."""
        self.gameid, self.task, self.source, self.length = gameid, task, source, length
        self.has_actions, self.has_scores = has_actions, has_scores
        self.stored = stored
        self.unmapped = unmapped
        self.frames = 0  # frames seen in this game
        self.resumed = 0  # segments not emitted because they are stored already
        self.last_nonzero = 0  # the last non-zero score seen
        # Full segments held back, in order, with the score of the frame after each: the first
        # ends where a zero run after a score begins, the others are all zeros.
        self.waiting: list[tuple[_Segment, int]] = []
        self.seg = _Segment(0, length)

    def add(self, chars: np.ndarray, colors: np.ndarray, cursor: np.ndarray, keys: np.ndarray | None,
            scores: np.ndarray | None) -> list[Episode]:
        """Append frames ([T, 24, 80] uint8 / int8, [T, 2] int16, [T] uint8, [T] int32; keys and
        scores None when the recording has none). Returns the segments this completes."""
        out: list[Episode] = []
        T, i = len(chars), 0
        while i < T:
            seg = self.seg
            if seg.n == self.length:  # full, and the game goes on: its last reward is now known
                out += self._close(next_score=int(scores[i]) if scores is not None else None)
                seg = self.seg
            take = min(self.length - seg.n, T - i)
            a, b = seg.n, seg.n + take
            seg.chars[a:b] = chars[i:i + take]
            seg.colors[a:b] = colors[i:i + take].view(np.uint8)
            seg.cursor[a:b] = cursor[i:i + take]  # int16 -> uint8: the caller checked the range
            if keys is not None:
                seg.keys[a:b] = keys[i:i + take]
            if scores is not None:
                chunk = scores[i:i + take]
                seg.scores[a:b] = chunk
                nonzero = np.flatnonzero(chunk)
                if nonzero.size:
                    # A non-zero score after a drop to 0: the drop was real.
                    for w, next_score in self.waiting:
                        out += self._emit(w, self._rewards(w, next_score))
                    self.waiting = []
                    self.last_nonzero = int(chunk[nonzero[-1]])
            seg.n, i = b, i + take
        self.frames += T
        return out

    def finish(self) -> list[Episode]:
        """The game has ended: emit what waits and the last segment (``terminated``)."""
        out: list[Episode] = []
        for seg, _ in self.waiting:  # the zeros after them were the game-over screens
            self._fill_tail(seg)
            out += self._emit(seg, self._rewards(seg, int(seg.scores[seg.n - 1])))
        self.waiting = []
        if self.seg.n:
            self._fill_tail(self.seg)
            out += self._emit(self.seg, self._rewards(self.seg, None), last=True)
        return out

    def _fill_tail(self, seg: _Segment) -> None:
        """Trailing zero scores of the game take the last non-zero score before them."""
        if self.has_scores and self.last_nonzero:
            scores = seg.scores[: seg.n]
            nonzero = np.flatnonzero(scores)
            scores[(nonzero[-1] + 1) if nonzero.size else 0:] = self.last_nonzero

    def _close(self, next_score: int | None) -> list[Episode]:
        """Close the full current segment given the score of the frame after it; open the next."""
        seg = self.seg
        self.seg = _Segment(seg.k + 1, self.length)
        if self.waiting or (self.has_scores and next_score == 0 and self.last_nonzero):
            self.waiting.append((seg, next_score))  # a zero run after a score goes on: wait
            return []
        return self._emit(seg, self._rewards(seg, next_score))

    def _rewards(self, seg: _Segment, next_score: int | None) -> np.ndarray:
        """[n] float32 score deltas; the last one against ``next_score`` (0 if None)."""
        n = seg.n
        rewards = np.zeros(n, np.float32)
        if self.has_scores:
            rewards[:-1] = np.diff(seg.scores[:n])
            if next_score is not None:
                rewards[-1] = next_score - seg.scores[n - 1]
        return rewards

    def _emit(self, seg: _Segment, rewards: np.ndarray, last: bool = False) -> list[Episode]:
        """The Episode of ``seg`` ([] if the store has it already)."""
        if seg.k in self.stored:
            self.resumed += 1
            return []
        n = seg.n
        if self.has_actions:
            actions = map_keypresses(seg.keys[:n], self.unmapped)
        else:
            actions = np.full(n, PAD_ACTION, np.int32)
        return [Episode(
            domain="nethack", task=self.task, level=self.gameid, source=self.source,  # type: ignore[arg-type]
            observations={"tty_chars": seg.chars[:n], "tty_colors": seg.colors[:n], "tty_cursor": seg.cursor[:n]},
            actions=actions, rewards=rewards, terminated=last, truncated=not last,
            has_actions=self.has_actions, episode=seg.k,
        )]


class RowCutter:
    """Follows one row of ``TtyrecDataset`` batches: starts a ``GameCutter`` when a new game id
    appears and finishes it when the id changes (or padding starts)."""

    def __init__(self, make_game: Callable[[int], GameCutter], on_done: Callable[[GameCutter], None]):
        self.make_game = make_game
        self.on_done = on_done
        self.game: GameCutter | None = None

    def feed(self, gameids: np.ndarray, chars: np.ndarray, colors: np.ndarray, cursor: np.ndarray,
             keys: np.ndarray | None, scores: np.ndarray | None) -> list[Episode]:
        """One row of a batch: gameids [S] int32 and the matching frame arrays ([S, ...])."""
        out: list[Episode] = []
        cuts = np.flatnonzero(gameids[1:] != gameids[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(gameids)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            gid = int(gameids[a])
            if self.game is not None and self.game.gameid != gid:
                out += self.close()
            if gid == 0:
                continue
            if self.game is None:
                self.game = self.make_game(gid)
            out += self.game.add(chars[a:b], colors[a:b], cursor[a:b],
                                 None if keys is None else keys[a:b], None if scores is None else scores[a:b])
        return out

    def close(self) -> list[Episode]:
        """Finish the current game, if any."""
        if self.game is None:
            return []
        game, self.game = self.game, None
        out = game.finish()
        self.on_done(game)
        return out
