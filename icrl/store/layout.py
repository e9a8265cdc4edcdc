"""The on-disk layout of a trajectory store, and sealing: journals into shards and index fragments.

On disk::

    STORE/icrl-store.json                 marker: {"format": "icrl-trajectory-store", "version": 1}
    STORE/shards/<stem>.arrayrecord       sealed shards: ArrayRecord, group_size 1, one episode a record
    STORE/index/<stem>.jsonl              one index fragment per sealed shard (icrl.store.index)
    STORE/wal/<stem>.wal                  the journal of a writer, not yet sealed (icrl.store.journal)
    STORE/write.lock                      held by the one command writing the store (icrl.store.lock)
    STORE/damaged/                        what `icrl data repair` set aside (icrl.store.repair); not read

``<stem>`` is ``<name>.p<pid>.<8 hex>.<seq>``: unique per writer, so the writers of a command (one
per worker process or thread) write at once without coordination, each into its own files. Two
*commands* do not write at once: the write lock makes the second wait or stop.

Sealing copies a journal's records into ``shards/<stem>.arrayrecord`` (temp name, fsync, rename),
then writes the fragment (temp, fsync, rename), then deletes the journal. Each step is idempotent,
so a process killed at any point leaves sealed shards with fragments and journals whose complete
frames are every finished episode. ``recover_journals`` seals the journals of dead writers: a
writer holds an exclusive ``flock`` on its journal for its lifetime and the kernel drops it when
the process dies, which is how a dead writer's journal is told apart. (On a network filesystem
whose ``flock`` is not coherent across hosts, writers on several hosts should use
``recover=False`` and recover once all of them are done.)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from icrl.errors import IcrlError
from icrl.store.codec import record_crc
from icrl.store.index import fragment_text
from icrl.store.journal import scan_journal

STORE_FORMAT = "icrl-trajectory-store"
STORE_VERSION = 1
MARKER = "icrl-store.json"
SHARDS, INDEX, WAL = "shards", "index", "wal"
SHARD_EXT, INDEX_EXT, WAL_EXT, TMP_EXT = ".arrayrecord", ".jsonl", ".wal", ".tmp"

# Records are compressed by icrl.store.codec; ArrayRecord stores them as they are. group_size 1
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
    try:
        reader = ArrayRecordReader(str(path), READER_OPTIONS, file_reader_buffer_size=READER_BUFFER)
    except RuntimeError as err:
        raise RuntimeError(str(err) or "not a readable ArrayRecord file") from None
    if not reader.ok():
        close_reader(reader, raise_error=True)  # close() raises the reader's stored error
        raise RuntimeError("ArrayRecord reader failed")
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


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (which makes the renames and unlinks in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + TMP_EXT)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def write_shard(path: Path, records: Iterable[bytes]) -> None:
    """Write ``records`` as the sealed shard ``path`` atomically (temp name, fsync, rename, fsync
    the directory); an exception from ``records`` leaves ``path`` as it was."""
    tmp = path.with_name(path.name + TMP_EXT)
    tmp.unlink(missing_ok=True)  # left by a write that was killed
    writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    try:
        for record in records:
            writer.write(record)
        if not writer.ok():
            raise OSError(f"{tmp}: ArrayRecord writer failed")
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


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
    """Make an empty store at ``path`` (a new or empty directory); an existing store is left as is.

    Several commands may create the same store at once: a directory holding only the beginnings of
    a store (its sub-directories, a marker being written, the write lock) is finished, not refused.
    """
    root = Path(path)
    if (root / MARKER).exists():
        return check_store(root)
    being_made = {SHARDS, INDEX, WAL, "write.lock"}
    if root.exists() and (not root.is_dir() or any(
            p.name not in being_made and not p.name.startswith(MARKER) for p in root.iterdir())):
        raise IcrlError(f"{root}: exists and is not an empty directory or a trajectory store")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for sub in (SHARDS, INDEX, WAL):
            (root / sub).mkdir(exist_ok=True)
        # A temp name of its own: two creators must not rename each other's half-written marker.
        tmp = root / f"{MARKER}.{os.getpid()}{TMP_EXT}"
        tmp.write_bytes(json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}).encode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, root / MARKER)
        fsync_path(root)
    except OSError as err:
        raise IcrlError(f"{err.filename or root}: cannot create a trajectory store there: {err.strerror}") from None
    return root


# -------------------------------------------------------------------------------------- sealing


def seal_journal(root: Path, stem: str, fd: int, header: dict | None = None, frames: int | None = None) -> int:
    """Turn the journal of ``stem`` (open as ``fd``, locked by the caller) into a sealed shard and
    its fragment, then delete the journal. Returns the number of episodes sealed.

    Idempotent: a fragment that already exists means a previous seal finished its important part,
    and only the journal is removed. Raises IcrlError if the journal is damaged (left in place for
    ``icrl data verify`` to report and ``icrl data repair`` to salvage). ``frames``: seal only the
    first ``frames`` frames, whatever follows them (``icrl.store.repair``, which has set the rest
    aside first).
    """
    wal = root / WAL / f"{stem}{WAL_EXT}"
    frag = root / INDEX / f"{stem}{INDEX_EXT}"
    shard = root / shard_rel(stem)
    # A fragment whose shard is gone (damage) does not make the journal redundant: seal it again.
    if not (frag.exists() and shard.exists()):
        scan = scan_journal(fd, shard_rel(stem), str(wal))
        if frames is not None:
            scan.refs, scan.record_offsets, scan.damage = scan.refs[:frames], scan.record_offsets[:frames], None
        if scan.damage:
            raise IcrlError(f"cannot seal journal: {scan.damage}")
        if scan.refs:
            def records():
                for i, (ref, off) in enumerate(zip(scan.refs, scan.record_offsets)):
                    record = os.pread(fd, ref.nbytes, off)
                    if record_crc(record) != ref.crc32:
                        raise IcrlError(f"cannot seal journal: {wal}: frame {i}: checksum mismatch")
                    yield record

            write_shard(shard, records())
            write_durably(frag, fragment_text(shard_rel(stem), scan.refs, **(header or {})).encode())
        n = len(scan.refs)
    else:
        n = 0
    wal.unlink(missing_ok=True)
    fsync_path(wal.parent)
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
