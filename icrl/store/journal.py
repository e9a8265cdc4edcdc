"""A writer's journal: the append-only file that makes each episode durable the moment it is added.

ArrayRecord writes nothing readable until its writer closes (a killed writer leaves an empty file),
so a writer first appends every episode to its journal ``wal/<stem>.wal`` and only later seals the
journal into the ArrayRecord shard ``shards/<stem>.arrayrecord`` (see ``icrl.store.reader``).

Frame layout (little-endian), one frame per episode::

    offset  size  field
    0       4     magic b"ICWF"
    4       4     meta_len
    8       8     record_len
    16      4     CRC-32 of meta + record
    20      ...   meta: UTF-8 JSON index row of the episode (``icrl.store.index.row_dict``)
    20+m    ...   record: the encoded episode (``icrl.store.codec``)

A frame is written with one ``write`` on an O_APPEND descriptor, so a process killed mid-append
leaves at most one incomplete frame, at the end: scanning stops there ("torn tail") and that
unfinished episode is simply not in the store. A complete frame whose magic or metadata is wrong is
damage, reported with the file and byte offset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib

from icrl.store.index import EpisodeRef, parse_row, row_dict
from icrl.errors import IcrlError

FRAME_MAGIC = b"ICWF"
_FRAME = struct.Struct("<4sIQI")  # magic, meta_len, record_len, crc32(meta + record)
FRAME_HEADER_SIZE = _FRAME.size


def frame_bytes(ref: EpisodeRef, record: bytes) -> bytes:
    """The journal frame for an episode's index row and encoded record."""
    meta = json.dumps(row_dict(ref), separators=(",", ":")).encode()
    crc = zlib.crc32(record, zlib.crc32(meta)) & 0xFFFFFFFF
    return _FRAME.pack(FRAME_MAGIC, len(meta), len(record), crc) + meta + record


@dataclasses.dataclass
class JournalScan:
    """What a scan of a journal found.

    ``refs[i]`` is frame i's row (shard = the journal's future shard, offset = i); its record
    starts at byte ``record_offsets[i]`` of the journal. ``torn_bytes`` counts the bytes of an
    incomplete last frame (an episode whose append never finished). ``damage`` is None, or a
    message naming the byte offset of the first frame that is complete but wrong; scanning stops
    there.
    """

    refs: list[EpisodeRef]
    record_offsets: list[int]
    end: int  # byte offset just past the last complete frame
    torn_bytes: int = 0
    damage: str | None = None


def scan_journal(fd: int, shard: str, display: str) -> JournalScan:
    """Read the frame headers and metadata of an open journal (records are skipped, not read).

    ``shard`` is the store-relative shard the journal seals into; ``display`` names the file in
    messages.
    """
    size = os.fstat(fd).st_size
    scan = JournalScan(refs=[], record_offsets=[], end=0)
    pos = 0
    while pos < size:
        if size - pos < FRAME_HEADER_SIZE:
            scan.torn_bytes = size - pos
            break
        magic, meta_len, record_len, _ = _FRAME.unpack(os.pread(fd, FRAME_HEADER_SIZE, pos))
        if magic != FRAME_MAGIC:
            scan.damage = f"{display}: byte {pos} (frame {len(scan.refs)}): bad frame magic {magic!r}"
            break
        frame_end = pos + FRAME_HEADER_SIZE + meta_len + record_len
        if frame_end > size:
            scan.torn_bytes = size - pos
            break
        meta = os.pread(fd, meta_len, pos + FRAME_HEADER_SIZE)
        where = f"{display}: byte {pos} (frame {len(scan.refs)})"
        try:
            ref = parse_row(json.loads(meta), shard, where)
        except (UnicodeDecodeError, json.JSONDecodeError):
            scan.damage = f"{where}: frame metadata is not JSON"
            break
        except IcrlError as err:
            scan.damage = str(err)
            break
        if ref.offset != len(scan.refs) or ref.nbytes != record_len:
            scan.damage = f"{where}: frame metadata does not match its position or length"
            break
        scan.refs.append(ref)
        scan.record_offsets.append(pos + FRAME_HEADER_SIZE + meta_len)
        pos = scan.end = frame_end
    return scan


def read_frame(fd: int, frame_start: int) -> tuple[bytes, bytes, bool]:
    """(meta, record, crc_ok) of the complete frame starting at byte ``frame_start``."""
    _, meta_len, record_len, crc = _FRAME.unpack(os.pread(fd, FRAME_HEADER_SIZE, frame_start))
    body = os.pread(fd, meta_len + record_len, frame_start + FRAME_HEADER_SIZE)
    ok = len(body) == meta_len + record_len and (zlib.crc32(body) & 0xFFFFFFFF) == crc
    return body[:meta_len], body[meta_len:], ok


def frame_starts(scan: JournalScan) -> list[int]:
    """Byte offset of each complete frame (frames are back to back from byte 0)."""
    starts, pos = [], 0
    for ref, rec_off in zip(scan.refs, scan.record_offsets):
        starts.append(pos)
        pos = rec_off + ref.nbytes
    return starts

