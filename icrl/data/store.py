"""The trajectory store: compressed episodes in append-only ArrayRecord shards, plus an index.

Usage::

    from icrl.data.store import TrajectoryStore, ShardWriter

    store = TrajectoryStore.create("data/minihack")          # or open_store(path, create=True)
    with store.writer("collect-0") as w:                      # one writer per process
        ref = w.append(episode)                               # durable when append returns
    # in a worker process, without loading the index:  ShardWriter("data/minihack", "collect-3")

    store = TrajectoryStore("data/minihack")                  # snapshot of the store at open
    store.tasks(); store.levels(task); len(store)
    refs = store.episodes_of(task, level)                     # O(1): list[EpisodeRef]
    store.contains(task, level, episode)                      # resume: skip what is stored
    ep = store.read(refs[0])                                  # -> Episode (checksum checked)
    src = store.source()                                      # Grain RandomAccessDataSource
    store.index.columns["length"], store.index.rows_of(task, level)   # vectorised: numpy rows

On disk::

    STORE/icrl-store.json                 marker: {"format": "icrl-trajectory-store", "version": 1}
    STORE/shards/<stem>.arrayrecord       sealed shards: ArrayRecord, group_size 1, one episode a record
    STORE/index/<stem>.jsonl              one index fragment per sealed shard (icrl.data.index)
    STORE/wal/<stem>.wal                  the journal of a writer, not yet sealed (icrl.data.journal)

``<stem>`` is ``<name>.p<pid>.<8 hex>.<seq>``: unique per writer, so any number of processes write
at once without coordination, each into its own files.

Durability. ArrayRecord writes nothing readable before its writer closes (a killed writer leaves an
empty file), so ``append`` first writes the episode as one frame to the writer's journal (one
``write`` + ``fdatasync``); it is then in the store. Every ``max_shard_episodes`` episodes or
``max_shard_bytes`` bytes, and on ``close``, the writer *seals* its journal: it copies the records
into ``shards/<stem>.arrayrecord`` (temp name, fsync, rename), then writes the fragment (temp,
fsync, rename), then deletes the journal. Each step is idempotent, so a writer killed at any point
leaves (a) sealed shards with fragments and (b) at most one journal whose complete frames are
every finished episode; an unfinished append is an incomplete last frame, which is ignored.
Readers read journals in place; the next ``ShardWriter`` (or ``recover_journals``) seals the
journals of dead writers. A writer holds an exclusive ``flock`` on its journal for its lifetime;
the kernel drops it when the process dies, which is how a dead writer's journal is told apart.
(On a network filesystem whose ``flock`` is not coherent across hosts, writers on several hosts
should use ``recover=False`` and recover once all of them are done.)

``fsync=False`` skips the per-append ``fdatasync``: an episode then survives the death of its
process (it is in the page cache) but not a power cut. Measured (``benchmarks/store_throughput.py``,
local disk): the journal and seal cost ~0.1 ms an episode; ``fdatasync`` adds 1-2 ms per 100-step
tty episode and ~5 ms per 100-step RGB one, next to 5-11 ms of encoding.

Reading. A ``TrajectoryStore`` is a snapshot: the index (numpy columns, ~70 bytes an episode) is
loaded on open and nothing else; ``read`` fetches one record by its shard and record number through
``ArrayRecordReader`` with random-access options, keeping at most ``max_open_shards`` shard
readers open, so a reader's memory does not grow with the size of the store. Reopen the store to
see episodes appended after it was opened.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from icrl.data.codec import (COMPRESSIONS, DEFAULT_COMPRESSION, RecordError, decode_episode, encode_episode,
                             raw_nbytes, record_crc)
from icrl.data.episode import Episode
from icrl.data.index import EpisodeRef, StoreIndex, fragment_text, read_fragment
from icrl.data.journal import frame_bytes, scan_journal
from icrl.errors import IcrlError

STORE_FORMAT = "icrl-trajectory-store"
STORE_VERSION = 1
MARKER = "icrl-store.json"
SHARDS, INDEX, WAL = "shards", "index", "wal"
SHARD_EXT, INDEX_EXT, WAL_EXT, TMP_EXT = ".arrayrecord", ".jsonl", ".wal", ".tmp"

# Records are compressed by icrl.data.codec; ArrayRecord stores them as they are. group_size 1
# makes every record its own chunk: a random read decodes exactly one episode.
WRITER_OPTIONS = "group_size:1,uncompressed"
# No readahead and no thread pool: each read fetches one record (ArrayRecord's advice for random
# access); the 32 KiB file buffer keeps each open shard reader small.
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
READER_BUFFER = 32 << 10


# --------------------------------------------------------------------------------------- layout


def open_shard_reader(path: Path) -> ArrayRecordReader:
    """A random-access reader of a sealed shard. RuntimeError (with Riegeli's message) if the
    file is unreadable; note a *truncated* shard may open and report 0 records instead."""
    reader = ArrayRecordReader(str(path), READER_OPTIONS, file_reader_buffer_size=READER_BUFFER)
    if not reader.ok():
        close_reader(reader, raise_error=True)  # close() raises the reader's stored error
        raise RuntimeError(f"{path}: ArrayRecord reader failed")
    return reader


def close_reader(reader: ArrayRecordReader, raise_error: bool = False) -> None:
    # A reader that hit a corrupt file raises its error again on close; closing must not fail.
    try:
        reader.close()
    except RuntimeError:
        if raise_error:
            raise


def shard_rel(stem: str) -> str:
    """Store-relative path of the shard of ``stem`` (what ``EpisodeRef.shard`` holds)."""
    return f"{SHARDS}/{stem}{SHARD_EXT}"


def _fsync_path(path: Path) -> None:
    """fsync a file, or a directory (which makes the renames and unlinks in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + TMP_EXT)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def check_store(path: str | os.PathLike) -> Path:
    """The root of the store at ``path``; IcrlError naming the path if it is not one."""
    root = Path(path)
    if not root.exists():
        raise IcrlError(f"{root}: no such trajectory store (the path does not exist)")
    if not root.is_dir():
        raise IcrlError(f"{root}: not a trajectory store (not a directory)")
    marker = root / MARKER
    if not marker.is_file():
        raise IcrlError(f"{root}: not a trajectory store (no {MARKER}; create one with TrajectoryStore.create)")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IcrlError(f"{marker}: corrupt store marker (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise IcrlError(f"{marker}: not an icrl trajectory store marker")
    if meta.get("version") != STORE_VERSION:
        raise IcrlError(f"{marker}: store version {meta.get('version')!r} is not supported (expected {STORE_VERSION})")
    for sub in (SHARDS, INDEX, WAL):
        if not (root / sub).is_dir():
            raise IcrlError(f"{root / sub}: missing store directory (damaged store)")
    return root


def create_store(path: str | os.PathLike) -> Path:
    """Make an empty store at ``path`` (a new or empty directory); an existing store is left as is."""
    root = Path(path)
    if (root / MARKER).exists():
        return check_store(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise IcrlError(f"{root}: exists and is not an empty directory or a trajectory store")
    root.mkdir(parents=True, exist_ok=True)
    for sub in (SHARDS, INDEX, WAL):
        (root / sub).mkdir(exist_ok=True)
    _write_durably(root / MARKER, json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}).encode())
    return root


# -------------------------------------------------------------------------------------- sealing


def seal_journal(root: Path, stem: str, fd: int, header: dict | None = None) -> int:
    """Turn the journal of ``stem`` (open as ``fd``, locked by the caller) into a sealed shard and
    its fragment, then delete the journal. Returns the number of episodes sealed.

    Idempotent: a fragment that already exists means a previous seal finished its important part,
    and only the journal is removed. Raises IcrlError if the journal is damaged (left in place for
    ``icrl data verify`` to report).
    """
    wal = root / WAL / f"{stem}{WAL_EXT}"
    frag = root / INDEX / f"{stem}{INDEX_EXT}"
    shard = root / shard_rel(stem)
    if not frag.exists():
        scan = scan_journal(fd, shard_rel(stem), str(wal))
        if scan.damage:
            raise IcrlError(f"cannot seal journal: {scan.damage}")
        if scan.refs:
            tmp = shard.with_name(shard.name + TMP_EXT)
            tmp.unlink(missing_ok=True)  # left by a seal that was killed
            writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
            for i, (ref, off) in enumerate(zip(scan.refs, scan.record_offsets)):
                record = os.pread(fd, ref.nbytes, off)
                if record_crc(record) != ref.crc32:
                    writer.close()
                    raise IcrlError(f"cannot seal journal: {wal}: frame {i}: checksum mismatch")
                writer.write(record)
            if not writer.ok():
                raise OSError(f"{tmp}: ArrayRecord writer failed")
            writer.close()
            _fsync_path(tmp)
            os.replace(tmp, shard)
            _fsync_path(shard.parent)
            _write_durably(frag, fragment_text(shard_rel(stem), scan.refs, **(header or {})).encode())
        n = len(scan.refs)
    else:
        n = 0
    wal.unlink(missing_ok=True)
    _fsync_path(wal.parent)
    return n


def recover_journals(path: str | os.PathLike) -> int:
    """Seal the journals of writers that died (killed, crashed, never closed). Returns the number
    of episodes sealed. Journals of live writers (their flock is held) are left alone; several
    processes may recover at once (the flock lets one seal each journal). A damaged journal is
    skipped and stays for ``icrl data verify`` to name.
    """
    root = check_store(path)
    sealed = 0
    for wal in sorted((root / WAL).glob(f"*{WAL_EXT}")):
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            continue  # sealed by its writer or another recoverer since the listing
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            try:
                same = os.stat(wal).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue  # sealed and removed by someone else while we waited for the lock
            try:
                sealed += seal_journal(root, wal.name[: -len(WAL_EXT)], fd, {"recovered": True})
            except IcrlError:
                continue
        finally:
            os.close(fd)
    return sealed


# --------------------------------------------------------------------------------------- writer


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
    ):
        """``name`` prefixes the writer's file names (e.g. ``collect-3``); ``compression`` is
        ``lzma`` or ``zlib`` (see icrl.data.codec); a shard is sealed once it holds
        ``max_shard_episodes`` episodes or ``max_shard_bytes`` bytes; ``recover`` first seals the
        journals of dead writers."""
        if compression not in COMPRESSIONS:
            raise IcrlError(f"unknown compression {compression!r}; choose from {sorted(COMPRESSIONS)}")
        if max_shard_episodes < 1 or max_shard_bytes < 1:
            raise IcrlError("max_shard_episodes and max_shard_bytes must be positive")
        self.root = check_store(store_path)
        if recover:
            recover_journals(self.root)
        self.name = _safe_name(name or "writer")
        self.compression = compression
        self.fsync = fsync
        self.max_shard_episodes = max_shard_episodes
        self.max_shard_bytes = max_shard_bytes
        self._pid = os.getpid()
        self._prefix = f"{self.name}.p{self._pid}.{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._fd: int | None = None
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
        _fsync_path(path.parent)
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
        """Seal the current journal. Idempotent."""
        if self._fd is not None:
            self._seal()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()  # episodes appended before an exception are complete: keep them


# ---------------------------------------------------------------------------------------- store


class _Journal:
    """An unsealed journal seen at open: its path, open descriptor and record byte offsets."""

    def __init__(self, path: Path, fd: int | None, record_offsets: Sequence[int]):
        self.path = path
        self.fd = fd
        self.record_offsets = np.asarray(record_offsets, np.int64)


class TrajectoryStore:
    """Read access to a store (a snapshot taken at open) and the door to its writers."""

    def __init__(self, path: str | os.PathLike, *, max_open_shards: int = 16):
        """Open the store at ``path``. IcrlError names the path if it is missing, not a store, or
        has a corrupt index fragment or journal."""
        self.root = check_store(path)
        self.max_open_shards = max_open_shards
        self._readers: collections.OrderedDict[str, ArrayRecordReader] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._journals: dict[str, _Journal] = {}
        self.index = self._load()

    @classmethod
    def create(cls, path: str | os.PathLike, **kwargs: object) -> TrajectoryStore:
        """Make an empty store at ``path`` (or open the store already there) and open it."""
        create_store(path)
        return cls(path, **kwargs)

    def _load(self) -> StoreIndex:
        # Journals first, fragments second: a journal sealed in between then shows up as its
        # fragment (and the journal is dropped), so no episode is missed or counted twice.
        journal_refs: dict[str, list[EpisodeRef]] = {}
        for wal in sorted((self.root / WAL).glob(f"*{WAL_EXT}")):
            try:
                fd = os.open(wal, os.O_RDONLY)
            except FileNotFoundError:
                continue
            stem = wal.name[: -len(WAL_EXT)]
            scan = scan_journal(fd, shard_rel(stem), str(wal))
            if scan.damage:
                os.close(fd)
                raise IcrlError(f"damaged journal: {scan.damage} (run `icrl data verify {self.root}`)")
            if scan.refs:
                journal_refs[shard_rel(stem)] = scan.refs
                self._journals[shard_rel(stem)] = _Journal(wal, fd, scan.record_offsets)
            else:
                os.close(fd)
        chunks: list[list[EpisodeRef]] = []
        for frag in sorted((self.root / INDEX).glob(f"*{INDEX_EXT}")):
            stem = frag.name[: -len(INDEX_EXT)]
            head, refs = read_fragment(frag)
            if head["shard"] != shard_rel(stem):
                raise IcrlError(f"{frag}:1: header names shard {head['shard']!r}, expected "
                                f"{shard_rel(stem)!r} (corrupt index)")
            chunks.append(refs)
            journal = self._journals.pop(shard_rel(stem), None)
            journal_refs.pop(shard_rel(stem), None)
            if journal is not None and journal.fd is not None:
                os.close(journal.fd)
        chunks += [journal_refs[k] for k in sorted(journal_refs)]
        return StoreIndex(chunks)

    # ------------------------------------------------------------------ queries (index only)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[EpisodeRef]:
        return iter(self.index)

    @property
    def refs(self) -> list[EpisodeRef]:
        """Every episode's ref (builds one object an episode: O(n); prefer ``index.columns``)."""
        return list(self.index)

    def ref(self, i: int) -> EpisodeRef:
        """The ref of index row ``i`` (0 <= i < len(store))."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a store of {len(self)} episodes")
        return self.index.ref(i)

    def tasks(self) -> list[str]:
        """Tasks with at least one episode, sorted."""
        return sorted({t for t, _ in self.index.keys()})

    def levels(self, task: str) -> list[int]:
        """Levels of ``task`` with at least one episode, sorted."""
        return sorted(lv for t, lv in self.index.keys() if t == task)

    def episodes_of(self, task: str, level: int) -> list[EpisodeRef]:
        """Refs of the episodes of (task, level), in index order; [] if none. One dict lookup."""
        return [self.index.ref(int(i)) for i in self.index.rows_of(task, level)]

    def contains(self, task: str, level: int, episode: int) -> bool:
        """Whether episode number ``episode`` of (task, level) is stored."""
        rows = self.index.rows_of(task, level)
        return bool(np.any(self.index.columns["episode"][rows] == episode))

    @property
    def shards(self) -> list[str]:
        """Store-relative paths of the sealed shards in the snapshot."""
        return sorted(set(self.index.strings["shard"]) - set(self._journals))

    @property
    def journals(self) -> list[Path]:
        """Paths of the unsealed journals whose episodes the snapshot includes."""
        return sorted(j.path for j in self._journals.values())

    # ------------------------------------------------------------------ reading

    def _reader(self, shard: str) -> ArrayRecordReader:
        with self._lock:
            if self._pid != os.getpid():  # forked: never share native readers across processes
                self._readers.clear()
                self._pid = os.getpid()
            reader = self._readers.get(shard)
            if reader is not None:
                self._readers.move_to_end(shard)
                return reader
            path = self.root / shard
            if not path.is_file():
                raise IcrlError(f"{path}: shard listed in the index is missing (damaged store)")
            try:
                reader = open_shard_reader(path)
            except RuntimeError as err:
                raise IcrlError(f"{path}: cannot open shard: {err} (damaged store)") from None
            self._readers[shard] = reader
            while len(self._readers) > self.max_open_shards:
                _, old = self._readers.popitem(last=False)
                close_reader(old)
            return reader

    def _journal_record(self, journal: _Journal, ref: EpisodeRef) -> bytes | None:
        """The record from an unsealed journal, or None if it has been sealed since."""
        with self._lock:
            if journal.fd is None:
                try:
                    journal.fd = os.open(journal.path, os.O_RDONLY)
                except FileNotFoundError:
                    self._journals.pop(ref.shard, None)
                    return None
            fd = journal.fd
        return os.pread(fd, ref.nbytes, int(journal.record_offsets[ref.offset]))

    def read_record(self, ref: EpisodeRef) -> bytes:
        """The encoded record of ``ref``, its checksum checked (IcrlError names file and record)."""
        record = None
        journal = self._journals.get(ref.shard)
        if journal is not None:
            record = self._journal_record(journal, ref)
        where = f"{self.root / ref.shard}: record {ref.offset}"
        if record is None:
            try:
                record = self._reader(ref.shard).read([ref.offset])[0]
            except (RuntimeError, IndexError, ValueError) as err:
                raise IcrlError(f"{where}: unreadable: {err} (damaged store)") from None
        if len(record) != ref.nbytes or record_crc(record) != ref.crc32:
            raise IcrlError(f"{where}: checksum mismatch (damaged store; run `icrl data verify`)")
        return record

    def read(self, ref: EpisodeRef) -> Episode:
        """The episode of ``ref``. Thread-safe."""
        record = self.read_record(ref)
        try:
            return decode_episode(record)
        except RecordError as err:
            raise IcrlError(f"{self.root / ref.shard}: record {ref.offset}: {err}") from None

    def source(self, rows: Sequence[int] | np.ndarray | None = None) -> EpisodeSource:
        """A Grain ``RandomAccessDataSource`` over index rows ``rows`` (default: all, in order)."""
        return EpisodeSource(self, rows)

    def writer(self, name: str | None = None, **kwargs: object) -> ShardWriter:
        """A new ``ShardWriter`` on this store (it does not change this snapshot)."""
        return ShardWriter(self.root, name, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close shard readers and journal descriptors (the store can still be read: they reopen)."""
        with self._lock:
            for reader in self._readers.values():
                close_reader(reader)
            self._readers.clear()
            for journal in self._journals.values():
                if journal.fd is not None:
                    os.close(journal.fd)
                    journal.fd = None

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            for journal in getattr(self, "_journals", {}).values():
                if journal.fd is not None:
                    os.close(journal.fd)
        except OSError:
            pass

    def __getstate__(self) -> dict:
        # Pickled into data-loader workers: the index travels, open readers and descriptors don't.
        return {
            "root": self.root, "max_open_shards": self.max_open_shards, "index": self.index,
            "journals": {k: (j.path, j.record_offsets) for k, j in self._journals.items()},
        }

    def __setstate__(self, state: dict) -> None:
        self.root = state["root"]
        self.max_open_shards = state["max_open_shards"]
        self.index = state["index"]
        self._journals = {k: _Journal(p, None, offs) for k, (p, offs) in state["journals"].items()}
        self._readers = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"TrajectoryStore({str(self.root)!r}, episodes={len(self)}, tasks={len(self.tasks())})"


class EpisodeSource:
    """Grain ``RandomAccessDataSource`` of episodes: item ``i`` is ``store.read(row rows[i])``.

    Picklable (the store's index travels, readers reopen in the worker), so it works with Grain's
    multiprocess loading: ``grain.MapDataset.source(store.source())``.
    """

    def __init__(self, store: TrajectoryStore, rows: Sequence[int] | np.ndarray | None = None):
        self.store = store
        self.rows = np.arange(len(store), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(store)):
            raise IndexError(f"rows out of range for a store of {len(store)} episodes")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Episode:
        return self.store.read(self.store.index.ref(int(self.rows[i])))

    def __repr__(self) -> str:
        return f"EpisodeSource({self.store.root}, {len(self)} episodes)"


def open_store(path: str | os.PathLike, create: bool = False, **kwargs: object) -> TrajectoryStore:
    """Open the store at ``path``; with ``create=True`` make it first if needed."""
    return TrajectoryStore.create(path, **kwargs) if create else TrajectoryStore(path, **kwargs)
