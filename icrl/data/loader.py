"""Batches of the sequence stream, built in this process or by worker processes over shared memory.

    loader = BatchLoader(view, local_batch, workers=2)   # what ``pipeline.make_loader`` returns
    it = iter(loader)
    batch = next(it)                  # batch n: rows [n*b, (n+1)*b) of ``view`` (one process's slice)
    state = it.get_state()            # bytes (JSON): the next batch number; saved in checkpoints
    it.set_state(state)               # continue from there (also reads Grain DataLoader states)

Batch n is a pure function of n, however many workers build it: its rows are rows n*b … n*b+b−1 of
the view, in order, so 0, 1 or 8 workers give exactly the same arrays. Each batch is a dict of
numpy arrays [b, ...] (nested like a row: ``obs``).

In-process (``workers=0``) the rows are built and copied into the batch's arrays in the caller's
thread. With workers, ``workers`` spawned processes each hold the view (the stores pickle: their
index travels, their readers reopen), take batch numbers from the loader and write whole batches
into shared-memory slots (``icrl.data.shared_memory``); the loader hands a batch out as views of
its slot, so only a few bytes per batch are pickled. Batches are assigned to whichever worker is
free, at most ``prefetch`` ahead per worker, and delivered in order. A worker that fails reports
its error, raised at the batch it belongs to; a worker that dies is reported with its exit code.
Workers ignore SIGINT, SIGTERM and SIGUSR2 (a preemption notice is the training loop's to handle:
it still needs the batch in flight) and exit when the loader closes or its process ends.

Scripts that use workers must guard their entry point (``if __name__ == "__main__":``): workers
are spawned (forking a process that has started JAX's threads is unsafe) and import the main module.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.util  # noqa: F401  (imported before our atexit hook is registered: see _close_all)
import signal
import traceback
import weakref
from typing import Any

from icrl.data.shared_memory import BatchLayout, Slot, SlotPool
from icrl.errors import IcrlError

STATE_VERSION = 1
_WAIT_S = 5.0  # how often a waiting loader checks that its workers are alive


class BatchLoader:
    """Batches of ``batch`` rows of ``view`` (random access: ``len``, ``view[k]`` -> row dict).

    ``num_epochs`` passes over the view (None: repeat forever); ``workers`` processes (0: this
    one); ``prefetch`` batches in flight per worker. ``batch_size`` (the global batch, of which
    ``batch`` is this process's share) is recorded in the iterator state.
    """

    def __init__(self, view: Any, batch: int, *, workers: int = 0, num_epochs: int | None = 1,
                 prefetch: int = 2, batch_size: int | None = None):
        if batch < 1 or workers < 0 or prefetch < 1:
            raise ValueError(f"batch={batch}, workers={workers}, prefetch={prefetch}")
        self.view, self.batch, self.workers, self.prefetch = view, batch, workers, prefetch
        self.batch_size = batch_size or batch
        self.per_epoch = len(view) // batch
        self.total = None if num_epochs is None else self.per_epoch * num_epochs

    def __iter__(self) -> BatchIterator:
        return BatchIterator(self)

    def __repr__(self) -> str:
        return f"BatchLoader({self.view!r}, batch {self.batch}, {self.workers} workers)"


class BatchIterator:
    """One pass of a ``BatchLoader`` from batch 0 (or from ``set_state``)."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self.next_batch = 0
        self._layout: BatchLayout | None = None
        self._pool: _Pool | None = None

    def first_row(self, n: int) -> int:
        """The view's index of batch ``n``'s first row."""
        return (n % self.loader.per_epoch) * self.loader.batch

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict:
        n = self.next_batch
        if self.loader.total is not None and n >= self.loader.total or self.loader.per_epoch == 0:
            raise StopIteration
        if self.loader.workers:
            batch = self._started().get(n)
        else:
            batch = self._build(n)
        self.next_batch = n + 1
        return batch

    def _build(self, n: int) -> dict:
        """Batch ``n`` built here, into fresh arrays."""
        view, k0 = self.loader.view, self.first_row(n)
        first = view[k0]
        if self._layout is None:
            self._layout = BatchLayout.of(first, self.loader.batch)
        batch = self._layout.empty()
        self._layout.write_row(batch, 0, first)
        for j in range(1, self.loader.batch):
            self._layout.write_row(batch, j, view[k0 + j])
        return batch

    def _started(self) -> _Pool:
        if self._pool is None:
            # The layout comes from one row built here (a few ms): the slots must exist before
            # any worker can write.
            layout = BatchLayout.of(self.loader.view[self.first_row(self.next_batch)], self.loader.batch)
            self._pool = _Pool(self, layout)
        return self._pool

    def start_prefetch(self) -> None:
        """Start the workers now (Grain's checkpoint handler calls this after ``set_state``)."""
        if self.loader.workers:
            self._started().fill()

    def get_state(self) -> bytes:
        """The position (JSON bytes): the next batch number and what it counts."""
        return json.dumps({
            "loader": "icrl", "version": STATE_VERSION, "next_batch": self.next_batch,
            "batch_size": self.loader.batch_size, "stream": repr(self.loader.view),
        }, indent=1).encode()

    def set_state(self, state: bytes | str) -> None:
        """Continue at the saved position: a ``get_state`` of this loader, or a Grain DataLoader's
        state (runs saved before this loader existed: position = records it had read / batch)."""
        try:
            saved = json.loads(state)
            if "last_seen_indices" in saved:  # Grain: worker i read local records i, i+G, ... (G = max(workers, 1))
                g = max(int(saved["worker_count"]), 1)
                seen = sum((int(last) - int(i)) // g + 1 for i, last in saved["last_seen_indices"].items())
                n = seen // self.loader.batch
            else:
                if saved.get("loader") != "icrl" or saved.get("version") != STATE_VERSION:
                    raise ValueError("unknown format")
                if saved["batch_size"] != self.loader.batch_size:
                    raise IcrlError(f"the saved data position counts batches of {saved['batch_size']} rows, "
                                    f"this stream's batches have data.batch_size={self.loader.batch_size}")
                n = int(saved["next_batch"])
        except (ValueError, KeyError, TypeError) as err:
            raise IcrlError(f"not a data iterator state ({err}): {str(state)[:80]!r}") from None
        self.next_batch = n
        if self._pool is not None:
            self._pool.restart()

    def close(self) -> None:
        """Stop the workers and remove the slots (arrays already handed out stay valid)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- the worker pool ---------------------------------------------------------------------------

_POOLS: weakref.WeakSet = weakref.WeakSet()


def _close_all() -> None:
    # Registered after multiprocessing's own exit hook (imported above), so it runs before it:
    # that hook joins the workers, which exit only once their loader has told them to.
    for pool in list(_POOLS):
        pool.close()


atexit.register(_close_all)


class _Pool:
    """Worker processes that write batches into slots; results delivered in batch order."""

    def __init__(self, it: BatchIterator, layout: BatchLayout):
        self.it, self.layout = it, layout
        loader = it.loader
        self.depth = loader.workers * loader.prefetch  # batches in flight at most
        self.slots = SlotPool(layout.nbytes)
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for w in range(loader.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(loader.view, layout, child), daemon=True,
                               name=f"icrl-data-worker-{w}")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.in_flight = [0] * loader.workers
        self.generation = 0  # results of an older generation (before set_state) are dropped
        self.ready: dict[int, tuple[int, Any]] = {}  # batch n -> (slot id, failure or None)
        self.next_issue = it.next_batch
        # Runs on close, when the pool is garbage collected, or at exit (whichever comes first).
        self._finalizer = weakref.finalize(self, _shutdown, self.conns, self.procs, self.slots)
        _POOLS.add(self)

    def fill(self) -> None:
        """Hand out batch numbers until ``depth`` are in flight or ready."""
        total = self.it.loader.total
        while self.next_issue < self.it.next_batch + self.depth and (total is None or self.next_issue < total):
            w = min(range(len(self.conns)), key=lambda i: self.in_flight[i])
            if self.in_flight[w] >= self.it.loader.prefetch:
                return
            i, slot = self.slots.take()
            n = self.next_issue
            self.conns[w].send((self.generation, n, self.it.first_row(n), i, str(slot.path)))
            self.in_flight[w] += 1
            self.next_issue += 1

    def get(self, n: int) -> dict:
        """Batch ``n`` (the next one) as views of its slot."""
        if not self._finalizer.alive:
            raise RuntimeError("the data workers have stopped (an earlier error, or the loader was closed)")
        self.fill()
        while n not in self.ready:
            self._receive()
            self.fill()
        i, failure = self.ready.pop(n)
        if failure is not None:
            self.slots.give_back(i)
            _raise(failure, n)
        batch = self.slots.lease(i, self.layout)
        self.fill()
        return batch

    def _receive(self) -> None:
        sentinels = {p.sentinel: w for w, p in enumerate(self.procs)}
        ready = multiprocessing.connection.wait(self.conns + list(sentinels), timeout=_WAIT_S)
        for obj in ready:  # messages first: a worker may have answered, then died
            if obj in sentinels:
                continue
            w = self.conns.index(obj)
            generation, n, i, failure = obj.recv()
            self.in_flight[w] -= 1
            if generation == self.generation:
                self.ready[n] = (i, failure)
            else:
                self.slots.give_back(i)
        for w, proc in enumerate(self.procs):
            if not proc.is_alive() and not self.conns[w].poll():
                code = proc.exitcode
                self.close()
                hint = " (SIGBUS: shared memory full?)" if code == -signal.SIGBUS else ""
                raise RuntimeError(f"data worker {w} (pid {proc.pid}) died with exit code {code}{hint}")

    def restart(self) -> None:
        """Continue at ``it.next_batch``: drop what was ready, ignore what is in flight."""
        for i, _ in self.ready.values():
            self.slots.give_back(i)
        self.ready.clear()
        self.generation += 1
        self.next_issue = self.it.next_batch

    def close(self) -> None:
        self._finalizer()


def _shutdown(conns: list, procs: list, slots: SlotPool) -> None:
    """Tell the workers to stop, wait for them (kill one that hangs), remove the slots' files."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()
    slots.close()


def _raise(failure: tuple[str, str, str, bool], n: int) -> None:
    kind, message, trace, bad_input = failure
    if bad_input:
        raise IcrlError(message)
    raise RuntimeError(f"data worker failed on batch {n}: {kind}: {message}\n--- worker traceback ---\n{trace}")


def _worker_main(view: Any, layout: BatchLayout, conn: multiprocessing.connection.Connection) -> None:
    """A worker: for each (generation, n, first row, slot id, slot path) write batch n into the slot."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    slots: dict[int, Slot] = {}
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the loader's process is gone
            return
        if task is None:
            return
        generation, n, k0, i, path = task
        try:
            if i not in slots:
                slots[i] = Slot.open(path, layout.nbytes)
            batch = layout.views(slots[i].array)
            for j in range(layout.rows):
                layout.write_row(batch, j, view[k0 + j])
            failure = None
        except Exception as err:  # reported to the loader, raised there at batch n
            failure = (type(err).__name__, str(err), traceback.format_exc(), isinstance(err, IcrlError))
        try:
            conn.send((generation, n, i, failure))
        except (BrokenPipeError, OSError):
            return
