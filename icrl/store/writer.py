"""``ShardWriter``: appends episodes to a trajectory store from one process.

    with ShardWriter("data/minihack", "collect-3") as w:      # or store.writer(name)
        ref = w.append(episode)                               # durable when append returns

Durability. ArrayRecord writes nothing readable before its writer closes (a killed writer leaves an
empty file), so ``append`` first writes the episode as one frame to the writer's journal (one
``write`` + ``fdatasync``); it is then in the store. Every ``max_shard_episodes`` episodes or
``max_shard_bytes`` bytes, and on ``close``, the writer seals its journal (``icrl.store.layout``).
A writer killed at any point leaves at most one journal whose complete frames are every finished
episode; an unfinished append is an incomplete last frame, which is ignored. Readers read journals
in place; the next ``ShardWriter`` (or ``recover_journals``) seals the journals of dead writers.

Exclusion. A writer holds the store's write lock (``icrl.store.lock``) from open to close: a
second command writing the same store gets ``StoreLocked`` naming the first. Writers of one process
share the lock; a spawned worker of a run that holds it passes the run's ``lock`` token instead.

``fsync=False`` skips the per-append ``fdatasync``: an episode then survives the death of its
process (it is in the page cache) but not a power cut. Measured (``benchmarks/store_throughput.py``,
local disk): the journal and seal cost ~0.1 ms an episode; ``fdatasync`` adds 1-2 ms per 100-step
tty episode and ~5 ms per 100-step RGB one, next to 5-11 ms of encoding.
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from types import TracebackType

from icrl.errors import IcrlError
from icrl.store.codec import COMPRESSIONS, DEFAULT_COMPRESSION, encode_episode, raw_nbytes, record_crc
from icrl.store.episode import Episode
from icrl.store.index import EpisodeRef
from icrl.store.journal import frame_bytes
from icrl.store.layout import WAL, WAL_EXT, check_store, fsync_path, recover_journals, seal_journal, shard_rel
from icrl.store.lock import WriteLock, join_write_lock


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40]
    return cleaned or "writer"


class ShardWriter:
    """Appends episodes to a store from one process: its own journal and shards, nobody else's.

    Not thread-safe; use one writer per process (or per thread). Close it (or use ``with``) to
    seal the last journal; a writer that is never closed loses nothing: its journal is sealed by
    the next writer opened on the store.
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        name: str | None = None,
        *,
        compression: str = DEFAULT_COMPRESSION,
        fsync: bool = True,
        max_shard_episodes: int = 4096,
        max_shard_bytes: int = 64 << 20,
        recover: bool = True,
        lock: str | None = None,
        wait: bool = False,
    ):
        """``name`` prefixes the writer's file names (e.g. ``collect-3``); ``compression`` is
        ``lzma``, ``zlib``, ``zlib1`` or ``zstd`` (see icrl.store.codec); a shard is sealed once it holds
        ``max_shard_episodes`` episodes or ``max_shard_bytes`` bytes; ``recover`` first seals the
        journals of dead writers. ``lock``: the token of the store's write lock held by this
        writer's run in another process (``WriteLock.token``); None takes the lock (shared with the
        other writers of this process), waiting for it with ``wait``, else StoreLocked if another
        command holds it."""
        if compression not in COMPRESSIONS:
            raise IcrlError(f"unknown compression {compression!r}; choose from {sorted(COMPRESSIONS)}")
        if max_shard_episodes < 1 or max_shard_bytes < 1:
            raise IcrlError("max_shard_episodes and max_shard_bytes must be positive")
        self.root = check_store(store_path)
        self._fd: int | None = None
        self._lock: WriteLock | None = None
        if lock is not None:
            join_write_lock(self.root, lock)
        else:
            self._lock = WriteLock.acquire(self.root, wait=wait)
        try:
            if recover:
                recover_journals(self.root)
            self._start(name, compression, fsync, max_shard_episodes, max_shard_bytes)
        except BaseException:
            self._release()
            raise

    def _start(self, name: str | None, compression: str, fsync: bool, max_shard_episodes: int,
               max_shard_bytes: int) -> None:
        self.name = _safe_name(name or "writer")
        self.compression = compression
        self.fsync = fsync
        self.max_shard_episodes = max_shard_episodes
        self.max_shard_bytes = max_shard_bytes
        self._pid = os.getpid()
        self._prefix = f"{self.name}.p{self._pid}.{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._size = 0
        self._count = 0
        self.episodes_written = 0
        self.shards_sealed: list[str] = []  # store-relative shard paths, in order
        self._open_journal()

    @property
    def stem(self) -> str:
        """Stem of the current journal (and of the shard it will be sealed into)."""
        return f"{self._prefix}.{self._seq:05d}"

    def _open_journal(self) -> None:
        while True:
            path = self.root / WAL / f"{self.stem}{WAL_EXT}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A recoverer may have locked the new, empty journal before us and removed it: then
            # our descriptor points at an unlinked file and we start a fresh journal.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            self._seq += 1
        fsync_path(path.parent)
        self._fd, self._size, self._count = fd, 0, 0

    def append(self, episode: Episode) -> EpisodeRef:
        """Add an episode; when this returns it is in the store and survives the process's death.

        Raises ValueError (from ``Episode.validate``) for an episode that breaks the contract.
        """
        if self._fd is None:
            raise ValueError("append on a closed ShardWriter")
        if os.getpid() != self._pid:
            # A forked child shares the journal's descriptor and lock: two processes would
            # interleave frames. Each process must open its own writer.
            raise ValueError("ShardWriter used in a forked process; open one writer per process")
        record = encode_episode(episode, self.compression)
        ref = EpisodeRef(
            task=episode.task, level=int(episode.level), episode=int(episode.episode),
            domain=episode.domain, source=episode.source, length=episode.length, ret=episode.ret,
            success=episode.success, terminated=bool(episode.terminated),
            truncated=bool(episode.truncated), has_actions=bool(episode.has_actions),
            shard=shard_rel(self.stem), offset=self._count, nbytes=len(record),
            raw_bytes=raw_nbytes(episode), crc32=record_crc(record),
        )
        frame = memoryview(frame_bytes(ref, record))
        start = self._size
        try:
            done = 0
            while done < len(frame):
                done += os.write(self._fd, frame[done:])
            if self.fsync:
                os.fdatasync(self._fd)
        except BaseException:
            # Leave no partial frame in the middle of the journal: later frames would be unreachable.
            os.ftruncate(self._fd, start)
            raise
        self._size += len(frame)
        self._count += 1
        self.episodes_written += 1
        if self._count >= self.max_shard_episodes or self._size >= self.max_shard_bytes:
            self._seal()
            self._seq += 1
            self._open_journal()
        return ref

    def _seal(self) -> None:
        assert self._fd is not None
        n = seal_journal(self.root, self.stem, self._fd,
                         {"writer": self.name, "compression": self.compression})
        if n:
            self.shards_sealed.append(shard_rel(self.stem))
        os.close(self._fd)  # releases the flock
        self._fd = None

    def close(self) -> None:
        """Seal the current journal and let go of the store's write lock. Idempotent."""
        try:
            if self._fd is not None:
                self._seal()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()  # episodes appended before an exception are complete: keep them
