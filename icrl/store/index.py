"""The store's index: one row per episode, on disk as JSONL fragments, in memory as columns.

On disk, each sealed shard ``shards/<stem>.arrayrecord`` has one fragment ``index/<stem>.jsonl``::

    {"format": "icrl-index", "version": 1, "shard": "shards/<stem>.arrayrecord", "records": N, ...}
    {"record": 0, "task": ..., "level": ..., "episode": ..., ...}     <- row of record 0
    ...                                                               <- N rows, in record order

A fragment is written to a temporary name, fsynced and renamed only after its shard is durable, so
a fragment exists only for a complete shard, and the header's ``records`` count exposes a shard
or fragment that lost records since.

In memory, ``StoreIndex`` keeps rows as numpy columns (~70 bytes a row, instead of ~500 for a
Python object a row) plus a dict ``(task, level) -> row ids``, so "episodes of task T, level L"
is one dict lookup and a store of millions of NLD segments fits in a reader's memory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from icrl.errors import IcrlError

INDEX_FORMAT = "icrl-index"
INDEX_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class EpisodeRef:
    """Where an episode is and what it is, without reading it: one index row.

    ``shard`` is the store-relative path of its ArrayRecord shard and ``offset`` its record number
    there. An episode still in a writer's journal (not yet sealed) already has the shard and record
    number it will have once sealed, so a ref stays valid across sealing.
    """

    task: str
    level: int
    episode: int
    domain: str
    source: str
    length: int  # steps T
    ret: float  # sum of rewards
    success: bool
    terminated: bool
    truncated: bool
    has_actions: bool
    shard: str  # e.g. "shards/collect-0.p123.ab12cd34.00000.arrayrecord"
    offset: int  # record number in the shard
    nbytes: int  # bytes of the encoded record
    raw_bytes: int  # bytes of the episode's arrays before compression
    crc32: int  # CRC-32 of the encoded record


# Row fields as written in fragments and journal frames (shard is implicit: the fragment's or
# journal's; offset is written as "record").
ROW_FIELDS: tuple[str, ...] = (
    "task", "level", "episode", "domain", "source", "length", "ret", "success", "terminated",
    "truncated", "has_actions", "nbytes", "raw_bytes", "crc32",
)
_INT_FIELDS = ("level", "episode", "length", "nbytes", "raw_bytes", "crc32")
_BOOL_FIELDS = ("success", "terminated", "truncated", "has_actions")
_STR_FIELDS = ("task", "domain", "source")


def row_dict(ref: EpisodeRef) -> dict:
    """The JSON-ready row of a ref (``record`` first, shard left out)."""
    return {"record": ref.offset, **{f: getattr(ref, f) for f in ROW_FIELDS}}


def parse_row(obj: object, shard: str, where: str) -> EpisodeRef:
    """A ref from a decoded JSON row; ``where`` (file:line) names the row in the error."""
    if not isinstance(obj, dict):
        raise IcrlError(f"{where}: index row is not a JSON object")
    try:
        for f in _STR_FIELDS:
            if not isinstance(obj[f], str):
                raise TypeError(f"field {f!r} must be a string, got {obj[f]!r}")
        for f in (*_INT_FIELDS, "record"):
            if not isinstance(obj[f], int) or isinstance(obj[f], bool):
                raise TypeError(f"field {f!r} must be an integer, got {obj[f]!r}")
        for f in _BOOL_FIELDS:
            if not isinstance(obj[f], bool):
                raise TypeError(f"field {f!r} must be true/false, got {obj[f]!r}")
        if not isinstance(obj["ret"], (int, float)) or isinstance(obj["ret"], bool):
            raise TypeError(f"field 'ret' must be a number, got {obj['ret']!r}")
        return EpisodeRef(
            **{f: obj[f] for f in ROW_FIELDS if f != "ret"}, ret=float(obj["ret"]),
            shard=shard, offset=obj["record"],
        )
    except KeyError as err:
        raise IcrlError(f"{where}: index row lacks field {err.args[0]!r}") from None
    except TypeError as err:
        raise IcrlError(f"{where}: bad index row: {err}") from None


def fragment_text(shard: str, refs: Sequence[EpisodeRef], **header: object) -> str:
    """The JSONL text of a shard's fragment (header line + one row a record, in record order)."""
    head = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "shard": shard, "records": len(refs), **header}
    lines = [json.dumps(head, separators=(",", ":"))]
    lines += [json.dumps(row_dict(r), separators=(",", ":")) for r in refs]
    return "\n".join(lines) + "\n"


class CorruptIndex(IcrlError):
    """An index fragment that does not parse: names the file and (1-based) line."""

    def __init__(self, path: str, line: int | None, detail: str):
        self.path, self.line, self.detail = path, line, detail
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {detail} (corrupt index; `icrl data repair` rebuilds it from its shard)")


def read_fragment(path: Path) -> tuple[dict, list[EpisodeRef]]:
    """Parse a fragment: (header, refs). Raises CorruptIndex naming the file and line of any damage."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CorruptIndex(name, None, "index fragment is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise CorruptIndex(name, None, "index fragment is empty")
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError as err:
        raise CorruptIndex(name, 1, f"index header is not JSON ({err.msg})") from None
    if not isinstance(head, dict) or head.get("format") != INDEX_FORMAT:
        raise CorruptIndex(name, 1, "not an icrl index header")
    if head.get("version") != INDEX_VERSION:
        raise CorruptIndex(name, 1, f"index version {head.get('version')!r} is not supported")
    shard, records = head.get("shard"), head.get("records")
    if not isinstance(shard, str) or not isinstance(records, int):
        raise CorruptIndex(name, 1, "index header lacks 'shard' or 'records'")
    refs = []
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorruptIndex(name, lineno, f"index row is not JSON ({err.msg})") from None
        try:
            ref = parse_row(obj, shard, f"{name}:{lineno}")
        except IcrlError as err:
            raise CorruptIndex(name, lineno, str(err).removeprefix(f"{name}:{lineno}: ")) from None
        if ref.offset != lineno - 2:
            raise CorruptIndex(name, lineno, f"row says record {ref.offset}, expected {lineno - 2}")
        refs.append(ref)
    if len(refs) != records:
        raise CorruptIndex(name, None, f"header says {records} records but there are {len(refs)} rows")
    return head, refs


class StoreIndex:
    """All rows of a store as columns, with O(1) lookup by (task, level).

    Columns (numpy, one entry a row): ``level`` int64, ``episode`` int64, ``length`` int64,
    ``ret`` float64, ``success``/``terminated``/``truncated``/``has_actions`` bool, ``offset``
    int64, ``nbytes`` int64, ``raw_bytes`` int64, ``crc32`` uint32, and the string columns
    ``task``/``domain``/``source``/``shard`` as int32 codes into the tables ``strings[name]``.
    Row order: fragments sorted by shard name, records in order.
    """

    _NUMERIC = {
        "level": np.int64, "episode": np.int64, "length": np.int64, "ret": np.float64,
        "success": np.bool_, "terminated": np.bool_, "truncated": np.bool_, "has_actions": np.bool_,
        "offset": np.int64, "nbytes": np.int64, "raw_bytes": np.int64, "crc32": np.uint32,
    }
    _CODED = ("task", "domain", "source", "shard")

    def __init__(self, chunks: Iterable[Sequence[EpisodeRef]]):
        """Build from chunks of refs (e.g. one chunk a fragment), converting chunk by chunk so the
        transient Python objects never exceed one chunk."""
        self.strings: dict[str, list[str]] = {c: [] for c in self._CODED}
        codes: dict[str, dict[str, int]] = {c: {} for c in self._CODED}
        parts: dict[str, list[np.ndarray]] = {c: [] for c in (*self._NUMERIC, *self._CODED)}
        for chunk in chunks:
            for col, dtype in self._NUMERIC.items():
                parts[col].append(np.fromiter((getattr(r, col) for r in chunk), dtype, len(chunk)))
            for col in self._CODED:
                table, names = codes[col], self.strings[col]
                ids = []
                for r in chunk:
                    s = getattr(r, col)
                    if s not in table:
                        table[s] = len(names)
                        names.append(s)
                    ids.append(table[s])
                parts[col].append(np.asarray(ids, dtype=np.int32))
        self.columns: dict[str, np.ndarray] = {
            col: np.concatenate(p) if p else np.zeros(0, self._NUMERIC.get(col, np.int32))
            for col, p in parts.items()
        }
        self._codes = codes
        self._by_key = self._group_by_task_level()

    def _group_by_task_level(self) -> dict[tuple[str, int], np.ndarray]:
        task, level = self.columns["task"], self.columns["level"]
        if len(task) == 0:
            return {}
        order = np.lexsort((level, task))  # stable: rows of a key stay in index order
        t, lv = task[order], level[order]
        starts = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (lv[1:] != lv[:-1])])
        ends = np.r_[starts[1:], len(order)]
        names = self.strings["task"]
        return {(names[t[s]], int(lv[s])): order[s:e] for s, e in zip(starts, ends)}

    def __len__(self) -> int:
        return len(self.columns["level"])

    def ref(self, i: int) -> EpisodeRef:
        """The ref of row ``i``."""
        c, s = self.columns, self.strings
        return EpisodeRef(
            task=s["task"][c["task"][i]], level=int(c["level"][i]), episode=int(c["episode"][i]),
            domain=s["domain"][c["domain"][i]], source=s["source"][c["source"][i]],
            length=int(c["length"][i]), ret=float(c["ret"][i]), success=bool(c["success"][i]),
            terminated=bool(c["terminated"][i]), truncated=bool(c["truncated"][i]),
            has_actions=bool(c["has_actions"][i]), shard=s["shard"][c["shard"][i]],
            offset=int(c["offset"][i]), nbytes=int(c["nbytes"][i]), raw_bytes=int(c["raw_bytes"][i]),
            crc32=int(c["crc32"][i]),
        )

    def __iter__(self) -> Iterator[EpisodeRef]:
        return (self.ref(i) for i in range(len(self)))

    def rows_of(self, task: str, level: int) -> np.ndarray:
        """Row ids [n] int64 of the episodes of (task, level), in index order; empty if none."""
        return self._by_key.get((task, int(level)), np.zeros(0, np.int64))

    def keys(self) -> Iterable[tuple[str, int]]:
        """Every (task, level) that has at least one episode."""
        return self._by_key.keys()

    def task_mask(self, task: str) -> np.ndarray:
        """Boolean [len] mask of the rows of ``task``."""
        code = self._codes["task"].get(task)
        if code is None:
            return np.zeros(len(self), bool)
        return self.columns["task"] == code
