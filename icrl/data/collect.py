"""Expert data collection: play a suite's tasks with the expert and append the episodes to a store.

    from icrl.data.collect import CollectConfig, run_collection
    cfg = CollectConfig(suite="minihack", split="train", levels=100, episodes_per_level=5,
                        sticky=0.2, workers=2, out="data/minihack-train")
    report = run_collection(cfg)           # ``icrl collect`` is this plus a progress bar

Level seeds. Level ``i`` of split ``s`` is seed ``SPLIT_LEVEL_BASES[s] + i`` (``level_seed``): train
levels are 0 .. 2**30-1 and held-out levels 2**30 .. 2**31-1, so the two splits can never share a level,
whatever their sizes, and every seed fits Procgen's int32 ``start_level``. The store records the seed.

Episodes and attempts. Each (task, level) gets episodes ``0 .. episodes_per_level-1``. Episode ``e``
is the first *successful* attempt among attempts ``a = 0 .. max_attempts-1``; attempt ``a`` draws its
sticky actions and the expert's tie-breaks from seeds derived from ``(seed, task, level, e, a)``
(``attempt_seeds``), so an episode is the same whether a run was interrupted or not. Failed attempts
are dropped (counted, not stored); an episode whose every attempt fails is *given up*: it is not
stored and a later run tries it again (with the same seeds, so on the same outcome unless the
settings changed). With ``keep_failed`` attempt 0 is stored whatever its outcome (no retries).

Resume. Before starting, the store is read once and every (task, level, episode) already in it is
skipped; only missing episodes are played. A killed run loses only the episodes being played.

Workers. ``workers`` processes (``spawn``: safe when the parent has JAX or threads) each own their
envs, their expert and one ``ShardWriter`` for the whole run. The parent hands out (task, level)
units one at a time over a private pipe per worker (no shared queue lock a killed worker could leave
held), and each worker reports every attempt back. A worker that dies is reported; the others carry
on. Workers die with the parent (Linux ``PR_SET_PDEATHSIG``), so a killed run leaves no orphans.
Ctrl-C: workers finish the episode they are playing, seal their journals and exit; the run reports
what is unfinished. ``workers=0`` plays in the calling process (debugging, tiny runs).
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing as mp
import os
import signal
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from icrl.config import ConfigBase, ConfigError
from icrl.data.episode import OBS_SPECS, Episode
from icrl.errors import IcrlError

# ------------------------------------------------------------------------------------ level seeds

# First seed of each split and the number of seeds each owns: disjoint blocks below 2**31.
LEVELS_PER_SPLIT = 1 << 30
SPLIT_LEVEL_BASES: dict[str, int] = {"train": 0, "heldout": LEVELS_PER_SPLIT}


def level_seed(split: str, index: int) -> int:
    """The level seed of level ``index`` of ``split``: ``SPLIT_LEVEL_BASES[split] + index``."""
    if split not in SPLIT_LEVEL_BASES:
        raise IcrlError(f"no level seeds for split {split!r}; splits: {sorted(SPLIT_LEVEL_BASES)}")
    if not 0 <= index < LEVELS_PER_SPLIT:
        raise IcrlError(f"level index {index} of split {split!r} is outside [0, {LEVELS_PER_SPLIT})")
    return SPLIT_LEVEL_BASES[split] + int(index)


def split_levels(split: str, count: int, first: int = 0) -> range:
    """Seeds of levels ``first .. first+count-1`` of ``split`` (see ``level_seed``)."""
    if count < 0:
        raise IcrlError(f"level count must be >= 0, got {count}")
    start = level_seed(split, first)
    if count:
        level_seed(split, first + count - 1)  # raises if the range leaves the split's block
    return range(start, start + count)


def attempt_seeds(seed: int, task: str, level: int, episode: int, attempt: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sticky-action seed, expert seed) of one attempt: numpy seed sequences, stable across runs.

    The task enters as its CRC-32 (Python's ``hash`` of a string changes between processes).
    """
    base = (int(seed), zlib.crc32(task.encode()), int(level), int(episode), int(attempt))
    return (*base, 0), (*base, 1)


# ----------------------------------------------------------------------------------------- config


class CollectConfig(ConfigBase):
    """A collection recipe (``datasets/*.yaml``); ``icrl collect`` flags set the same fields."""

    suite: str | None = Field(None, description="Task suite: a name in envs/ ('minihack') or a YAML path.")
    split: str = Field("train", description="Split of the suite whose tasks are played (train | heldout).")
    tasks: list[str] | None = Field(None, description="Subset of the split's tasks; null plays them all.")
    levels: int = Field(10, ge=1, description="Levels per task.")
    first_level: int = Field(0, ge=0, description="Index of the first level within the split (to extend a dataset).")
    episodes_per_level: int = Field(5, ge=1, description="Episodes per (task, level).")
    sticky: float | None = Field(None, ge=0.0, le=1.0, description="Sticky-action probability; null: the suite's.")
    max_steps: int | None = Field(None, ge=1, description="Step limit; null: the suite's (else the task's own).")
    max_attempts: int = Field(5, ge=1, description="Attempts per episode before it is given up (failures dropped).")
    keep_failed: bool = Field(False, description="Store failed episodes too (one attempt each, no retries).")
    workers: int = Field(1, ge=0, description="Worker processes; 0 plays in the calling process.")
    seed: int = Field(0, ge=0, description="Seed of sticky actions and expert tie-breaks.")
    source: Literal["oracle"] = Field("oracle", description="Source recorded with each episode (the expert).")
    out: str | None = Field(None, description="Trajectory store to append to (created if missing).")


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a config means once its suite is read: tasks, level seeds, sticky p, step limit."""

    tasks: tuple[str, ...]
    levels: range
    sticky: float
    max_steps: int | None


def resolve(cfg: CollectConfig, source: str = "collect config") -> Resolved:
    """Check ``cfg`` against its suite; ConfigError/IcrlError naming ``source`` and the field."""
    from icrl.envs.suite import load_suite

    if cfg.suite is None:
        raise ConfigError(f"{source}: suite: no task suite given (recipe key `suite` or --suite)")
    if cfg.out is None:
        raise ConfigError(f"{source}: out: no output store given (recipe key `out` or --out)")
    suite = load_suite(cfg.suite)
    available = suite.tasks(cfg.split)
    tasks = available if cfg.tasks is None else cfg.tasks
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise ConfigError(f"{source}: tasks: {unknown} not in split {cfg.split!r} of suite {suite.name!r} "
                          f"({', '.join(available)})")
    if not tasks:
        raise ConfigError(f"{source}: no tasks to play in split {cfg.split!r}")
    try:
        levels = split_levels(cfg.split, cfg.levels, cfg.first_level)
    except IcrlError as err:
        raise ConfigError(f"{source}: {err}") from None
    return Resolved(
        tasks=tuple(dict.fromkeys(tasks)), levels=levels,
        sticky=suite.sticky_p if cfg.sticky is None else cfg.sticky,
        max_steps=suite.max_steps if cfg.max_steps is None else cfg.max_steps,
    )


# ------------------------------------------------------------------------------------ recording


class EpisodeRecorder:
    """Accumulates (observation, chosen action, reward) steps into an ``Episode``.

    Only the domain's stored observation keys (``OBS_SPECS``) are kept: extra keys an expert needs
    (glyphs, blstats, message) are dropped here.
    """

    def __init__(self, domain: str):
        self.domain = domain
        self.keys = tuple(OBS_SPECS[domain])
        self.frames: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        self.actions: list[int] = []
        self.rewards: list[float] = []

    def add(self, obs: dict[str, np.ndarray], action: int, reward: float) -> None:
        """Record one step: ``obs`` is the observation ``action`` was chosen from."""
        for k in self.keys:
            self.frames[k].append(np.asarray(obs[k]))
        self.actions.append(int(action))
        self.rewards.append(float(reward))

    def __len__(self) -> int:
        return len(self.actions)

    def finish(self, *, task: str, level: int, episode: int, source: str, terminated: bool,
               truncated: bool) -> Episode:
        """The recorded steps as a validated ``Episode``."""
        spec = OBS_SPECS[self.domain]
        ep = Episode(
            domain=self.domain, task=task, level=int(level), source=source,  # type: ignore[arg-type]
            observations={k: np.stack(self.frames[k]).astype(spec[k][1], copy=False) for k in self.keys},
            actions=np.asarray(self.actions, np.int32), rewards=np.asarray(self.rewards, np.float32),
            terminated=bool(terminated), truncated=bool(truncated), episode=int(episode),
        )
        ep.validate()
        return ep


# ---------------------------------------------------------------------------------- playing units


@dataclasses.dataclass(frozen=True)
class Unit:
    """A work unit: the episodes still missing for one (task, level)."""

    task: str
    level: int
    episodes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a worker needs to play units (picklable: sent to spawned workers)."""

    store: str
    sticky: float
    max_steps: int | None
    seed: int
    max_attempts: int
    keep_failed: bool
    source: str


Outcome = Literal["stored", "dropped", "gave_up"]


@dataclasses.dataclass(frozen=True)
class Event:
    """One attempt's outcome: ``stored`` (in the store now), ``dropped`` (a failed attempt, not
    stored) or ``gave_up`` (after the last dropped attempt of an episode; steps 0)."""

    outcome: Outcome
    task: str
    level: int
    episode: int
    attempt: int
    steps: int
    success: bool


class EnvCache:
    """The worker's envs, one per task, at most ``size`` open (least recently used closed first)."""

    def __init__(self, settings: Settings, size: int = 4):
        self.settings = settings
        self.size = size
        self._envs: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def get(self, task: str) -> Any:
        from icrl.envs import make_env
        from icrl.experts import REQUIRED_KEYS

        env = self._envs.get(task)
        if env is None:
            # Sticky actions are added per attempt (``play_attempt``) so each attempt has its own seed.
            env = make_env(task, sticky_p=0.0, max_steps=self.settings.max_steps, extra_keys=REQUIRED_KEYS)
            self._envs[task] = env
            while len(self._envs) > self.size:
                self._envs.popitem(last=False)[1].close()
        self._envs.move_to_end(task)
        return env

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def play_attempt(env: Any, task: str, level: int, episode: int, attempt: int,
                 settings: Settings) -> tuple[Episode, bool]:
    """Play one attempt of the expert on ``level``: (episode, solved). Deterministic in its seeds."""
    from icrl.envs.wrappers import StickyActions
    from icrl.experts import make_expert

    sticky_seed, expert_seed = attempt_seeds(settings.seed, task, level, episode, attempt)
    played = StickyActions(env, settings.sticky, seed=sticky_seed)
    expert = make_expert(task, env.native_actions, np.random.default_rng(expert_seed))
    legal = env.spec.legal_actions
    rec = EpisodeRecorder(env.spec.domain)
    obs = played.reset(level)
    expert.reset()
    while True:
        action = int(legal[expert.act(obs)])  # record the agent's choice, not the sticky-executed one
        next_obs, reward, terminated, truncated, info = played.step(action)
        rec.add(obs, action, reward)
        obs = next_obs
        if terminated or truncated:
            break
    ep = rec.finish(task=task, level=level, episode=episode, source=settings.source,
                    terminated=terminated, truncated=truncated)
    return ep, bool(info.get("success", False))


def play_unit(unit: Unit, envs: EnvCache, writer: Any, settings: Settings,
              emit: Callable[[Event], None], stop: Callable[[], bool] = lambda: False) -> None:
    """Play the missing episodes of ``unit``, appending kept ones to ``writer`` and emitting an
    ``Event`` per attempt. ``stop()`` is checked between episodes (a graceful interrupt)."""
    env = envs.get(unit.task)
    attempts = 1 if settings.keep_failed else settings.max_attempts
    for e in unit.episodes:
        if stop():
            return
        for a in range(attempts):
            ep, success = play_attempt(env, unit.task, unit.level, e, a, settings)
            if success or settings.keep_failed:
                writer.append(ep)  # durable when it returns
                emit(Event("stored", unit.task, unit.level, e, a, ep.length, success))
                break
            emit(Event("dropped", unit.task, unit.level, e, a, ep.length, False))
        else:
            emit(Event("gave_up", unit.task, unit.level, e, attempts - 1, 0, False))


# -------------------------------------------------------------------------------- worker process

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


def _worker_main(index: int, conn: Connection, settings: Settings, parent_pid: int) -> None:
    """Entry point of a spawned worker: play the units the parent sends until told to stop.

    Messages to the parent: ``Event`` per attempt, ``("unit_done",)``, ``("error", kind, text)``.
    From the parent: a ``Unit``, ``None`` (no more work) or ``STOP``.
    """
    from icrl.data.store import ShardWriter

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
        writer = ShardWriter(settings.store, f"collect-w{index}")
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


# ------------------------------------------------------------------------------------ the parent


@dataclasses.dataclass
class CollectReport:
    """What a collection run did. ``planned`` counts the episodes that were missing at start."""

    store: str
    tasks: int
    levels: int
    episodes_per_level: int
    already_stored: int = 0
    planned: int = 0
    stored: int = 0
    dropped: int = 0  # failed attempts not stored
    gave_up: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    attempts: int = 0
    successes: int = 0
    steps: int = 0
    stored_steps: int = 0
    seconds: float = 0.0
    workers: int = 0
    dead_workers: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False

    @property
    def done(self) -> int:
        """Episodes resolved this run: stored or given up."""
        return self.stored + len(self.gave_up)

    @property
    def unfinished(self) -> int:
        """Planned episodes neither stored nor given up (a dead worker, an interrupt)."""
        return self.planned - self.done

    @property
    def complete(self) -> bool:
        return self.unfinished == 0 and not self.dead_workers

    def add(self, ev: Event) -> None:
        if ev.outcome != "gave_up":
            self.attempts += 1
            self.successes += ev.success
            self.steps += ev.steps
        if ev.outcome == "stored":
            self.stored += 1
            self.stored_steps += ev.steps
        elif ev.outcome == "dropped":
            self.dropped += 1
        else:
            self.gave_up.append((ev.task, ev.level, ev.episode))

    def summary(self) -> str:
        """A few lines for people: counts, rates, and what to do about anything missing."""
        lines = [
            f"store {self.store}: {self.tasks} tasks x {self.levels} levels x {self.episodes_per_level} episodes; "
            f"{self.already_stored:,} already stored, {self.planned:,} to play",
        ]
        if not self.planned:
            return "\n".join(lines + ["nothing to do: every episode is stored"])
        where = f"{self.workers} worker process(es)" if self.workers else "this process"
        rate = max(self.seconds, 1e-9)
        lines += [
            f"stored {self.stored:,} episodes ({self.stored_steps:,} steps) in {self.seconds:.1f} s in "
            f"{where}: {self.stored / rate:.2f} episodes/s, {self.steps / rate:,.0f} steps/s",
            f"attempts {self.attempts:,}, successful {self.successes:,}"
            + (f" ({100 * self.successes / self.attempts:.1f}%)" if self.attempts else "")
            + f"; failed attempts dropped {self.dropped:,}; episodes given up {len(self.gave_up):,}",
        ]
        for task, level, episode in self.gave_up[:10]:
            lines.append(f"  gave up: {task} level {level} episode {episode} (every attempt failed)")
        if len(self.gave_up) > 10:
            lines.append(f"  ... and {len(self.gave_up) - 10} more given up")
        for dead in self.dead_workers:
            lines.append(f"worker died: {dead}")
        if self.interrupted:
            lines.append("interrupted")
        if self.unfinished:
            lines.append(f"{self.unfinished:,} episodes unfinished: run the same command again to collect them")
        return "\n".join(lines)


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

    for task in tasks:
        # Procgen tasks have no NLE actions: make_expert names the task it has no expert for.
        native = nethack_actions_of(task_legal_actions(task)) if domain_of(task) == "nethack" else ()
        make_expert(task, native)


class _Pool:
    """Spawned workers, each with its own pipe; hands out units, collects events."""

    def __init__(self, n: int, settings: Settings):
        ctx = mp.get_context("spawn")
        self.conns: dict[Connection, tuple[int, Any]] = {}
        self.sent_none: set[int] = set()
        for i in range(n):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(i, child, settings, os.getpid()), name=f"icrl-collect-{i}", daemon=True)
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


def _run_pool(units: collections.deque[Unit], n: int, settings: Settings, report: CollectReport,
              on_event: Callable[[Event], None], tick: Callable[[], None]) -> None:
    """Run ``units`` on ``n`` spawned workers until all are done, every worker died, or Ctrl-C."""
    pool = _Pool(n, settings)
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


def run_collection(cfg: CollectConfig, *, on_event: Callable[[Event], None] = lambda ev: None,
                   on_start: Callable[[CollectReport], None] = lambda r: None,
                   tick: Callable[[], None] = lambda: None, source: str = "collect config") -> CollectReport:
    """Collect the episodes ``cfg`` asks for that the store lacks; returns what was done.

    ``on_start`` gets the report once the plan is known (``planned`` set); ``on_event`` gets every
    attempt's ``Event``; ``tick`` is called at least twice a second (progress display).
    """
    from icrl.data.store import TrajectoryStore, recover_journals

    res = resolve(cfg, source)
    check_experts(res.tasks)
    store_path = str(cfg.out)
    TrajectoryStore.create(store_path).close()
    recover_journals(store_path)  # seal journals of a killed run so the plan reads sealed shards
    with TrajectoryStore(store_path) as store:
        units, already = plan_units(store, res.tasks, res.levels, cfg.episodes_per_level)
    report = CollectReport(store=store_path, tasks=len(res.tasks), levels=len(res.levels),
                           episodes_per_level=cfg.episodes_per_level, already_stored=already,
                           planned=sum(len(u.episodes) for u in units))
    settings = Settings(store=store_path, sticky=res.sticky, max_steps=res.max_steps, seed=cfg.seed,
                        max_attempts=cfg.max_attempts, keep_failed=cfg.keep_failed, source=cfg.source)
    report.workers = min(cfg.workers, len(units))
    on_start(report)
    start = time.perf_counter()
    if units and report.workers == 0:
        _run_inline(units, settings, report, on_event, tick)
    elif units:
        _run_pool(collections.deque(units), report.workers, settings, report, on_event, tick)
    report.seconds = time.perf_counter() - start
    return report


def _run_inline(units: list[Unit], settings: Settings, report: CollectReport,
                on_event: Callable[[Event], None], tick: Callable[[], None]) -> None:
    """Play every unit in this process (``workers=0``); Ctrl-C stops after the current episode."""
    from icrl.data.store import ShardWriter

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


def resolve_recipe_path(path: str | os.PathLike) -> Path:
    """The recipe file at ``path`` (or ``datasets/<name>.yaml`` for a bare name); IcrlError if none."""
    p = Path(path)
    if p.is_file():
        return p
    for candidate in (Path("datasets") / f"{path}.yaml", Path(__file__).resolve().parents[2] / "datasets" / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: no such recipe file (recipes live in datasets/)")
