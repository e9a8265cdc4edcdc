"""Per-task figures of a store, from its index and file sizes alone (no record is read), and the
warnings ``icrl data inspect`` prints where the index and the files disagree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from icrl.store.layout import close_reader, open_shard_reader
from icrl.store.reader import TrajectoryStore


@dataclasses.dataclass(frozen=True)
class TaskSummary:
    task: str
    domain: str
    sources: str  # comma-separated sources of its episodes
    episodes: int
    levels: int
    steps: int
    mean_return: float
    success_rate: float
    record_bytes: int  # bytes of its encoded records
    raw_bytes: int  # bytes of its arrays uncompressed

    @property
    def record_bytes_per_step(self) -> float:
        return self.record_bytes / max(self.steps, 1)

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / max(self.record_bytes, 1)


@dataclasses.dataclass(frozen=True)
class StoreSummary:
    path: Path
    tasks: list[TaskSummary]
    episodes: int
    steps: int
    shards: int  # sealed ArrayRecord shards
    journals: int  # unsealed journals whose episodes are included
    disk_bytes: int  # every file of the store: shards, journals, index, marker
    record_bytes: int
    raw_bytes: int

    @property
    def disk_bytes_per_step(self) -> float:
        return self.disk_bytes / max(self.steps, 1)

    @property
    def compression_ratio(self) -> float:
        """Raw array bytes / encoded record bytes."""
        return self.raw_bytes / max(self.record_bytes, 1)

    @property
    def disk_ratio(self) -> float:
        """Raw array bytes / bytes on disk (includes ArrayRecord's per-shard padding and the index)."""
        return self.raw_bytes / max(self.disk_bytes, 1)


def _disk_bytes(root: Path) -> int:
    total = 0
    for p in root.rglob("*"):
        if p.is_relative_to(root / "damaged"):
            continue  # set aside by `icrl data repair`: not part of the store
        try:
            if p.is_file():
                total += p.stat().st_size
        except FileNotFoundError:
            pass  # a journal sealed (removed) while we walked
    return total


def summarize(store: TrajectoryStore) -> StoreSummary:
    """Figures per task (sorted by task) and for the whole store."""
    c, names = store.index.columns, store.index.strings
    tasks = []
    for code in np.argsort(names["task"]):
        m = c["task"] == code
        tasks.append(TaskSummary(
            task=names["task"][code],
            domain=",".join(sorted({names["domain"][i] for i in np.unique(c["domain"][m])})),
            sources=",".join(sorted({names["source"][i] for i in np.unique(c["source"][m])})),
            episodes=int(m.sum()),
            levels=len(np.unique(c["level"][m])),
            steps=int(c["length"][m].sum()),
            mean_return=float(c["ret"][m].mean()),
            success_rate=float(c["success"][m].mean()),
            record_bytes=int(c["nbytes"][m].sum()),
            raw_bytes=int(c["raw_bytes"][m].sum()),
        ))
    disk = _disk_bytes(store.root)
    return StoreSummary(
        path=store.root, tasks=tasks, episodes=len(store), steps=int(c["length"].sum()),
        shards=len(store.shards), journals=len(store.journals), disk_bytes=disk,
        record_bytes=int(c["nbytes"].sum()), raw_bytes=int(c["raw_bytes"].sum()),
    )


def index_warnings(store: TrajectoryStore) -> list[str]:
    """Where the index and the files of a store opened with ``strict=False`` disagree, one line
    each: the problems found on open (a shard without fragment, a fragment without shard, a damaged
    journal), shards holding fewer records than their fragment lists (a truncated ArrayRecord file
    opens as empty, so only the count shows it; each shard's footer is read, no record), and
    episodes stored more than once."""
    out = list(store.problems)
    c = store.index.columns
    per_shard = np.bincount(c["shard"], minlength=len(store.index.strings["shard"]))
    for code, shard in enumerate(store.index.strings["shard"]):
        if shard not in store.shards:
            continue  # a journal's episodes: checked by its scan
        try:
            reader = open_shard_reader(store.root / shard)
        except RuntimeError as err:
            out.append(f"{store.root / shard}: does not open ({err}); its index lists {per_shard[code]} episodes")
            continue
        try:
            n = reader.num_records()
        finally:
            close_reader(reader)
        if n != per_shard[code]:
            out.append(f"{store.root / shard}: holds {n} records but its index lists {per_shard[code]} "
                       f"(truncated or damaged)")
    if len(store):
        order = np.lexsort((c["episode"], c["level"], c["task"]))
        key = np.stack([c["task"][order], c["level"][order], c["episode"][order]])
        dup = np.flatnonzero((key[:, 1:] == key[:, :-1]).all(axis=0)) + 1
        if len(dup):
            first = store.index.ref(int(order[dup[0]]))
            out.append(f"{len(dup)} episodes are stored more than once, e.g. ({first.task}, level {first.level}, "
                       f"episode {first.episode}) (`icrl data verify` lists them)")
    return out
