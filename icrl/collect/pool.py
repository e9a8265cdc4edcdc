"""The worker pool of a collection: spawned processes that play units into their own store writers.

The parent hands out (task, level) units one at a time over a private pipe per worker (no shared
queue lock a killed worker could leave held), and each worker reports every attempt back. A worker
that dies is reported; the others carry on. Workers die with the parent (Linux
``PR_SET_PDEATHSIG``), so a killed run leaves no orphans. Ctrl-C: workers finish the episode they
are playing, seal their journals and exit.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from icrl.collect.report import CollectReport
from icrl.collect.units import EnvCache, Event, PlaySettings, Unit, play_unit
from icrl.errors import IcrlError


STOP = "stop"  # parent -> worker: finish the current episode, close the writer, exit


def _die_with_parent(parent_pid: int) -> None:
    """On Linux, have the kernel SIGKILL this worker when its parent dies: a killed run then leaves
    no orphan still finishing an episode that a re-run might play again (a duplicate)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: an orphan stops at its next message to the dead parent instead
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def worker_main(index: int, conn: Connection, settings: PlaySettings, parent_pid: int) -> None:
    """Entry point of a spawned worker: play the units the parent sends until told to stop.

    Messages to the parent: ``Event`` per attempt, ``("unit_done",)``, ``("error", kind, text)``.
    From the parent: a ``Unit``, ``None`` (no more work) or ``STOP``.
    """
    from icrl.store.writer import ShardWriter

    # Ctrl-C reaches the whole process group: the parent decides (it sends STOP), so that the
    # worker finishes its episode and seals its journal instead of dying mid-append.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    envs = EnvCache(settings)
    writer = None
    stopped = False

    def stop() -> bool:
        nonlocal stopped
        if not stopped and conn.poll():
            stopped = conn.recv() == STOP
        return stopped

    try:
        # Under the parent's write lock: the run holds it, its workers only show its token.
        writer = ShardWriter(settings.store, f"collect-w{index}", lock=settings.lock)
        while not stopped:
            msg = conn.recv()
            if msg is None or msg == STOP:
                break
            play_unit(msg, envs, writer, settings, conn.send, stop)
            conn.send(("unit_done",))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: stop; every appended episode is already in the store
    except BaseException as err:  # noqa: BLE001 (reported to the parent, which raises it)
        kind = "input" if isinstance(err, IcrlError) else "bug"
        text = str(err) if kind == "input" else traceback.format_exc()
        try:
            conn.send(("error", kind, text))
        except OSError:
            pass
    finally:
        if writer is not None:
            writer.close()
        envs.close()


class Pool:
    """Spawned workers, each with its own pipe; hands out units, collects events."""

    def __init__(self, n: int, settings: PlaySettings):
        ctx = mp.get_context("spawn")
        self.conns: dict[Connection, tuple[int, Any]] = {}
        self.sent_none: set[int] = set()
        for i in range(n):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=worker_main, args=(i, child, settings, os.getpid()), name=f"icrl-collect-{i}", daemon=True)
            proc.start()
            child.close()  # so the parent sees EOF when the worker dies
            self.conns[parent] = (i, proc)

    def send(self, conn: Connection, msg: Any) -> None:
        try:
            conn.send(msg)
        except OSError:
            pass  # it died: its EOF is handled in the loop
        if msg is None or msg == STOP:
            self.sent_none.add(self.conns[conn][0])

    def stop_all(self) -> None:
        for conn in list(self.conns):
            self.send(conn, STOP)

    def finished(self, conn: Connection) -> str | None:
        """Forget a worker whose pipe closed; a description if it died rather than exited cleanly."""
        i, proc = self.conns.pop(conn)
        conn.close()
        proc.join(timeout=30)
        if proc.exitcode == 0 and i in self.sent_none:
            return None
        how = f"signal {-proc.exitcode}" if proc.exitcode is not None and proc.exitcode < 0 else f"exit code {proc.exitcode}"
        return f"worker {i} (pid {proc.pid}) ended with {how}"

    def terminate(self) -> None:
        for conn, (_, proc) in list(self.conns.items()):
            proc.kill()
            proc.join(timeout=10)
            conn.close()
        self.conns.clear()


def run_pool(units: collections.deque[Unit], n: int, settings: PlaySettings, report: CollectReport,
              on_event: Callable[[Event], None], tick: Callable[[], None]) -> None:
    """Run ``units`` on ``n`` spawned workers until all are done, every worker died, or Ctrl-C."""
    pool = Pool(n, settings)
    error: tuple[str, str] | None = None
    try:
        for conn in list(pool.conns):
            pool.send(conn, units.popleft() if units else None)
        while pool.conns:
            try:
                ready = wait(list(pool.conns), timeout=0.5)
                for conn in ready:
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):
                        dead = pool.finished(conn)
                        if dead is not None and error is None and not report.interrupted:
                            report.dead_workers.append(dead)
                        continue
                    if isinstance(msg, Event):
                        report.add(msg)
                        on_event(msg)
                    elif msg[0] == "unit_done":
                        pool.send(conn, units.popleft() if units and error is None and not report.interrupted else None)
                    elif msg[0] == "error" and error is None:
                        error = (msg[1], msg[2])
                        pool.stop_all()
                tick()
            except KeyboardInterrupt:
                if report.interrupted:
                    raise  # a second Ctrl-C: stop waiting for the workers
                report.interrupted = True
                pool.stop_all()
    finally:
        pool.terminate()  # only workers still running: after an exception or a second Ctrl-C
    if error is not None:
        kind, text = error
        if kind == "input":
            raise IcrlError(text)
        raise RuntimeError(f"a collection worker failed:\n{text}")
