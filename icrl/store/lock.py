"""The store's write lock: one writing command at a time per store.

Every writer keeps its own journal and shards, so writers never corrupt each other's files; what they
can break together is the store's *contents*. ``icrl collect`` plans which episodes are missing from
a snapshot of the store, so two runs started at once both play every missing episode and store it
twice. One writing command at a time, holding the lock from its plan to its last append, makes
that impossible.

On disk: ``STORE/write.lock``, on which the running command holds an exclusive ``flock``; while it
holds it the file says who it is (one JSON line)::

    {"pid": 1234, "host": "node7", "command": "icrl collect --suite ...", "since": "2025-01-01T12:00:00", "token": "9f2c..."}

The kernel drops the flock when the process dies, so a killed command never leaves the store locked;
a file whose lock is free is stale, and the next command overwrites it.

Who counts as one command:

- every writer of one process shares the lock (``WriteLock.acquire`` is re-entrant per process): a
  command may open several ``ShardWriter`` at once, e.g. the writer threads of ``icrl nld convert``;
- a spawned process of the same run joins the lock with its ``token`` (``join_write_lock``) instead
  of taking it: ``icrl collect``'s workers each open their own ``ShardWriter`` while their parent
  holds the lock.

(``flock`` on a network filesystem is coherent across hosts only where the filesystem supports it;
see ``icrl.store.layout``.)
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from icrl.errors import IcrlError
from icrl.store.layout import check_store

LOCK_FILE = "write.lock"


class StoreLocked(IcrlError):
    """The store is being written by another command; the message names it."""


def command_line() -> str:
    """This process's command, as a person typed it (``icrl collect ...``), at most 300 characters."""
    argv = list(sys.argv) or ["python"]
    if argv[0].endswith(("icrl", "cli.py")):
        argv[0] = "icrl"
    text = " ".join(argv)
    return text if len(text) <= 300 else text[:297] + "..."


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (it has not written its name yet)"
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}), "
            f"since {info.get('since')}")


def _read_info(fd: int) -> dict | None:
    """The holder's line; None if it is not (yet) there. The holder writes it right after taking
    the lock, so a reader may catch the file empty: it retries for a moment."""
    for _ in range(20):
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8")
            info = json.loads(text) if text.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            info = None
        if isinstance(info, dict):
            return info
        time.sleep(0.01)
    return None


def _open(root: Path, create: bool) -> int:
    path = root / LOCK_FILE
    try:
        return os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        if create:
            raise IcrlError(f"{path}: cannot create the store's write lock (the store is gone)") from None
        raise
    except OSError as err:
        raise IcrlError(f"{path}: cannot open the store's write lock: {err.strerror}") from None


class WriteLock:
    """The store's write lock, held by this process (see the module docstring).

        with WriteLock.acquire("data/minihack", wait=False) as lock:   # StoreLocked if held
            ... lock.token ...                                         # for spawned workers

    Re-entrant per process: acquiring a store this process holds already returns the same lock with
    its count raised; ``release`` drops the flock when the count reaches 0.
    """

    _held: dict[tuple[int, str], WriteLock] = {}  # (pid, resolved store path) -> lock
    _guard = threading.Lock()

    def __init__(self, root: Path, key: tuple[int, str], fd: int, info: dict):
        self.root, self._key, self._fd, self.info = root, key, fd, info
        self._count = 1

    @property
    def token(self) -> str:
        """What a spawned process of the same run passes to ``join_write_lock`` / ``ShardWriter(lock=)``."""
        return self.info["token"]

    @classmethod
    def acquire(cls, root: str | os.PathLike, command: str | None = None, *, wait: bool = False,
                on_wait: Callable[[str], None] | None = None) -> WriteLock:
        """Take the write lock of the store at ``root`` (an existing store directory).

        If another command holds it: ``wait=False`` raises StoreLocked naming the holder;
        ``wait=True`` calls ``on_wait(holder description)`` once and blocks until it is free.
        """
        root = check_store(root)
        key = (os.getpid(), str(root.resolve()))
        with cls._guard:
            held = cls._held.get(key)
            if held is not None:
                held._count += 1
                return held
            fd = _open(root, create=True)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _describe(_read_info(fd))
                    if not wait:
                        raise StoreLocked(f"{root}: the store is being written by {holder}; run this again "
                                          f"once it has finished (two writers at once would store episodes "
                                          f"twice)") from None
                    if on_wait is not None:
                        on_wait(holder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or command_line(),
                        "since": datetime.datetime.now().isoformat(timespec="seconds"),
                        "token": uuid.uuid4().hex}
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            except BaseException:
                os.close(fd)  # releases the flock if we had it
                raise
            lock = cls._held[key] = cls(root, key, fd, info)
            return lock

    def release(self) -> None:
        """Drop one hold; the last one frees the lock (the file stays, its contents stale)."""
        with self._guard:
            if self._fd is None:
                return
            self._count -= 1
            if self._count > 0:
                return
            # Clear the holder's line first so nobody reads a finished command as the holder.
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
            self._held.pop(self._key, None)

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def join_write_lock(root: str | os.PathLike, token: str) -> None:
    """Check that the store's write lock is held by the run whose lock has ``token`` (a spawned
    worker of that run, which writes under its parent's lock). StoreLocked otherwise."""
    root = Path(root)
    try:
        fd = _open(root, create=False)
    except FileNotFoundError:
        raise StoreLocked(f"{root}: this writer belongs to a run whose write lock is gone "
                          f"(no {root / LOCK_FILE})") from None
    try:
        try:
            # A shared lock succeeds only if nobody holds the exclusive one: then the run is over.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            if info is not None and info.get("token") == token:
                return
            raise StoreLocked(f"{root}: the store is being written by {_describe(info)}, not by this "
                              f"writer's run") from None
        raise StoreLocked(f"{root}: this writer belongs to a run that no longer holds the store's write lock")
    finally:
        os.close(fd)


def lock_holder(root: str | os.PathLike) -> str | None:
    """Who holds the store's write lock (a description), or None if nobody does."""
    try:
        fd = _open(Path(root), create=False)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read_info(fd))
        return None
    finally:
        os.close(fd)
