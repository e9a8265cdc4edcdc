"""Expert data collection: play a suite's tasks with the expert and append the episodes to a store.

    from icrl.collect.config import CollectConfig
    from icrl.collect.run import run_collection
    cfg = CollectConfig(suite="minihack", split="train", levels=100, episodes_per_level=5,
                        sticky=0.2, workers=2, out="data/minihack-train")
    report = run_collection(cfg)           # ``icrl collect`` is this plus a progress bar

The stages live in their own modules: level and attempt seeds (``levels``), the recipe
(``config``), playing a unit's attempts (``units``), the spawned workers (``pool``) and the counts
(``report``).

Episodes. Each (task, level) gets episodes ``0 .. episodes_per_level-1``, each the first successful
attempt of the expert (``icrl.collect.units``). An episode whose every attempt fails is not stored
and a later run tries it again (with the same seeds, so on the same outcome unless the settings
changed).

Resume. Before starting, the store is read once and every (task, level, episode) already in it is
skipped; only missing episodes are played. A killed run loses only the episodes being played.

One run at a time. The run holds the store's write lock (``icrl.store.lock``) from before its plan
to its last append, so a second run cannot plan from the same snapshot and store every episode
twice: it stops naming the first (or, with ``wait``, waits and then finds the episodes stored).

Workers. ``workers`` processes (``spawn``: safe when the parent has JAX or threads) each own their
envs, their expert and one ``ShardWriter`` for the whole run (``icrl.collect.pool``); the run
reports what is unfinished. ``workers=0`` plays in the calling process (debugging, tiny runs).
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from icrl.collect.config import CollectConfig, resolve
from icrl.errors import IcrlError
from icrl.collect.pool import run_pool
from icrl.collect.report import CollectReport
from icrl.collect.units import EnvCache, Event, PlaySettings, Unit, play_unit


def plan_units(store: Any, tasks: Iterable[str], levels: Iterable[int], episodes_per_level: int) -> tuple[list[Unit], int]:
    """(units of missing episodes, number already stored). One index lookup per (task, level)."""
    episode_col = store.index.columns["episode"]
    units, stored = [], 0
    wanted = np.arange(episodes_per_level)
    for task in tasks:
        for level in levels:
            have = np.isin(wanted, episode_col[store.index.rows_of(task, level)])
            stored += int(have.sum())
            if not have.all():
                units.append(Unit(task, int(level), tuple(int(e) for e in wanted[~have])))
    return units, stored


def check_experts(tasks: Sequence[str]) -> None:
    """IcrlError naming the task if it has no expert, before any worker starts."""
    from icrl.envs.actions import nethack_actions_of
    from icrl.envs.registry import domain_of, task_legal_actions
    from icrl.experts import make_expert
    from icrl.experts.registry import expert_unavailable

    for task in tasks:
        why = expert_unavailable(task)
        if why:
            raise IcrlError(f"no expert for task {task!r}: {why}")
        if domain_of(task) == "nethack":  # the oracle also checks the task's actions (compass moves)
            make_expert(task, nethack_actions_of(task_legal_actions(task)))


def run_collection(cfg: CollectConfig, *, on_event: Callable[[Event], None] = lambda ev: None,
                   on_start: Callable[[CollectReport], None] = lambda r: None,
                   tick: Callable[[], None] = lambda: None, source: str = "collect config",
                   wait: bool = False, on_wait: Callable[[str], None] | None = None) -> CollectReport:
    """Collect the episodes ``cfg`` asks for that the store lacks; returns what was done.

    ``on_start`` gets the report once the plan is known (``planned`` set); ``on_event`` gets every
    attempt's ``Event``; ``tick`` is called at least twice a second (progress display). If another
    command is writing the store: StoreLocked naming it, or with ``wait`` ``on_wait(holder)`` and
    a wait until it has finished.
    """
    from icrl.store.layout import create_store, recover_journals
    from icrl.store.lock import WriteLock
    from icrl.store.reader import TrajectoryStore

    res = resolve(cfg, source)
    check_experts(res.tasks)
    store_path = str(cfg.out)
    create_store(store_path)
    with WriteLock.acquire(store_path, wait=wait, on_wait=on_wait) as lock:
        recover_journals(store_path)  # seal journals of a killed run so the plan reads sealed shards
        # Strict: a store whose index misses episodes (a lost fragment, a damaged journal) would
        # have them played again, as duplicates once it is repaired; it names `icrl data repair`.
        with TrajectoryStore(store_path) as store:
            units, already = plan_units(store, res.tasks, res.levels, cfg.episodes_per_level)
        report = CollectReport(store=store_path, tasks=len(res.tasks), levels=len(res.levels),
                               episodes_per_level=cfg.episodes_per_level, already_stored=already,
                               planned=sum(len(u.episodes) for u in units))
        settings = PlaySettings(store=store_path, sticky=res.sticky, max_steps=res.max_steps, seed=cfg.seed,
                                max_attempts=cfg.max_attempts, keep_failed=cfg.keep_failed, source=cfg.source,
                                lock=lock.token)
        report.workers = min(cfg.workers, len(units))
        on_start(report)
        start = time.perf_counter()
        if units and report.workers == 0:
            _run_inline(units, settings, report, on_event, tick)
        elif units:
            run_pool(collections.deque(units), report.workers, settings, report, on_event, tick)
            if report.dead_workers:
                # A worker killed after an episode was durable but before its event arrived
                # stored more than was reported: count from the store (its journal sealed now,
                # as the next run would), so the report says what is on disk.
                recover_journals(store_path)
                with TrajectoryStore(store_path) as store:
                    _, now = plan_units(store, res.tasks, res.levels, cfg.episodes_per_level)
                report.unreported = max(0, now - already - report.stored)
                report.stored += report.unreported
        report.seconds = time.perf_counter() - start
    return report


def _run_inline(units: list[Unit], settings: PlaySettings, report: CollectReport,
                on_event: Callable[[Event], None], tick: Callable[[], None]) -> None:
    """Play every unit in this process (``workers=0``); Ctrl-C stops after the current episode."""
    from icrl.store.writer import ShardWriter

    def emit(ev: Event) -> None:
        report.add(ev)
        on_event(ev)
        tick()

    envs = EnvCache(settings)
    try:
        with ShardWriter(settings.store, f"collect-p{os.getpid()}") as writer:
            for unit in units:
                play_unit(unit, envs, writer, settings, emit)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        envs.close()
