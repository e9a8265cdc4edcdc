"""``icrl nld convert``: stream NLD games through ``nle.dataset.TtyrecDataset`` into a trajectory store.

Pipeline (one process)::

    select_games + preflight ──► prefetch thread: TtyrecDataset(batch_size=B games at a time, thread
        pool), each batch copied out of nle's reused buffers ──► main thread: RowCutter per row (cut
        segments) ──► bounded queue ──► writer thread: ShardWriter.append (encode + compress)

``TtyrecDataset`` decodes a batch only when asked for the next one, so whatever its consumer does
between batches leaves the decoding threads idle. The prefetch thread copies each batch (one
memcpy) and decodes the next while the main thread cuts segments from the copy, so cutting and
compressing (zstd by default; the codecs release the GIL) overlap decoding. Memory is bounded by
three batches of B rows × ``seq_length`` frames (nle's buffers, the copy waiting, the copy being
cut), B segments being filled and the queue: it does not grow with the number of games.

Resuming: a game is done when the store holds all its segments 0..k and segment k is terminated;
done games are not decoded again. A game cut short by an interruption is decoded again and its
segments already in the store are not appended twice (``GameCutter.stored``). The store makes an
append durable when it returns (a killed writer's journal is sealed by the next one), so re-running
the same command after Ctrl-C, a kill or a crash finishes the job with nothing lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from icrl.data.episode import Episode
from icrl.data.nld_segments import GameCutter, RowCutter
from icrl.data.nld_select import GameFiles, GameSkip, Selection, preflight
from icrl.errors import IcrlError


@dataclasses.dataclass
class ConvertReport:
    """What a conversion did. ``unmapped`` [256] counts keypress bytes with no NLE action."""

    store: Path
    dataset: str
    source: str
    has_actions: bool
    selected: int = 0  # games chosen by the filters
    already_done: int = 0  # games the store held completely before this run
    converted: int = 0  # games finished in this run
    skips: list[GameSkip] = dataclasses.field(default_factory=list)
    frames: int = 0  # frames decoded in this run
    segments: int = 0  # segments appended in this run
    segments_resumed: int = 0  # segments decoded again but already stored (an interrupted game)
    seconds: float = 0.0
    ttyrec_bytes: int = 0  # .bz2 bytes of the games decoded in this run
    unmapped: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))
    interrupted: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def unmapped_frames(self) -> int:
        return int(self.unmapped.sum())


def task_name(source: str, role: str) -> str:
    """The grouping rule: one task per source and role, e.g. ``nld-aa:Valkyrie``."""
    return f"{source}:{role}"


def stored_segments(store, task: str, gameid: int, segment_length: int) -> tuple[frozenset[int], bool]:
    """Segment numbers of game ``gameid`` already in ``store``, and whether the game is complete.

    IcrlError if the store cut this game into segments of another length (mixing lengths would
    misplace frames: segment k starts at frame k * length).
    """
    refs = store.episodes_of(task, gameid)
    for r in refs:
        if r.length > segment_length or (not r.terminated and r.length != segment_length):
            raise IcrlError(f"{store.root} holds game {gameid} ({task}) cut into segments of {r.length} frames, "
                            f"not {segment_length}: convert with that --segment-length, or into a new store")
    have = frozenset(r.episode for r in refs)
    last = [r.episode for r in refs if r.terminated]
    complete = bool(last) and have >= frozenset(range(max(last) + 1))
    return have, complete


class _Writer(threading.Thread):
    """Appends queued episodes to the store with its own ShardWriter until ``finished`` is set and
    the queue is empty. After an error it keeps draining, so the producer never blocks on it."""

    def __init__(self, store_path: Path, name: str, q: queue.Queue, finished: threading.Event, **writer_kwargs):
        super().__init__(name=f"nld-writer-{name}", daemon=True)
        self.store_path, self.writer_name, self.q, self.finished = store_path, name, q, finished
        self.kwargs = writer_kwargs
        self.written = 0
        self.error: BaseException | None = None

    def _items(self):
        while True:
            try:
                yield self.q.get(timeout=0.1)
            except queue.Empty:
                if self.finished.is_set():
                    return

    def run(self) -> None:
        from icrl.data.store import ShardWriter

        try:
            with ShardWriter(self.store_path, self.writer_name, **self.kwargs) as w:
                for episode in self._items():
                    w.append(episode)
                    self.written += 1
        except BaseException as err:  # re-raised by the main thread
            self.error = err
            for _ in self._items():
                pass


class _Prefetch(threading.Thread):
    """Iterates a TtyrecDataset and queues a copy of each batch (nle reuses its buffers in place),
    so the next batch decodes while the consumer works on this one.

    Copies go into a fixed set of buffers that cycle (fresh 30 MB arrays per batch cost page faults
    worth ~1 µs per frame): the consumer hands each batch back with ``release`` once it has cut it.
    Iterate from one thread; ``stop()`` ends it early. An exception of the dataset is re-raised by
    the iterator.
    """

    _END = object()
    BUFFERS = 3  # one being cut, one waiting, one being filled

    def __init__(self, dataset, keys: tuple[str, ...]):
        super().__init__(name="nld-prefetch", daemon=True)
        self.dataset, self.keys = dataset, keys
        self.q: queue.Queue = queue.Queue(maxsize=1)
        self.free: queue.Queue = queue.Queue()
        self.stopped = threading.Event()

    def _wait(self, action: Callable[[], object]) -> tuple[bool, object]:
        """Retry ``action`` (a put or get with a timeout) until it succeeds or ``stop()``."""
        while not self.stopped.is_set():
            try:
                return True, action()
            except (queue.Full, queue.Empty):
                continue
        return False, None

    def run(self) -> None:
        try:
            made = 0
            for mb in self.dataset:
                if made < self.BUFFERS:
                    buf, made = {k: np.empty_like(mb[k]) for k in self.keys if k in mb}, made + 1
                else:
                    ok, buf = self._wait(lambda: self.free.get(timeout=0.1))
                    if not ok:
                        return
                for k, v in buf.items():
                    np.copyto(v, mb[k])
                if not self._wait(lambda b=buf: self.q.put(b, timeout=0.1))[0]:
                    return
            self._wait(lambda: self.q.put(self._END, timeout=0.1))
        except BaseException as err:  # handed to the consumer
            self._wait(lambda: self.q.put(err, timeout=0.1))

    def release(self, batch: dict) -> None:
        """The consumer is done with ``batch``: its buffers may be filled again."""
        self.free.put(batch)

    def stop(self) -> None:
        self.stopped.set()

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _put(q: queue.Queue, item: Episode, writers: list[_Writer]) -> None:
    while True:
        for w in writers:
            if w.error is not None:
                raise w.error
        try:
            q.put(item, timeout=0.5)
            return
        except queue.Full:
            continue


def convert(selection: Selection, store_path: str | Path, *, segment_length: int = 256, batch_size: int = 8,
            seq_length: int = 1024, threads: int = 2, writers: int = 1, compression: str = "zstd",
            fsync: bool = False, full_bz2: bool = False,
            progress: Callable[[ConvertReport, int], None] | None = None) -> ConvertReport:
    """Convert the selected games into the store at ``store_path`` (created if missing).

    ``segment_length`` frames per episode; ``batch_size`` games decoded at once (rows of
    TtyrecDataset) by ``threads`` threads; ``seq_length`` frames per row per batch; ``writers``
    threads compress and append (``compression``: a codec of icrl.data.codec); ``fsync``
    makes each append survive a power cut, not only a crash; ``full_bz2`` checks bzip2 CRCs of every
    file before decoding. ``progress(report, games_total)`` is called after each batch.
    """
    import nle.dataset as nld

    from icrl.data.store import TrajectoryStore, create_store

    for name, value, low in (("--segment-length", segment_length, 1), ("--batch-size", batch_size, 1),
                             ("--seq-length", seq_length, 1), ("--threads", threads, 1), ("--writers", writers, 1)):
        if value < low:
            raise IcrlError(f"{name} must be >= {low}, got {value}")
    store_path = Path(store_path)
    create_store(store_path)
    report = ConvertReport(store=store_path, dataset=selection.dataset, source=selection.source,
                           has_actions=selection.has_actions, selected=len(selection.games))
    start = time.perf_counter()
    games, report.skips = preflight(selection, full_bz2=full_bz2, threads=threads)

    # What the store already holds (a snapshot; this run's writers do not change it).
    with TrajectoryStore(store_path) as store:
        stored: dict[int, frozenset[int]] = {}
        todo: list[GameFiles] = []
        for g in games:
            have, complete = stored_segments(store, task_name(selection.source, g.role_name), g.gameid,
                                             segment_length)
            if complete:
                report.already_done += 1
            else:
                stored[g.gameid] = have
                todo.append(g)
    by_id = {g.gameid: g for g in todo}
    seen: set[int] = set()

    def make_game(gid: int) -> GameCutter:
        seen.add(gid)
        g = by_id[gid]
        return GameCutter(gid, task_name(selection.source, g.role_name), selection.source, segment_length,
                          has_actions=selection.has_actions, has_scores=selection.has_scores,
                          stored=stored[gid], unmapped=report.unmapped)

    def on_done(game: GameCutter) -> None:
        report.converted += 1
        report.segments_resumed += game.resumed
        report.ttyrec_bytes += by_id[game.gameid].nbytes

    if not todo:
        report.seconds = time.perf_counter() - start
        return report

    q: queue.Queue = queue.Queue(maxsize=2 * batch_size)  # bounds memory: complete segments
    finished = threading.Event()
    pool_writers = [_Writer(store_path, f"nld-{selection.dataset}-{i}", q, finished, compression=compression,
                            fsync=fsync) for i in range(writers)]
    for w in pool_writers:
        w.start()
    rows_n = min(batch_size, len(todo))
    rows = [RowCutter(make_game, on_done) for _ in range(rows_n)]
    try:
        with ThreadPoolExecutor(threads) as pool:
            dataset = nld.TtyrecDataset(selection.dataset, batch_size=rows_n, seq_length=seq_length,
                                        dbfilename=str(selection.db), threadpool=pool,
                                        gameids=[g.gameid for g in todo], shuffle=False)
            prefetch = _Prefetch(dataset, ("gameids", "tty_chars", "tty_colors", "tty_cursor", "keypresses",
                                           "scores"))
            prefetch.start()
            try:
                for mb in prefetch:
                    gids = mb["gameids"]
                    cursor = mb["tty_cursor"]
                    if cursor.size and (cursor.min() < 0 or cursor.max() > 255):
                        raise IcrlError(f"{selection.dataset}: tty_cursor out of range [{cursor.min()}, "
                                        f"{cursor.max()}]: not a 24x80 recording")
                    keys = mb.get("keypresses")
                    scores = mb.get("scores")
                    for b, row in enumerate(rows):
                        episodes = row.feed(gids[b], mb["tty_chars"][b], mb["tty_colors"][b], cursor[b],
                                            None if keys is None else keys[b], None if scores is None else scores[b])
                        for ep in episodes:
                            _put(q, ep, pool_writers)
                    report.frames += int(np.count_nonzero(gids))
                    prefetch.release(mb)  # the segments hold copies: nothing refers to mb now
                    report.seconds = time.perf_counter() - start
                    if progress is not None:
                        progress(report, len(selection.games))
                for row in rows:
                    for ep in row.close():
                        _put(q, ep, pool_writers)
            except FileNotFoundError as err:
                raise IcrlError(f"{err.filename}: ttyrec disappeared during the conversion; "
                                f"re-run the same command to resume") from None
            finally:
                prefetch.stop()
                prefetch.join()
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        finished.set()  # writers append what is queued (complete segments), then stop
        for w in pool_writers:
            w.join()
        report.segments = sum(w.written for w in pool_writers)
        report.seconds = time.perf_counter() - start
    for w in pool_writers:
        if w.error is not None:
            raise w.error
    if not report.interrupted:
        # nle's converter drops an unreadable file silently: a chosen game that never showed up
        # decoded to no frames at all.
        for g in todo:
            if g.gameid not in seen:
                report.skips.append(GameSkip(g.gameid, g.files[0][0], "no frames decoded (corrupt or empty "
                                             "ttyrec; try --verify-bz2 to find bz2 damage)"))
        report.skips.sort(key=lambda s: s.gameid)
    return report
