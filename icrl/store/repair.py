"""``icrl data repair STORE``: make a damaged store agree with itself again; set aside, never delete.

Holding the store's write lock (no writer runs meanwhile), in this order:

1. **Journals.** Journals of dead writers are sealed (``recover_journals``). A damaged journal (a
   frame that does not scan, or whose checksum fails) keeps its frames *before* the damage: they
   are sealed into its shard, and its bytes from the damage on are copied to
   ``damaged/wal/<stem>.from-byte-<N>.wal`` first.
2. **Shards and fragments.** Every shard's records are read and checked against its fragment:
   - no fragment (deleted), or a corrupt one: the fragment is rebuilt from the shard, whose records
     describe their episodes (``icrl.store.codec``);
   - records that are unreadable, fail their checksum or do not decode: the shard is rewritten
     without them (the original is copied to ``damaged/shards/`` first) and re-indexed;
   - no shard, or nothing readable in it (truncated): shard and fragment move to ``damaged/``;
     the episodes they listed are reported lost, and ``icrl collect`` can play them again.
3. **Duplicates.** An episode (task, level, episode) stored more than once keeps its first copy,
   in shard-name order as ``icrl data verify`` lists them; shards holding the other copies are
   rewritten without them (originals to ``damaged/shards/``).

Every file that leaves the store, or is rewritten, is first in ``damaged/`` (mirroring ``shards/``,
``index/``, ``wal/``; a name taken by other contents gets ``.1``, ``.2``...), and
``damaged/repair-log.jsonl`` gets a line per action. Nothing under ``damaged/`` is read as part
of the store.

Killed at any point, the store is consistent or is made so by running repair again: files are
replaced atomically, a rewritten shard's original is in ``damaged/`` before it is replaced, and
each step re-derives what to do from the files (a shard replaced but not yet re-indexed disagrees
with its fragment, which step 2 rebuilds). A record whose checksum matches its index row is
trusted without decoding it (the checksum was taken when it was written).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path

from icrl.errors import IcrlError
from icrl.store.codec import RecordError, decode_episode, raw_nbytes, record_crc
from icrl.store.index import CorruptIndex, EpisodeRef, fragment_text, parse_row, read_fragment
from icrl.store.journal import frame_starts, read_frame, scan_journal
from icrl.store.layout import (INDEX, INDEX_EXT, SHARD_EXT, SHARDS, TMP_EXT, WAL, WAL_EXT, check_store,
                               close_reader, fsync_path, open_shard_reader, recover_journals, seal_journal,
                               shard_rel, write_durably, write_shard)
from icrl.store.lock import WriteLock
from icrl.store.verify import KeyTable

DAMAGED = "damaged"
LOG = "repair-log.jsonl"


@dataclasses.dataclass
class RepairReport:
    """What a repair did. ``actions``: one line per file changed; ``set_aside``: files written
    into ``damaged/``; ``lost``: episodes the index listed that are nowhere readable now;
    ``left``: problems it could not repair."""

    root: Path
    episodes: int = 0  # episodes indexed after the repair
    actions: list[str] = dataclasses.field(default_factory=list)
    set_aside: list[str] = dataclasses.field(default_factory=list)
    records_set_aside: int = 0  # damaged records and duplicates taken out of shards
    lost: int = 0
    left: list[str] = dataclasses.field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class _Repair:
    def __init__(self, root: Path, report: RepairReport):
        self.root, self.report = root, report

    # ------------------------------------------------------------------ damaged/

    def _log(self, action: str, file: Path, reason: str, moved_to: Path | None = None) -> None:
        line = f"{action} {file}: {reason}" + (f" (kept as {moved_to})" if moved_to else "")
        self.report.actions.append(line)
        entry = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "action": action,
                 "file": str(file.relative_to(self.root)), "reason": reason}
        if moved_to is not None:
            entry["kept_as"] = str(moved_to.relative_to(self.root))
        log = self.root / DAMAGED / LOG
        log.parent.mkdir(exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _aside_path(self, sub: str, name: str, data: bytes) -> tuple[Path, bool]:
        """Where ``data`` goes under damaged/<sub>/, and whether it is there already (a rerun)."""
        folder = self.root / DAMAGED / sub
        folder.mkdir(parents=True, exist_ok=True)
        dest, n = folder / name, 0
        while dest.exists():
            if dest.stat().st_size == len(data) and dest.read_bytes() == data:
                return dest, True
            n += 1
            dest = folder / f"{name}.{n}"
        return dest, False

    def keep_copy(self, path: Path, sub: str, data: bytes | None = None, name: str | None = None) -> Path:
        """Copy ``path`` (or ``data``) durably into damaged/<sub>/ unless an identical copy is there."""
        data = path.read_bytes() if data is None else data
        dest, there = self._aside_path(sub, name or path.name, data)
        if not there:
            write_durably(dest, data)
            self.report.set_aside.append(str(dest))
        return dest

    def move_aside(self, path: Path, sub: str, reason: str) -> None:
        """Take ``path`` out of the store into damaged/<sub>/ (kept, not deleted)."""
        dest = self.keep_copy(path, sub)
        path.unlink()  # its bytes are in ``dest`` now
        fsync_path(path.parent)
        self._log("moved", path, reason, dest)

    # ------------------------------------------------------------------ 1. journals

    def journals(self) -> None:
        recover_journals(self.root)  # intact journals of dead writers: sealed as they are
        for wal in sorted((self.root / WAL).glob(f"*{WAL_EXT}")):
            try:
                fd = os.open(wal, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self.report.left.append(f"{wal}: in use by a live writer (not under the store's lock); left alone")
                    continue
                self._salvage(wal, fd)
            finally:
                os.close(fd)

    def _salvage(self, wal: Path, fd: int) -> None:
        stem = wal.name[: -len(WAL_EXT)]
        scan = scan_journal(fd, shard_rel(stem), str(wal))
        good, why = len(scan.refs), scan.damage
        for i, (ref, start) in enumerate(zip(scan.refs, frame_starts(scan))):
            _, record, crc_ok = read_frame(fd, start)
            if not crc_ok or record_crc(record) != ref.crc32:
                good, why = i, f"{wal}: byte {start} (frame {i}): frame checksum mismatch"
                break
        if why is None:
            return  # not damaged (sealed by recover_journals unless its seal failed otherwise)
        start = frame_starts(scan)[good] if good < len(scan.refs) else scan.end
        size = os.fstat(fd).st_size
        tail = os.pread(fd, size - start, start)
        dest = self.keep_copy(wal, WAL, tail, f"{stem}.from-byte-{start}{WAL_EXT}")
        seal_journal(self.root, stem, fd, {"salvaged": True}, frames=good)
        self._log("salvaged", wal, f"kept its {good} episodes before the damage ({why}); "
                                   f"bytes {start}..{size} set aside", dest)

    # ------------------------------------------------------------------ 2. shards and fragments

    def shards(self) -> None:
        stems = {p.name[: -len(SHARD_EXT)] for p in (self.root / SHARDS).glob(f"*{SHARD_EXT}")}
        stems |= {p.name[: -len(INDEX_EXT)] for p in (self.root / INDEX).glob(f"*{INDEX_EXT}")}
        live = {p.name[: -len(WAL_EXT)] for p in (self.root / WAL).glob(f"*{WAL_EXT}")}
        for stem in sorted(stems - live):
            self._check(stem)

    def _rows(self, frag: Path, stem: str) -> tuple[dict | None, dict[int, EpisodeRef], bool]:
        """(header, rows by record number, whether the fragment parsed cleanly) of a fragment,
        reading what it can of a corrupt one."""
        try:
            head, refs = read_fragment(frag)
            if head["shard"] == shard_rel(stem):
                return head, {r.offset: r for r in refs}, True
        except CorruptIndex:
            pass
        head, rows = None, {}
        try:
            lines = frag.read_text(encoding="utf-8", errors="replace").split("\n")
        except OSError:
            return None, {}, False
        for i, line in enumerate(lines):
            try:
                obj = json.loads(line)
                if i == 0 and isinstance(obj, dict) and "format" in obj:
                    head = obj
                    continue
                ref = parse_row(obj, shard_rel(stem), f"{frag}:{i + 1}")
                rows[ref.offset] = ref
            except (json.JSONDecodeError, IcrlError):
                continue
        return head, rows, False

    def _records(self, shard: Path) -> list[bytes | None] | None:
        """Every record of a shard (None where unreadable); None if the shard does not open."""
        try:
            reader = open_shard_reader(shard)
        except RuntimeError:
            return None
        try:
            out: list[bytes | None] = []
            for i in range(reader.num_records()):
                try:
                    out.append(reader.read([i])[0])
                except (RuntimeError, IndexError, ValueError):
                    out.append(None)
            return out
        finally:
            close_reader(reader)

    def _check(self, stem: str) -> None:
        shard, frag = self.root / shard_rel(stem), self.root / INDEX / f"{stem}{INDEX_EXT}"
        head, rows, clean = self._rows(frag, stem) if frag.exists() else (None, {}, False)
        records = self._records(shard) if shard.exists() else None
        if records is None:
            what = "is missing" if not shard.exists() else "does not open"
            self.report.lost += len(rows)
            if frag.exists():
                self.move_aside(frag, INDEX, f"its shard {shard.name} {what}: {len(rows)} episodes lost")
            if shard.exists():
                self.move_aside(shard, SHARDS, f"the shard does not open: {len(rows)} episodes lost")
            return
        known = {r.crc32 for r in rows.values()} if clean else None
        kept: list[tuple[bytes, EpisodeRef]] = []
        dropped: list[str] = []
        for i, record in enumerate(records):
            ref, why = self._judge(stem, i, record, rows.get(i), known)
            if ref is None:
                dropped.append(f"record {i} ({why})")
            else:
                kept.append((record, ref))
        in_place = not dropped
        refs_ok = clean and in_place and len(rows) == len(records) and all(
            rows[i] == ref for i, (_, ref) in enumerate(kept))
        if refs_ok:
            return
        kept_crcs = {ref.crc32 for _, ref in kept}
        self.report.lost += sum(r.crc32 not in kept_crcs for r in rows.values())
        self.report.records_set_aside += len(dropped)
        reason = ["the shard had no index fragment" if not frag.exists() else
                  "its index fragment was corrupt" if not clean else ""]
        reason.append(f"set aside {', '.join(dropped)}" if dropped else "")
        reason.append(f"kept {len(kept)} of the {len(rows)} episodes its index listed" if rows and clean
                      else f"kept its {len(kept)} episodes")
        self._rewrite(stem, kept, head, rewrite_shard=not in_place, reason="; ".join(r for r in reason if r))

    def _judge(self, stem: str, i: int, record: bytes | None, row: EpisodeRef | None,
               known: set[int] | None) -> tuple[EpisodeRef | None, str]:
        """(the ref of record ``i`` at its place in the shard, or None; why it is not kept)."""
        if record is None:
            return None, "unreadable"
        crc = record_crc(record)
        if row is not None and row.crc32 == crc and row.nbytes == len(record):
            return row, ""
        try:
            ep = decode_episode(record)
        except RecordError as err:
            return None, f"does not decode: {err}"
        if known is not None and crc not in known:
            # The fragment is sound but lists no record with these bytes: damage that decoded.
            return None, "checksum matches no row of its index"
        return EpisodeRef(
            task=ep.task, level=int(ep.level), episode=int(ep.episode), domain=ep.domain, source=ep.source,
            length=ep.length, ret=ep.ret, success=ep.success, terminated=bool(ep.terminated),
            truncated=bool(ep.truncated), has_actions=bool(ep.has_actions), shard=shard_rel(stem), offset=i,
            nbytes=len(record), raw_bytes=raw_nbytes(ep), crc32=crc), ""

    def _rewrite(self, stem: str, kept: list[tuple[bytes, EpisodeRef]], head: dict | None, *,
                 rewrite_shard: bool, reason: str) -> None:
        """Make shard ``stem`` hold ``kept`` (in order) and its fragment list them."""
        shard, frag = self.root / shard_rel(stem), self.root / INDEX / f"{stem}{INDEX_EXT}"
        if not kept:
            if frag.exists():
                self.move_aside(frag, INDEX, reason)
            self.move_aside(shard, SHARDS, reason)
            return
        refs = [dataclasses.replace(ref, offset=i) for i, (_, ref) in enumerate(kept)]
        header = {k: v for k, v in (head or {}).items() if k in ("writer", "compression", "recovered", "salvaged")}
        if rewrite_shard:
            copy = self.keep_copy(shard, SHARDS)
            write_shard(shard, (record for record, _ in kept))
            self._log("rewrote", shard, reason, copy)
        copy = self.keep_copy(frag, INDEX) if frag.exists() else None
        write_durably(frag, fragment_text(shard_rel(stem), refs, **header, repaired=True).encode())
        self._log("reindexed", frag, reason if not rewrite_shard else f"rebuilt from {shard.name}", copy)

    # ------------------------------------------------------------------ 3. duplicates

    def duplicates(self) -> None:
        keys = KeyTable()
        fragments = {}
        for frag in sorted((self.root / INDEX).glob(f"*{INDEX_EXT}")):
            try:
                head, refs = read_fragment(frag)
            except CorruptIndex:
                continue  # only a fragment step 2 left alone (its journal is live) can be corrupt
            stem = frag.name[: -len(INDEX_EXT)]
            fragments[str(self.root / shard_rel(stem))] = (stem, head, refs)
            keys.add(str(self.root / shard_rel(stem)), refs)
        drop: dict[str, dict[int, str]] = {}
        for file, record, first, first_rec, key in keys.duplicates():
            drop.setdefault(file, {})[record] = f"{first}: record {first_rec}"
        for file, records in drop.items():
            stem, head, refs = fragments[file]
            shard_records = self._records(Path(file)) or []
            kept = [(shard_records[r.offset], r) for r in refs if r.offset not in records]
            self.report.records_set_aside += len(records)
            self._rewrite(stem, kept, head, rewrite_shard=True,
                          reason=f"set aside {len(records)} duplicate episodes (first copies kept, e.g. at "
                                 f"{next(iter(records.values()))}); {len(kept)} episodes kept")


def count_indexed(root: Path) -> int:
    """Episodes the sound fragments of ``root`` list."""
    total = 0
    for frag in (root / INDEX).glob(f"*{INDEX_EXT}"):
        try:
            total += len(read_fragment(frag)[1])
        except CorruptIndex:
            pass
    return total


def repair_store(path: str | os.PathLike, *, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None) -> RepairReport:
    """Repair the store at ``path`` (see the module docstring); IcrlError if it is not a store,
    StoreLocked if another command is writing it (with ``wait``: ``on_wait(holder)``, then wait)."""
    root = check_store(path)
    report = RepairReport(root)
    with WriteLock.acquire(root, wait=wait, on_wait=on_wait):
        fix = _Repair(root, report)
        fix.journals()
        fix.shards()
        fix.duplicates()
        for sub in (SHARDS, INDEX):
            for tmp in (root / sub).glob(f"*{TMP_EXT}"):
                fix.move_aside(tmp, sub, "leftover of an interrupted write")
        report.episodes = count_indexed(root)
    return report

