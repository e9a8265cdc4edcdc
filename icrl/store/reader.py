"""``TrajectoryStore``: read access to a trajectory store, a snapshot taken at open.

    store = TrajectoryStore.create("data/minihack")          # or open_store(path, create=True)
    store = TrajectoryStore("data/minihack")                  # snapshot of the store at open
    store.tasks(); store.levels(task); len(store)
    refs = store.episodes_of(task, level)                     # O(1): list[EpisodeRef]
    store.contains(task, level, episode)                      # resume: skip what is stored
    ep = store.read(refs[0])                                  # -> Episode (checksum checked)
    src = store.source()                                      # Grain RandomAccessDataSource
    store.index.columns["length"], store.index.rows_of(task, level)   # vectorised: numpy rows
    with store.writer("collect-0") as w: ...                  # icrl.store.writer.ShardWriter

The index (numpy columns, ~70 bytes an episode) is loaded on open and nothing else; ``read``
fetches one record by its shard and record number through ``ArrayRecordReader`` with
random-access options, keeping at most ``max_open_shards`` shard readers open, so a reader's memory
does not grow with the size of the store. Unsealed journals are read in place. Reopen the store to
see episodes appended after it was opened.

Index and files must agree. Opening checks, from directory listings and the index alone (no record
is read), that every sealed shard has its fragment, every fragment its shard, and every journal
scans cleanly; by default (``strict=True``) a disagreement is an IcrlError naming the file and
``icrl data repair``, so that training never runs on a store that silently lost episodes.
``strict=False`` (``icrl data inspect``) opens what is readable and lists each disagreement in
``store.problems``: a damaged journal then contributes the frames before its damage.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from icrl.errors import IcrlError
from icrl.store.codec import RecordError, decode_episode, record_crc
from icrl.store.episode import Episode
from icrl.store.index import EpisodeRef, StoreIndex, read_fragment
from icrl.store.journal import scan_journal
from icrl.store.layout import (INDEX, INDEX_EXT, SHARD_EXT, SHARDS, WAL, WAL_EXT, check_store, close_reader,
                               create_store, open_shard_reader, shard_rel)
from icrl.store.source import EpisodeSource
from icrl.store.writer import ShardWriter


class _Journal:
    """An unsealed journal seen at open: its path, open descriptor and record byte offsets."""

    def __init__(self, path: Path, fd: int | None, record_offsets: Sequence[int]):
        self.path = path
        self.fd = fd
        self.record_offsets = np.asarray(record_offsets, np.int64)


class TrajectoryStore:
    """Read access to a store (a snapshot taken at open) and the door to its writers."""

    def __init__(self, path: str | os.PathLike, *, max_open_shards: int = 16, strict: bool = True):
        """Open the store at ``path``. IcrlError names the path if it is missing, not a store, or
        has a corrupt index fragment; with ``strict``, also if its index and files disagree (see
        the module docstring)."""
        self.root = check_store(path)
        self.max_open_shards = max_open_shards
        self._readers: collections.OrderedDict[str, ArrayRecordReader] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._journals: dict[str, _Journal] = {}
        self.problems: list[str] = []  # where the index and the files disagree (strict=False)
        self.index = self._load()
        if strict and self.problems:
            self.close()
            more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
            raise IcrlError(f"{self.problems[0]}{more}; `icrl data repair {self.root}` repairs the store")

    @classmethod
    def create(cls, path: str | os.PathLike, **kwargs: object) -> TrajectoryStore:
        """Make an empty store at ``path`` (or open the store already there) and open it."""
        create_store(path)
        return cls(path, **kwargs)

    def _load(self) -> StoreIndex:
        # Journals first, fragments second, shards last: a journal sealed in between then shows up
        # as its fragment (and the journal is dropped), so no episode is missed or counted twice.
        journal_refs: dict[str, list[EpisodeRef]] = {}
        journal_stems: set[str] = set()
        for wal in sorted((self.root / WAL).glob(f"*{WAL_EXT}")):
            try:
                fd = os.open(wal, os.O_RDONLY)
            except FileNotFoundError:
                continue
            stem = wal.name[: -len(WAL_EXT)]
            journal_stems.add(stem)
            scan = scan_journal(fd, shard_rel(stem), str(wal))
            if scan.damage:
                self.problems.append(f"damaged journal: {scan.damage}; the {len(scan.refs)} episodes before "
                                     f"the damage are readable")
            if scan.refs:
                journal_refs[shard_rel(stem)] = scan.refs
                self._journals[shard_rel(stem)] = _Journal(wal, fd, scan.record_offsets)
            else:
                os.close(fd)
        chunks: list[list[EpisodeRef]] = []
        indexed: set[str] = set()
        for frag in sorted((self.root / INDEX).glob(f"*{INDEX_EXT}")):
            stem = frag.name[: -len(INDEX_EXT)]
            try:
                head, refs = read_fragment(frag)
            except FileNotFoundError:
                continue  # moved aside by `icrl data repair` since the listing
            if head["shard"] != shard_rel(stem):
                raise IcrlError(f"{frag}:1: header names shard {head['shard']!r}, expected "
                                f"{shard_rel(stem)!r} (corrupt index; `icrl data repair` rebuilds it)")
            indexed.add(stem)
            journal = self._journals.pop(shard_rel(stem), None)
            journal_refs.pop(shard_rel(stem), None)
            if journal is not None and journal.fd is not None:
                os.close(journal.fd)
            if not (self.root / shard_rel(stem)).is_file():
                if frag.exists():  # else both were moved aside by a repair since the listing
                    self.problems.append(f"{frag}: lists {len(refs)} episodes of {self.root / shard_rel(stem)}, "
                                         f"which is missing")
                continue
            chunks.append(refs)
        for shard in sorted((self.root / SHARDS).glob(f"*{SHARD_EXT}")):
            stem = shard.name[: -len(SHARD_EXT)]
            if stem in indexed or stem in journal_stems:
                continue  # a shard whose journal is still there is re-sealed by the next writer
            # Sealed since the listings? Its journal is removed only after its fragment is written,
            # so look for the journal first, then the fragment.
            if (self.root / WAL / f"{stem}{WAL_EXT}").exists() or (self.root / INDEX / f"{stem}{INDEX_EXT}").exists():
                continue
            try:
                reader = open_shard_reader(shard)
                count = f"its {reader.num_records()} episodes are"
                close_reader(reader)
            except RuntimeError:
                count = "its episodes are"
            self.problems.append(f"{shard}: shard has no index fragment: {count} not in the index")
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

    def _where(self, ref: EpisodeRef) -> str:
        """The file and record of ``ref`` in messages: its journal while unsealed, else its shard."""
        journal = self._journals.get(ref.shard)
        if journal is not None:
            return f"{journal.path}: frame {ref.offset} (byte {int(journal.record_offsets[ref.offset])})"
        return f"{self.root / ref.shard}: record {ref.offset}"

    def read_record(self, ref: EpisodeRef) -> bytes:
        """The encoded record of ``ref``, its checksum checked (IcrlError names file and record)."""
        record = None
        journal = self._journals.get(ref.shard)
        if journal is not None:
            record = self._journal_record(journal, ref)
        where = self._where(ref)  # after the read: a journal sealed meanwhile is read from its shard
        if record is None:
            try:
                record = self._reader(ref.shard).read([ref.offset])[0]
            except (RuntimeError, IndexError, ValueError) as err:
                raise IcrlError(f"{where}: unreadable: {err} (damaged store)") from None
        if len(record) != ref.nbytes or record_crc(record) != ref.crc32:
            raise IcrlError(f"{where}: checksum mismatch (damaged store; `icrl data verify {self.root}` "
                            f"lists the damage, `icrl data repair {self.root}` sets it aside)")
        return record

    def read(self, ref: EpisodeRef) -> Episode:
        """The episode of ``ref``. Thread-safe."""
        record = self.read_record(ref)
        try:
            return decode_episode(record)
        except RecordError as err:
            raise IcrlError(f"{self._where(ref)}: {err}") from None

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
            "problems": self.problems,
        }

    def __setstate__(self, state: dict) -> None:
        self.root = state["root"]
        self.max_open_shards = state["max_open_shards"]
        self.index = state["index"]
        self._journals = {k: _Journal(p, None, offs) for k, (p, offs) in state["journals"].items()}
        self.problems = state["problems"]
        self._readers = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"TrajectoryStore({str(self.root)!r}, episodes={len(self)}, tasks={len(self.tasks())})"


def open_store(path: str | os.PathLike, create: bool = False, **kwargs: object) -> TrajectoryStore:
    """Open the store at ``path``; with ``create=True`` make it first if needed."""
    return TrajectoryStore.create(path, **kwargs) if create else TrajectoryStore(path, **kwargs)
