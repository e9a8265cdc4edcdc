"""Episode (de)serialisation: one episode <-> one self-describing, compressed record (bytes).

Record layout (little-endian)::

    offset  size  field
    0       4     magic b"ICEP"
    4       1     format version (1)
    5       1     compression id (1 = zlib, 2 = lzma, 3 = zstd)
    6       2     reserved (0)
    8       4     meta_len: length of the JSON metadata that follows
    12      ...   meta: UTF-8 JSON {domain, task, level, source, episode, terminated, truncated,
                  has_actions, arrays: [[name, dtype, shape, delta], ...]}
    12+m    ...   body: the compressed concatenation of the arrays' bytes, in ``arrays`` order

Array names are ``obs/<key>`` for observations, ``actions`` [T] int32 and ``rewards`` [T] float32.
A record carries its own metadata so a shard can be re-indexed, and verified, from its records
alone. The checksum of a record (``record_crc``, CRC-32 of all its bytes) is kept in the index
and in journal frames, not in the record, so a reader checks it before decoding.

Why XOR deltas for tty arrays: consecutive NetHack screens differ in a handful of cells, so
``frame[t] ^ frame[t-1]`` is almost all zeros. Measured on 300-step MiniHack tty episodes
(chars + colours + cursor): zlib-6 compresses raw frames 120-150x and XOR deltas 840-860x;
lzma-2 reaches 2200x on deltas. Procgen RGB frames scroll, so deltas hurt there (zlib-6 15x raw
vs 8.6x on deltas) and RGB is stored as is; lzma-2 gets 40x on it.

Why lzma preset 2 is the default: it is 2.6x smaller than zlib-6 on both domains, decompresses at
a similar 300-450 MB/s of raw arrays, and compresses at 45-70 MB/s (12k-18k tty steps/s per
core), far above the rate environments produce steps. ``zlib`` (level 6, ~3x faster to write)
was the first choice for bulk ingest where write speed matters more than disk.

Why zstd (level 3) for bulk ingest (NLD): on XOR deltas of NLD-format screens it compresses at
~850k frames/s per core against zlib-1's ~155k, and is smaller (39 vs 67 bytes/frame; lzma-2 29),
measured on the quickstart's converted games. Conversion competes with nle's decoder for the
CPU, so the codec's cost decides how close conversion gets to raw ``TtyrecDataset`` speed.
"""

from __future__ import annotations

import json
import lzma
import struct
import zlib
from collections.abc import Callable

import numpy as np
import zstandard

from icrl.store.episode import OBS_SPECS, Episode

MAGIC = b"ICEP"
VERSION = 1
_HEAD = struct.Struct("<4sBBHI")  # magic, version, compression id, reserved, meta_len

# Observation keys stored as XOR deltas along time (see the module docstring for why).
DELTA_KEYS: frozenset[str] = frozenset({"tty_chars", "tty_colors", "tty_cursor"})

_Compress = Callable[[bytes], bytes]
_Decompress = Callable[[bytes], bytes]
COMPRESSIONS: dict[str, tuple[int, _Compress, _Decompress]] = {
    "zlib": (1, lambda b: zlib.compress(b, 6), zlib.decompress),
    # zlib level 1: about 2x faster to write than level 6 and ~1.7x larger; for bulk ingest (NLD),
    # where compression competes with decoding for the CPU. Same record id: level 6 decodes it.
    "zlib1": (1, lambda b: zlib.compress(b, 1), zlib.decompress),
    "lzma": (2, lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, preset=2), lzma.decompress),
    # A (de)compressor object per call: zstandard's objects must not be shared between threads, and
    # making one costs microseconds against the milliseconds of an episode.
    "zstd": (3, lambda b: zstandard.ZstdCompressor(level=3).compress(b),
             lambda b: zstandard.ZstdDecompressor().decompress(b)),
}
_BY_ID: dict[int, tuple[str, _Decompress]] = {}
for _name, (_cid, _, _dec) in COMPRESSIONS.items():
    _BY_ID.setdefault(_cid, (_name, _dec))  # zlib and zlib1 share a record id: reported as "zlib"
DEFAULT_COMPRESSION = "lzma"


class RecordError(ValueError):
    """A record's bytes do not decode: wrong magic or version, bad metadata, wrong sizes."""


def record_crc(record: bytes) -> int:
    """CRC-32 (zlib's) of a record, as an unsigned int."""
    return zlib.crc32(record) & 0xFFFFFFFF


def _widest_word(row_bytes: int) -> type:
    """The widest unsigned int type whose size divides ``row_bytes``: XOR on 8-byte words is an
    order of magnitude faster than on bytes."""
    return next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8) if row_bytes % np.dtype(w).itemsize == 0)


def _xor_delta(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """[T, ...] 1-byte ints -> d with d[0] = a[0], d[t] = a[t] ^ a[t-1] (as uint8), in one pass.

    ``out``: a flat uint8 buffer of ``a.nbytes`` to write into (returned as [T, ...]).
    """
    flat = np.ascontiguousarray(a).view(np.uint8).reshape(len(a) if a.ndim else 1, -1)
    d = np.empty(flat.shape, np.uint8) if out is None else out.reshape(flat.shape)
    if len(flat) < 2:
        d[...] = flat
    else:
        word = _widest_word(flat.shape[1])
        w, dw = flat.view(word), d.view(word)
        dw[0] = w[0]
        np.bitwise_xor(w[1:], w[:-1], out=dw[1:])
    return d.reshape(a.shape)


def _undo_xor_delta(d: np.ndarray) -> np.ndarray:
    """Inverse of ``_xor_delta``: the running XOR along time telescopes back to the frames.

    XORing 8 bytes at a time (the widest word that divides a frame) is ~12x faster than on bytes:
    [100, 24, 80] uint8 takes ~0.11 ms instead of ~1.35 ms.
    """
    if d.ndim == 0 or len(d) < 2:
        return d.copy()
    flat = np.ascontiguousarray(d).reshape(len(d), -1)
    return np.bitwise_xor.accumulate(flat.view(_widest_word(flat.shape[1])), axis=0).view(np.uint8).reshape(d.shape)


def _arrays(ep: Episode) -> list[tuple[str, np.ndarray]]:
    arrays = [(f"obs/{k}", ep.observations[k]) for k in OBS_SPECS[ep.domain]]
    return arrays + [("actions", ep.actions), ("rewards", ep.rewards)]


def raw_nbytes(ep: Episode) -> int:
    """Bytes of the episode's arrays uncompressed: the denominator of the compression ratio."""
    return sum(a.nbytes for _, a in _arrays(ep))


def encode_episode(ep: Episode, compression: str = DEFAULT_COMPRESSION) -> bytes:
    """Serialise and compress a (valid) episode into one record. Raises ValueError on a bad episode."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; choose from {sorted(COMPRESSIONS)}")
    ep.validate()
    cid, compress, _ = COMPRESSIONS[compression]
    arrays = [(name, np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))) for name, a in _arrays(ep)]
    # One body buffer, each array (or its delta) written straight into its slice: no per-array
    # copies and no join; the compressor reads the buffer in place.
    body = np.empty(sum(a.nbytes for _, a in arrays), np.uint8)
    specs, pos = [], 0
    for name, arr in arrays:
        delta = name.startswith("obs/") and name[4:] in DELTA_KEYS and arr.dtype.itemsize == 1
        chunk = body[pos : pos + arr.nbytes]
        if delta:
            _xor_delta(arr, out=chunk)
        else:
            chunk[:] = arr.reshape(-1).view(np.uint8)
        pos += arr.nbytes
        specs.append([name, arr.dtype.str, list(arr.shape), delta])
    meta = {
        "domain": ep.domain,
        "task": ep.task,
        "level": int(ep.level),
        "source": ep.source,
        "episode": int(ep.episode),
        "terminated": bool(ep.terminated),
        "truncated": bool(ep.truncated),
        "has_actions": bool(ep.has_actions),
        "arrays": specs,
    }
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, VERSION, cid, 0, len(meta_bytes)) + meta_bytes + compress(body)


def record_meta(record: bytes) -> dict:
    """The record's JSON metadata (without decompressing the body). Raises RecordError."""
    if len(record) < _HEAD.size:
        raise RecordError(f"record of {len(record)} bytes is shorter than its {_HEAD.size}-byte header")
    magic, version, cid, _, meta_len = _HEAD.unpack_from(record)
    if magic != MAGIC:
        raise RecordError(f"bad record magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise RecordError(f"record format version {version} is not supported (expected {VERSION})")
    if cid not in _BY_ID:
        raise RecordError(f"unknown compression id {cid}")
    try:
        meta = json.loads(record[_HEAD.size : _HEAD.size + meta_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"record metadata is not JSON: {err}") from None
    meta["compression"] = _BY_ID[cid][0]
    meta["_body_offset"] = _HEAD.size + meta_len
    return meta


def decode_episode(record: bytes) -> Episode:
    """Inverse of ``encode_episode``. Raises RecordError if the bytes are not a valid record."""
    meta = record_meta(record)
    _, decompress = _BY_ID[COMPRESSIONS[meta["compression"]][0]]
    try:
        body = decompress(record[meta["_body_offset"] :])
    except (zlib.error, lzma.LZMAError, zstandard.ZstdError, EOFError) as err:
        raise RecordError(f"record body does not decompress: {err}") from None
    arrays: dict[str, np.ndarray] = {}
    pos = 0
    try:
        for name, dtype_str, shape, delta in meta["arrays"]:
            dtype = np.dtype(dtype_str)
            count = int(np.prod(shape, dtype=np.int64))
            if pos + count * dtype.itemsize > len(body):
                raise RecordError(f"record body too short for array {name} {shape}")
            if delta:
                flat = np.frombuffer(body, np.uint8, count, pos).reshape(shape)
                arr = _undo_xor_delta(flat).view(dtype)
            else:
                arr = np.frombuffer(body, dtype, count, pos).reshape(shape).copy()
            arrays[name] = arr.astype(dtype.newbyteorder("="), copy=False)
            pos += count * dtype.itemsize
        if pos != len(body):
            raise RecordError(f"record body has {len(body) - pos} bytes beyond its arrays")
        ep = Episode(
            domain=meta["domain"],
            task=meta["task"],
            level=int(meta["level"]),
            source=meta["source"],
            observations={k[4:]: v for k, v in arrays.items() if k.startswith("obs/")},
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            terminated=bool(meta["terminated"]),
            truncated=bool(meta["truncated"]),
            has_actions=bool(meta["has_actions"]),
            episode=int(meta["episode"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, RecordError):
            raise
        raise RecordError(f"record metadata is malformed: {err!r}") from None
    try:
        ep.validate()
    except ValueError as err:
        raise RecordError(str(err)) from None
    return ep
