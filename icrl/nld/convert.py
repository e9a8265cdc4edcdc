"""``icrl nld convert``: stream NLD games through ``nle.dataset.TtyrecDataset`` into a trajectory store.

Pipeline (one process)::

    select_games + preflight ──► S stream threads, each a TtyrecDataset over its share of the games
        (B/S rows; one shared thread pool decodes) ──► main thread: RowCutter per row cuts segments
        straight from the stream's buffers, then releases them ──► bounded queue ──► writer
        thread: ShardWriter.append (encode + compress)

``TtyrecDataset`` decodes a batch only when asked for the next one, into the same buffers, so a
single dataset leaves the decoding threads idle while its consumer works. With S = 2 streams the
main thread cuts one stream's batch while the other's decodes, and no batch is ever copied (the
only copy is into the segments). Compressing (zstd by default; the codecs release the GIL)
overlaps both. Memory is bounded by nle's buffers (B rows × ``seq_length`` frames over all
streams), B segments being filled and the queue: it does not grow with the number of games.

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

from icrl.store.episode import Episode
from icrl.nld.segments import GameCutter, RowCutter
from icrl.nld.selection import GameFiles, GameSkip, Selection, preflight
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
    """Appends queued episodes to the store with its own ShardWriter until it takes ``STOP`` off
    the queue (one per writer, queued after the last episode). After an error it keeps draining, so
    the producer never blocks on it."""

    STOP = object()

    def __init__(self, store_path: Path, name: str, q: queue.Queue, **writer_kwargs):
        super().__init__(name=f"nld-writer-{name}", daemon=True)
        self.store_path, self.writer_name, self.q = store_path, name, q
        self.kwargs = writer_kwargs
        self.written = 0
        self.error: BaseException | None = None

    def _items(self):
        # A blocking get, not a polling one: a writer that polled would notice the end up to a
        # poll interval late, a fixed cost on every conversion.
        while (item := self.q.get()) is not self.STOP:
            yield item

    def run(self) -> None:
        from icrl.store.writer import ShardWriter

        try:
            with ShardWriter(self.store_path, self.writer_name, **self.kwargs) as w:
                for episode in self._items():
                    w.append(episode)
                    self.written += 1
        except BaseException as err:  # re-raised by the main thread
            self.error = err
            for _ in self._items():
                pass


class _Streams:
    """Iterates several TtyrecDatasets (disjoint sets of games), each in its own thread, and hands
    their batches to one consumer without copying them.

    nle's generator decodes a batch only when asked for the next one and overwrites the same
    buffers each time, so a single dataset either idles while its consumer works or needs a copy
    of every batch. With two or more, each stream waits only for the consumer to ``release`` its
    own batch: while the consumer cuts stream A's batch straight from nle's buffers, stream B's
    batch decodes in the shared thread pool. Iterate from one thread; ``stop()`` ends the streams
    early. An exception of a dataset is re-raised by the iterator.
    """

    _END = object()

    def __init__(self, datasets: list):
        self.q: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i, ds), name=f"nld-stream-{i}", daemon=True)
                        for i, ds in enumerate(datasets)]
        for t in self.threads:
            t.start()

    def _run(self, index: int, dataset) -> None:
        try:
            for mb in dataset:
                released = threading.Event()
                self.q.put((index, mb, released))
                while not released.wait(0.1):  # nle may overwrite mb only once it is released
                    if self.stopped.is_set():
                        return
                if self.stopped.is_set():
                    return
        except BaseException as err:  # handed to the consumer
            self.q.put(err)
        finally:
            self.q.put(self._END)

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join()

    def __iter__(self):
        """Yields (stream index, batch, released): cut ``batch``, then ``released.set()``."""
        ended = 0
        while ended < len(self.threads):
            item = self.q.get()
            if item is self._END:
                ended += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item


def split_rows(items: list, rows: int, streams: int) -> list[tuple[list, int]]:
    """Deal ``items`` (games) round-robin to ``streams`` streams with ``rows`` rows between them.
    → [(items of the stream, its rows)]; a stream never has more rows than games."""
    streams = max(1, min(streams, rows))
    return [(items[s::streams], rows // streams + (s < rows % streams)) for s in range(streams)]


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
            seq_length: int = 1024, threads: int = 2, streams: int = 2, writers: int = 1,
            compression: str = "zstd", fsync: bool = False, full_bz2: bool = False,
            progress: Callable[[ConvertReport, int], None] | None = None) -> ConvertReport:
    """Convert the selected games into the store at ``store_path`` (created if missing).

    ``segment_length`` frames per episode; ``batch_size`` games decoded at once (rows of
    TtyrecDataset, dealt to ``streams`` datasets that decode in turn) by ``threads`` threads;
    ``seq_length`` frames per row per batch; ``writers`` threads compress and append
    (``compression``: a codec of icrl.store.codec); ``fsync`` makes each append survive a power
    cut, not only a crash; ``full_bz2`` checks bzip2 CRCs of every
    file before decoding. ``progress(report, games_total)`` is called after each batch.
    """
    from icrl.store.layout import create_store
    from icrl.store.lock import WriteLock

    for name, value, low in (("--segment-length", segment_length, 1), ("--batch-size", batch_size, 1),
                             ("--seq-length", seq_length, 1), ("--threads", threads, 1), ("--streams", streams, 1),
                             ("--writers", writers, 1)):
        if value < low:
            raise IcrlError(f"{name} must be >= {low}, got {value}")
    store_path = Path(store_path)
    create_store(store_path)
    # One writing command at a time, from the snapshot of what is stored to the last append: two
    # conversions at once would both convert the games missing from the same snapshot. The writer
    # threads' ShardWriters share this process's lock.
    with WriteLock.acquire(store_path):
        return _convert(selection, store_path, segment_length=segment_length, batch_size=batch_size,
                        seq_length=seq_length, threads=threads, streams=streams, writers=writers,
                        compression=compression, fsync=fsync, full_bz2=full_bz2, progress=progress)


def _convert(selection: Selection, store_path: Path, *, segment_length: int, batch_size: int, seq_length: int,
             threads: int, streams: int, writers: int, compression: str, fsync: bool, full_bz2: bool,
             progress: Callable[[ConvertReport, int], None] | None) -> ConvertReport:
    """``convert`` once the store exists and this process holds its write lock."""
    import nle.dataset as nld

    from icrl.store.reader import TrajectoryStore

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
    pool_writers = [_Writer(store_path, f"nld-{selection.dataset}-{i}", q, compression=compression,
                            fsync=fsync) for i in range(writers)]
    for w in pool_writers:
        w.start()
    rows_n = min(batch_size, len(todo))
    try:
        with ThreadPoolExecutor(threads) as pool:
            shares = split_rows(todo, rows_n, streams)
            rows = [[RowCutter(make_game, on_done) for _ in range(n)] for _, n in shares]
            batches = _Streams([nld.TtyrecDataset(selection.dataset, batch_size=n, seq_length=seq_length,
                                                  dbfilename=str(selection.db), threadpool=pool,
                                                  gameids=[g.gameid for g in games_s], shuffle=False)
                                for games_s, n in shares])
            try:
                for stream, mb, released in batches:
                    gids = mb["gameids"]
                    cursor = mb["tty_cursor"]
                    if cursor.size and (cursor.min() < 0 or cursor.max() > 255):
                        raise IcrlError(f"{selection.dataset}: tty_cursor out of range [{cursor.min()}, "
                                        f"{cursor.max()}]: not a 24x80 recording")
                    keys = mb.get("keypresses")
                    scores = mb.get("scores")
                    for b, row in enumerate(rows[stream]):
                        episodes = row.feed(gids[b], mb["tty_chars"][b], mb["tty_colors"][b], cursor[b],
                                            None if keys is None else keys[b], None if scores is None else scores[b])
                        for ep in episodes:
                            _put(q, ep, pool_writers)
                    report.frames += int(np.count_nonzero(gids))
                    released.set()  # the segments hold copies: nothing refers to mb now
                    report.seconds = time.perf_counter() - start
                    if progress is not None:
                        progress(report, len(selection.games))
                for row in (r for rs in rows for r in rs):
                    for ep in row.close():
                        _put(q, ep, pool_writers)
            except FileNotFoundError as err:
                raise IcrlError(f"{err.filename}: ttyrec disappeared during the conversion; "
                                f"re-run the same command to resume") from None
            finally:
                batches.stop()
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        for _ in pool_writers:  # writers append what is queued (complete segments), then stop
            q.put(_Writer.STOP)
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
