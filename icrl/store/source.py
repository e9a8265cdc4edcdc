"""``EpisodeSource``: a store's episodes as a Grain ``RandomAccessDataSource``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from icrl.store.episode import Episode

if TYPE_CHECKING:
    from icrl.store.reader import TrajectoryStore


class EpisodeSource:
    """Grain ``RandomAccessDataSource`` of episodes: item ``i`` is ``store.read(row rows[i])``.

    Picklable (the store's index travels, readers reopen in the worker), so it works with Grain's
    multiprocess loading: ``grain.MapDataset.source(store.source())``.
    """

    def __init__(self, store: TrajectoryStore, rows: Sequence[int] | np.ndarray | None = None):
        self.store = store
        self.rows = np.arange(len(store), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(store)):
            raise IndexError(f"rows out of range for a store of {len(store)} episodes")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Episode:
        return self.store.read(self.store.index.ref(int(self.rows[i])))

    def __repr__(self) -> str:
        return f"EpisodeSource({self.store.root}, {len(self)} episodes)"
