"""The input pipeline: bursty sequences from trajectory stores, batched per host (``icrl.data.loader``).

    source = SequenceSource(cfg)                 # a Grain RandomAccessDataSource: i -> sequence
    loader = make_loader(cfg, process_index=jax.process_index(), process_count=jax.process_count())
    it = iter(loader)
    batch = next(it)                             # this process's slice of the global batch
    state = it.get_state(); it.set_state(state)  # saved in, and restored from, training checkpoints

Sequence i is a pure function of (seed, i) (``icrl.data.sequences``), and so is row i: sequence i,
or with ``data.pack`` = N > 1 the sequences of i·N … i·N + N − 1 that fit (``icrl.data.packing``).
Global batch s is rows [s*B, (s+1)*B) for a global batch size B, whatever the number of processes P: process p holds its
rows [p*B/P, (p+1)*B/P) of it (``ProcessSlice``). So the processes read disjoint slices that
together are exactly the single-process stream, batch by batch, and a run can resume on another
number of hosts with the same data order. Arrays are those of ``icrl.data.sequences`` (or
``icrl.data.packing``) with a leading batch axis of B/P.
"""

from __future__ import annotations

import numpy as np

from icrl.data.loader import BatchLoader
from icrl.data.packing import pack_row, plan_row
from icrl.data.sequences import SequenceConfig, SequencePlan, TaskCatalog, check_catalog, pack_sequence, plan_sequence
from icrl.store.reader import TrajectoryStore
from icrl.envs.registry import task_legal_actions
from icrl.errors import IcrlError


class SequenceSource:
    """Random access to the sequence stream: ``source[i]`` is packed sequence i."""

    def __init__(self, cfg: SequenceConfig):
        if not cfg.sources:
            raise IcrlError("data.sources is empty: name at least one trajectory store")
        self.cfg = cfg
        self.stores: list[TrajectoryStore] = []
        self.catalogs: list[TaskCatalog] = []
        for j, src in enumerate(cfg.sources):
            where = f"data.sources[{j}] ({src.path})"
            try:
                store = TrajectoryStore(src.path)
            except IcrlError as err:
                raise IcrlError(f"{where}: {err}") from None
            if len(store) == 0:
                raise IcrlError(f"{where}: the store has no episodes")
            catalog = TaskCatalog(store.index, src.tasks, where)
            check_catalog(catalog, cfg, where)
            self.stores.append(store)
            self.catalogs.append(catalog)
        domains = sorted({d for c in self.catalogs for d in c.domains})
        if len(domains) != 1:
            raise IcrlError(f"data.sources mix domains {domains}; one model reads one domain")
        self.domain = domains[0]
        weights = np.array([s.weight for s in cfg.sources], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.tasks: list[str] = sorted({t for c in self.catalogs for t in c.tasks})
        self._task_id = {t: k for k, t in enumerate(self.tasks)}

    def __len__(self) -> int:
        return self.cfg.num_sequences

    def plan(self, i: int) -> SequencePlan:
        """Which episodes sequence ``i`` holds (reads only the index)."""
        return plan_sequence(self.catalogs, self.weights, self.cfg, int(i))

    def episodes(self, plan: SequencePlan) -> list:
        """The planned episodes, decoded, in plan order."""
        store = self.stores[plan.source]
        return [store.read(store.index.ref(int(r))) for r in plan.rows]

    def __getitem__(self, i: int) -> dict:
        """Row ``i``: sequence i (``data.pack`` = 1), or the sequences packed into row i."""
        if self.cfg.pack > 1:
            kept = plan_row(self.plan, self.cfg, int(i))
            return pack_row(kept, [self.episodes(p) for _, p in kept], self.cfg, self.domain,
                            [task_legal_actions(p.task) for _, p in kept], [self._task_id[p.task] for _, p in kept],
                            int(i))
        plan = self.plan(i)
        return pack_sequence(plan, self.episodes(plan), self.cfg, self.domain, task_legal_actions(plan.task),
                             int(i), self._task_id[plan.task])

    def __repr__(self) -> str:
        # Grain compares reprs to check that a saved iterator state belongs to this stream, so
        # the repr holds everything that decides the stream: the whole config.
        return f"SequenceSource({self.cfg.model_dump_json(exclude={'worker_count'})})"


class ProcessSlice:
    """Process p's view of the stream: local index k -> global index of its rows in each batch."""

    def __init__(self, source: SequenceSource, process_index: int, process_count: int, local_batch: int):
        self.source, self.p, self.P, self.b = source, process_index, process_count, local_batch

    def global_index(self, k: int) -> int:
        step, row = divmod(int(k), self.b)
        return step * self.b * self.P + self.p * self.b + row

    def __len__(self) -> int:
        return (len(self.source) // (self.b * self.P)) * self.b

    def __getitem__(self, k: int) -> dict:
        return self.source[self.global_index(k)]

    def __repr__(self) -> str:
        return f"ProcessSlice(process {self.p} of {self.P}, batch {self.b}, {self.source!r})"


def per_process_batch(cfg: SequenceConfig, process_count: int) -> int:
    """Sequences per batch on one process; the global batch must split evenly."""
    if cfg.batch_size % process_count:
        raise IcrlError(f"data.batch_size={cfg.batch_size} does not split over {process_count} processes")
    return cfg.batch_size // process_count


def make_loader(cfg: SequenceConfig, *, process_index: int = 0, process_count: int = 1,
                source: SequenceSource | None = None, num_epochs: int | None = 1,
                prefetch: int = 2) -> BatchLoader:
    """Batches of this process's slice of the stream, checkpointable (``icrl.data.loader``).

    ``cfg.worker_count`` processes build them into shared memory (0: this process builds them);
    ``prefetch`` batches in flight per worker. Batch s holds rows [s*b, (s+1)*b) of the slice
    (b = B/P) however many workers there are, so workers give exactly the in-process batches.
    """
    if not 0 <= process_index < process_count:
        raise IcrlError(f"process_index {process_index} is not in [0, {process_count})")
    source = source or SequenceSource(cfg)
    local_batch = per_process_batch(cfg, process_count)
    view = ProcessSlice(source, process_index, process_count, local_batch)
    return BatchLoader(view, local_batch, workers=cfg.worker_count, num_epochs=num_epochs, prefetch=prefetch,
                       batch_size=cfg.batch_size)
