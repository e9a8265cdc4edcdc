"""Batches in shared memory: the layout of a batch in one flat buffer, and the slots that hold them.

A *slot* is a file in ``/dev/shm`` (a RAM-backed filesystem; elsewhere the temporary directory)
that the loader process and its worker processes map. A worker writes a batch's rows straight
into a slot; the loader hands the batch out as numpy views of the slot, with no copy and no
pickling of the arrays (a tty batch is megabytes), and takes the slot back for another batch once
every view of it has been dropped (``Slot.lease``). So what crosses a process boundary per batch
is a few bytes of messages, and the only copy of the arrays is the one that assembles the batch.

``BatchLayout`` fixes where each array of a batch lies: the leaves of a row (a dict of numpy
arrays and scalars, nested dicts allowed: ``obs``) with a leading batch axis, each at an offset
aligned to 64 bytes (so XLA can read CPU arrays in place).
"""

from __future__ import annotations

import collections
import dataclasses
import mmap
import os
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from icrl.errors import IcrlError

ALIGN = 64
Key = tuple[str, ...]  # a leaf's path in the row dict: ("actions",), ("obs", "tty_chars")


def flatten(row: dict, prefix: Key = ()) -> dict[Key, Any]:
    """{("obs", "tty_chars"): array, ("actions",): array, ...}: the leaves of a nested dict."""
    out: dict[Key, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def unflatten(leaves: dict[Key, Any]) -> dict:
    """The nested dict of ``flatten``'s leaves (keys in the same order)."""
    out: dict = {}
    for key, v in leaves.items():
        d = out
        for k in key[:-1]:
            d = d.setdefault(k, {})
        d[key[-1]] = v
    return out


@dataclasses.dataclass(frozen=True)
class Leaf:
    key: Key
    shape: tuple[int, ...]  # one row's shape; the batch's is (rows, *shape)
    dtype: np.dtype
    offset: int  # bytes from the start of the slot
    nbytes: int  # of the whole batch


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Where each array of a batch of ``rows`` rows lies in one buffer of ``nbytes`` bytes."""

    rows: int
    leaves: tuple[Leaf, ...]
    nbytes: int

    @classmethod
    def of(cls, row: dict, rows: int) -> BatchLayout:
        """The layout of batches of ``rows`` rows like ``row`` (one row of the stream)."""
        leaves, offset = [], 0
        for key, v in flatten(row).items():
            a = np.asarray(v)
            if a.dtype.hasobject:
                raise TypeError(f"batch field {'.'.join(key)} has dtype object: it cannot live in shared memory")
            nbytes = rows * a.nbytes
            leaves.append(Leaf(key, a.shape, a.dtype, offset, nbytes))
            offset += -(-max(nbytes, 1) // ALIGN) * ALIGN
        return cls(rows, tuple(leaves), offset)

    def views(self, buffer: Any) -> dict:
        """The batch as numpy arrays [rows, *shape] viewing ``buffer`` (a uint8 array or a buffer)."""
        base = buffer if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, np.uint8)
        # Each view's base is ``base`` itself (numpy does not look through a view of a buffer), so
        # ``base`` stays alive exactly as long as some array of the batch does (see Slot.lease).
        return unflatten({
            leaf.key: base[leaf.offset: leaf.offset + leaf.nbytes].view(leaf.dtype).reshape(self.rows, *leaf.shape)
            for leaf in self.leaves})

    def empty(self) -> dict:
        """A batch of fresh (private) numpy arrays."""
        return self.views(np.empty(max(self.nbytes, 1), np.uint8))

    def write_row(self, batch: dict, j: int, row: dict) -> None:
        """Copy ``row`` into row ``j`` of ``batch`` (arrays of this layout), checking its fields."""
        leaves = flatten(row)
        if len(leaves) != len(self.leaves):
            raise ValueError(f"row {j} has fields {sorted('.'.join(k) for k in leaves)}, the batch "
                             f"{sorted('.'.join(leaf.key) for leaf in self.leaves)}")
        out = flatten(batch)
        for leaf in self.leaves:
            a = np.asarray(leaves[leaf.key])
            if a.shape != leaf.shape or a.dtype != leaf.dtype:
                raise ValueError(f"row {j}: field {'.'.join(leaf.key)} is {a.dtype}{list(a.shape)}, "
                                 f"the batch's rows are {leaf.dtype}{list(leaf.shape)}")
            out[leaf.key][j] = a


def shm_directory() -> Path:
    """Where slots live: ``/dev/shm`` (RAM) where it exists, else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class Slot:
    """One batch-sized shared-memory file, mapped in this process.

    The loader creates it (``Slot.create``) and workers open it by ``path`` (``Slot.open``).
    ``lease(layout, on_release)`` hands out the batch it holds as numpy views; ``on_release(self)``
    runs once the last of those views is gone (garbage collected), and only then may the slot be
    written again.
    """

    def __init__(self, path: Path, size: int, mapping: mmap.mmap, owner: bool):
        self.path, self.size, self.mapping, self.owner = path, size, mapping, owner
        self.array = np.frombuffer(mapping, np.uint8)  # [size] uint8, this process's view

    @classmethod
    def create(cls, size: int, directory: Path | None = None) -> Slot:
        directory = directory or shm_directory()
        size = max(size, 1)
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
        if free < size:
            # A full tmpfs does not fail the write: it kills the writer with SIGBUS. Say it here.
            raise IcrlError(f"{directory}: {free / 2**20:.0f} MiB free, but a batch in shared memory needs "
                            f"{size / 2**20:.0f} MiB: give the machine more shared memory (docker: --shm-size) "
                            f"or set data.worker_count=0")
        path = directory / f"icrl-batch-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(path, size, mapping, owner=True)

    @classmethod
    def open(cls, path: str | Path, size: int) -> Slot:
        fd = os.open(path, os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(Path(path), size, mapping, owner=False)

    def lease(self, layout: BatchLayout, on_release: Any) -> dict:
        """The batch in this slot as numpy views; ``on_release(self)`` when they are all gone."""
        # A new array over the mapping itself, not a slice of ``self.array``: numpy sets a view's
        # base to the first array up the chain whose own base is not an array, so the views below
        # keep exactly this object alive, and its finalizer runs when the last of them dies.
        base = np.frombuffer(self.mapping, np.uint8, count=max(layout.nbytes, 1))
        weakref.finalize(base, on_release, self)
        return layout.views(base)

    def unlink(self) -> None:
        """Remove the file (the memory lives on while any process still maps it)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class SlotPool:
    """The loader's slots: free ones are reused, new ones made when every slot is in use.

    A slot is in use while a worker writes it, while its batch waits to be handed out, and while the
    caller holds any array of that batch; so the pool grows to what is in flight plus what the caller
    keeps, and no batch is ever overwritten under the caller.
    """

    def __init__(self, size: int):
        self.size = size
        self.slots: list[Slot] = []
        # Filled by the lease finalizers, which may run in any thread and at any allocation:
        # deque.append is atomic, so no lock (which a finalizer could deadlock on).
        self.released: collections.deque[int] = collections.deque()
        self._free: list[int] = []

    def take(self) -> tuple[int, Slot]:
        """A slot no one uses: (its id, the slot)."""
        while self.released:
            self._free.append(self.released.popleft())
        if self._free:
            i = self._free.pop()
            return i, self.slots[i]
        self.slots.append(Slot.create(self.size))
        return len(self.slots) - 1, self.slots[-1]

    def give_back(self, i: int) -> None:
        """Slot ``i`` is free again (a batch that will not be handed out)."""
        self._free.append(i)

    def lease(self, i: int, layout: BatchLayout) -> dict:
        """Slot ``i``'s batch as numpy views; the slot returns to the pool when they are gone."""
        released = self.released
        return self.slots[i].lease(layout, lambda slot: released.append(i))

    def close(self) -> None:
        """Remove every slot's file; mappings still held by the caller's arrays stay valid."""
        for slot in self.slots:
            slot.unlink()

