"""Check every file and record of a store; name the file and record of any damage.

What is checked:

- each index fragment parses, its header names its own shard, and its row count matches;
- each sealed shard opens, holds exactly the records its fragment lists (a truncated ArrayRecord
  file reads as *empty*, so this count is what exposes truncation), and every record reads back,
  matches the CRC-32 in the index, decodes, passes ``Episode.validate`` and agrees with its row;
- each unsealed journal: every complete frame's CRC, record CRC, decoding and row; an incomplete
  last frame (an append cut short by a kill) is noted, not damage;
- no shard without a fragment (unless its journal is still there, waiting to be re-sealed);
- every (task, level, episode) is stored once: a second copy is a problem naming both places (two
  writers that planned from the same snapshot; ``icrl data repair`` sets the later copies aside).

Files that recovery cleans up (``*.tmp``, journals already sealed) are listed as notes.
"""

from __future__ import annotations

import array
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from icrl.store.codec import RecordError, decode_episode, raw_nbytes, record_crc
from icrl.store.index import CorruptIndex, EpisodeRef, read_fragment
from icrl.store.journal import read_frame, frame_starts, scan_journal
from icrl.store.layout import (INDEX, INDEX_EXT, SHARD_EXT, SHARDS, TMP_EXT, WAL, WAL_EXT, check_store, close_reader,
                               open_shard_reader, shard_rel)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Damage found: the file (absolute path), the record number (None: the whole file), what."""

    file: str
    record: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.record is None else f"{self.file}: record {self.record}"
        return f"{where}: {self.message}"


@dataclasses.dataclass
class VerifyReport:
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    shards: int = 0
    journals: int = 0
    records: int = 0  # records read and checked

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_record(record: bytes, ref: EpisodeRef) -> str | None:
    """What is wrong with a record given its index row, or None."""
    if len(record) != ref.nbytes:
        return f"record is {len(record)} bytes, index says {ref.nbytes}"
    if record_crc(record) != ref.crc32:
        return f"checksum mismatch (crc32 {record_crc(record):#010x}, index says {ref.crc32:#010x})"
    try:
        ep = decode_episode(record)
    except RecordError as err:
        return f"does not decode: {err}"
    got = {"task": ep.task, "level": ep.level, "episode": ep.episode, "domain": ep.domain,
           "source": ep.source, "length": ep.length, "success": ep.success, "terminated": ep.terminated,
           "truncated": ep.truncated, "has_actions": ep.has_actions, "raw_bytes": raw_nbytes(ep)}
    for field, value in got.items():
        if getattr(ref, field) != value:
            return f"{field} is {value!r} in the record but {getattr(ref, field)!r} in the index"
    if abs(ep.ret - ref.ret) > 1e-6 * max(1.0, abs(ep.ret)):
        return f"return is {ep.ret!r} in the record but {ref.ret!r} in the index"
    return None


def _verify_shard(path: Path, refs: list[EpisodeRef], report: VerifyReport,
                  progress: Callable[[int], None] | None) -> None:
    try:
        reader = open_shard_reader(path)
    except RuntimeError as err:
        report.problems.append(Problem(str(path), None, f"cannot open shard (its index lists {len(refs)} records): {err}"))
        return
    try:
        n = reader.num_records()
        if n != len(refs):
            report.problems.append(Problem(
                str(path), None, f"holds {n} records but its index lists {len(refs)} records (truncated or damaged)"))
        for ref in refs[: min(n, len(refs))]:
            try:
                record = reader.read([ref.offset])[0]
            except (RuntimeError, IndexError, ValueError) as err:
                report.problems.append(Problem(str(path), ref.offset, f"unreadable: {err}"))
            else:
                if (msg := _check_record(record, ref)) is not None:
                    report.problems.append(Problem(str(path), ref.offset, msg))
            report.records += 1
            if progress:
                progress(1)
    finally:
        close_reader(reader)


def _verify_journal(path: Path, shard: str, report: VerifyReport,
                    progress: Callable[[int], None] | None) -> list[EpisodeRef]:
    """Check a journal's frames; returns the refs of its complete frames (up to any damage)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        scan = scan_journal(fd, shard, str(path))
        if scan.damage:
            report.problems.append(Problem(str(path), None, scan.damage.removeprefix(f"{path}: ")))
        if scan.torn_bytes:
            report.notes.append(f"{path}: {scan.torn_bytes} bytes of an unfinished append at the end (ignored)")
        for ref, start in zip(scan.refs, frame_starts(scan)):
            _, record, crc_ok = read_frame(fd, start)
            if not crc_ok:
                msg = f"frame checksum mismatch (byte {start})"
            else:
                msg = _check_record(record, ref)
            if msg is not None:
                report.problems.append(Problem(str(path), ref.offset, msg))
            report.records += 1
            if progress:
                progress(1)
        return scan.refs
    finally:
        os.close(fd)


class KeyTable:
    """Where each (task, level, episode) is stored, compactly (5 int64 a copy: a store of millions of
    NLD segments is checked in tens of MB), to find keys stored more than once."""

    def __init__(self) -> None:
        self.tasks: dict[str, int] = {}
        self.files: dict[str, int] = {}
        self.cols = [array.array("q") for _ in range(5)]  # task, level, episode, file, record

    def add(self, file: str, refs: list[EpisodeRef]) -> None:
        fcode = self.files.setdefault(file, len(self.files))
        for ref in refs:
            row = (self.tasks.setdefault(ref.task, len(self.tasks)), ref.level, ref.episode, fcode, ref.offset)
            for col, v in zip(self.cols, row):
                col.append(v)

    def duplicates(self) -> list[tuple[str, int, str, int, tuple[str, int, int]]]:
        """(file, record, file of the first copy, its record, key) of each copy after the first
        (first in the order added: the copy a repair keeps)."""
        task, level, episode, file, record = (np.asarray(c, np.int64) for c in self.cols)
        order = np.lexsort((np.arange(len(task)), episode, level, task))
        k = np.stack([task, level, episode])[:, order]
        same = np.r_[False, (k[:, 1:] == k[:, :-1]).all(axis=0)]  # same key as the row before
        starts = np.flatnonzero(~same)
        dup = np.flatnonzero(same)
        first = order[starts[np.searchsorted(starts, dup, side="right") - 1]]
        tasks, files = list(self.tasks), list(self.files)
        return [(files[file[j]], int(record[j]), files[file[f]], int(record[f]),
                 (tasks[task[j]], int(level[j]), int(episode[j]))) for j, f in zip(order[dup], first)]

    def problems(self) -> list[Problem]:
        return [Problem(file, rec, f"duplicate of episode ({t}, level {lv}, episode {e}), stored first at "
                                   f"{first}: record {first_rec}")
                for file, rec, first, first_rec, (t, lv, e) in self.duplicates()]


def count_records(path: str | os.PathLike) -> int:
    """Records ``verify_store`` will check (from the index fragments; for a progress bar)."""
    root = check_store(path)
    total = 0
    for frag in (root / INDEX).glob(f"*{INDEX_EXT}"):
        try:
            total += len(read_fragment(frag)[1])
        except CorruptIndex:
            pass  # verify_store reports it
    return total


def verify_store(path: str | os.PathLike, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Read and check every record of the store at ``path``; IcrlError if it is not a store.

    ``progress(n)`` is called as records are checked.
    """
    root = check_store(path)
    report = VerifyReport()
    indexed: set[str] = set()
    keys = KeyTable()
    for frag in sorted((root / INDEX).glob(f"*{INDEX_EXT}")):
        stem = frag.name[: -len(INDEX_EXT)]
        indexed.add(stem)
        try:
            head, refs = read_fragment(frag)
        except CorruptIndex as err:
            line = "" if err.line is None else f"line {err.line}: "
            report.problems.append(Problem(str(frag), None, f"{line}{err.detail} (corrupt index)"))
            continue
        if head["shard"] != shard_rel(stem):
            report.problems.append(Problem(str(frag), None, f"header names shard {head['shard']!r}, "
                                                            f"expected {shard_rel(stem)!r}"))
            continue
        shard = root / shard_rel(stem)
        report.shards += 1
        if not shard.is_file():
            report.problems.append(Problem(str(shard), None, f"shard is missing (listed by {frag.name})"))
            continue
        _verify_shard(shard, refs, report, progress)
        keys.add(str(shard), refs)

    journal_stems = set()
    for wal in sorted((root / WAL).glob(f"*{WAL_EXT}")):
        stem = wal.name[: -len(WAL_EXT)]
        journal_stems.add(stem)
        if stem in indexed:
            report.notes.append(f"{wal}: journal already sealed (recovery removes it)")
            continue
        report.journals += 1
        try:
            refs = _verify_journal(wal, shard_rel(stem), report, progress)
        except FileNotFoundError:
            report.notes.append(f"{wal}: sealed while verifying")
            continue
        keys.add(str(wal), refs)

    for shard in sorted((root / SHARDS).glob(f"*{SHARD_EXT}")):
        stem = shard.name[: -len(SHARD_EXT)]
        if stem in indexed:
            continue
        if stem in journal_stems:
            report.notes.append(f"{shard}: partly sealed; its journal is intact (recovery re-seals it)")
        else:
            report.problems.append(Problem(str(shard), None, "shard has no index fragment (its episodes are not in "
                                                             "the index)"))
    report.problems += keys.problems()
    for sub in (SHARDS, INDEX, WAL):
        for tmp in sorted((root / sub).glob(f"*{TMP_EXT}")):
            report.notes.append(f"{tmp}: leftover of an interrupted seal (ignored)")
    return report
