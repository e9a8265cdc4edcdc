"""Write an NLD-NAO (alt.org) format copy of an NLE recording, for tests and the quickstart.

NLD-NAO holds what alt.org's server recorded: plain ttyrecs (version 1: terminal output only, no
keypresses, no scores), one directory per player, games listed in ``xlogfile.<n>`` and matched to
ttyrecs by time (``nle.dataset.populate_db.add_altorg_directory``)::

    OUT/
    ├── xlogfile.1                            tab-separated xlogfile lines (as alt.org's)
    ├── blacklist.txt                         ttyrecs to leave out (empty here)
    └── agent/
        ├── 2020-01-01.00:00:01.ttyrec.bz2    one game; the name is its start time (UTC)
        └── 2020-01-01.01:00:01.ttyrec.bz2

A ttyrec v3 record is ``<sec, usec, len>`` (int32 little-endian) + a channel byte (0 output,
1 input, 2 score) + ``len`` bytes; a v1 record is the same without the channel byte. Keeping only
the output records gives exactly the screens a v1 recording of the same game would hold.
Games are re-timed one hour apart (``starttime``/``endtime`` in the xlogfile, the ttyrec names)
because nle assigns a player's ttyrecs to games by time, and the sample's games all start within
seconds of each other.
"""

from __future__ import annotations

import bz2
import datetime
import os
import struct
from pathlib import Path

from icrl.errors import IcrlError

_V3_HEAD = struct.Struct("<iiiB")
_V1_HEAD = struct.Struct("<iii")
EPOCH = 1577836800  # 2020-01-01T00:00:00Z: start of the re-timed games
PLAYER = "agent"


def ttyrec_v3_to_v1(data: bytes) -> bytes:
    """Decompressed ttyrec v3 bytes -> ttyrec v1 bytes (output records only)."""
    out, i = bytearray(), 0
    while i < len(data):
        if i + _V3_HEAD.size > len(data):
            raise ValueError(f"truncated ttyrec v3 record header at byte {i}")
        sec, usec, length, channel = _V3_HEAD.unpack_from(data, i)
        i += _V3_HEAD.size
        if channel == 0:
            out += _V1_HEAD.pack(sec, usec, length) + data[i:i + length]
        i += length
    return bytes(out)


def _xlog_fields(line: str) -> dict[str, str]:
    return dict(field.split("=", 1) for field in line.rstrip("\n").split("\t") if "=" in field)


def write_altorg_copy(nle_dir: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the games of the NLE-format directory ``nle_dir`` (``<run>/*.xlogfile`` + ttyrec3s) as
    an NLD-NAO directory ``out`` (new or empty). Returns the number of games written."""
    src, dst = Path(nle_dir), Path(out)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise IcrlError(f"{dst}: exists and is not an empty directory")
    xlogs = sorted(src.glob("*/*.xlogfile"))
    if not xlogs:
        raise IcrlError(f"{src}: no <run>/*.xlogfile (not an NLE-format directory)")
    (dst / PLAYER).mkdir(parents=True)
    lines, n = [], 0
    for xlog in xlogs:
        for line in xlog.read_text(encoding="ascii").splitlines():
            fields = _xlog_fields(line)
            ttyrec = xlog.parent / fields.pop("ttyrecname", "")
            if not ttyrec.is_file():
                continue  # a game recorded without a ttyrec (save_ttyrec_every > 1)
            start = EPOCH + 3600 * n
            fields["starttime"], fields["endtime"] = str(start), str(start + 1800)
            fields["name"] = PLAYER
            stamp = datetime.datetime.fromtimestamp(start + 1, datetime.timezone.utc).strftime("%Y-%m-%d.%H:%M:%S")
            v1 = ttyrec_v3_to_v1(bz2.decompress(ttyrec.read_bytes()))
            (dst / PLAYER / f"{stamp}.ttyrec.bz2").write_bytes(bz2.compress(v1))
            lines.append("\t".join(f"{k}={v}" for k, v in fields.items()))
            n += 1
    (dst / "xlogfile.1").write_text("\n".join(lines) + "\n", encoding="ascii")
    (dst / "blacklist.txt").write_text("", encoding="ascii")
    return n
