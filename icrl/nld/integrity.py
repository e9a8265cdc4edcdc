"""Cheap and full integrity checks of ``.bz2`` ttyrecs.

nle's ttyrec converter stops without a word at the first bz2 error: a truncated or damaged file
decodes to fewer frames, or none, and ``TtyrecDataset`` moves on to the next game. icrl therefore
checks files itself, at two costs:

- ``quick_problem`` (O(1), reads 15 bytes): the stream header (``BZh1``-``BZh9``) and the
  end-of-stream marker (48-bit magic ``0x177245385090`` + 32-bit CRC, then 0-7 zero padding bits
  to the byte boundary) at the very end. A file cut short anywhere (an interrupted download or
  copy) lacks the marker.
- ``full_problem`` (decompresses the whole file; see benchmarks/nld_throughput.py for its cost):
  bzip2's per-block CRCs catch damage inside the file as well.
"""

from __future__ import annotations

import bz2
import os

_EOS_MAGIC = 0x177245385090
_TAIL = 11  # 80 bits of marker + CRC, plus up to 7 padding bits, fit in 11 bytes


def quick_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the bz2 file at ``path`` by its header and tail, or None if they look right."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(0, size - _TAIL))
            tail = f.read(_TAIL)
    except FileNotFoundError:
        return "file is missing"
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if len(head) < 4 or head[:3] != b"BZh" or head[3:4] not in b"123456789":
        return "not a bz2 file (bad header)"
    if size < 14:
        return "truncated bz2 file (shorter than an empty stream)"
    bits = int.from_bytes(tail, "big")
    for pad in range(8):
        if bits & ((1 << pad) - 1) == 0 and (bits >> (pad + 32)) & ((1 << 48) - 1) == _EOS_MAGIC:
            return None
    return "truncated bz2 file (no end-of-stream marker)"


def full_problem(path: str | os.PathLike, chunk: int = 1 << 20) -> str | None:
    """Decompress the whole file and report the first bz2 error (CRC, truncation), or None."""
    quick = quick_problem(path)
    if quick is not None:
        return quick
    try:
        with bz2.open(path, "rb") as f:
            while f.read(chunk):
                pass
    except (OSError, EOFError, ValueError) as err:
        return f"corrupt bz2 data ({err})"
    return None
