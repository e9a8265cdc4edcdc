"""``icrl collect`` (expert data into a trajectory store) and ``icrl play`` (human demos).

    icrl collect --suite envs/minihack.yaml --split train --levels 100 --episodes-per-level 5 \\
                 --sticky 0.2 --workers 2 --out data/minihack-train
    icrl collect --recipe datasets/minihack-train.yaml [--set levels=1000] [--workers 8]
    icrl play MiniHack-MazeWalk-15x15-v0 --split heldout --level 3 --out data/minihack-human

A recipe (``datasets/*.yaml``) holds ``icrl.collect.config.CollectConfig`` fields; ``--set k=v`` and
the flags override it (flags last). Re-running the same command resumes: stored episodes are skipped.
Exit status: 0 when every planned episode was stored or given up, 1 when a worker died or the run
was interrupted (run it again to finish), 2 for bad input.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

# Flags that set CollectConfig fields: flag dest -> field name.
FLAG_FIELDS: dict[str, str] = {
    "suite": "suite", "split": "split", "tasks": "tasks", "levels": "levels", "first_level": "first_level",
    "episodes_per_level": "episodes_per_level", "sticky": "sticky", "max_steps": "max_steps",
    "max_attempts": "max_attempts", "keep_failed": "keep_failed", "workers": "workers", "seed": "seed",
    "out": "out",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("collect", help="play a suite's tasks with the expert into a trajectory store (resumable)")
    p.add_argument("--recipe", help="recipe YAML (datasets/<name>.yaml, or just <name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set levels=1000 (repeatable)")
    p.add_argument("--suite", help="task suite: envs/<name>.yaml or a path")
    p.add_argument("--split", help="split whose tasks are played: train | heldout (default train)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks of the split")
    p.add_argument("--levels", type=int, help="levels per task (default 10)")
    p.add_argument("--first-level", type=int, help="index of the first level in the split (default 0)")
    p.add_argument("--episodes-per-level", type=int, help="episodes per (task, level) (default 5)")
    p.add_argument("--sticky", type=float, help="sticky-action probability (default: the suite's)")
    p.add_argument("--max-steps", type=int, help="step limit (default: the suite's, else the task's own)")
    p.add_argument("--max-attempts", type=int, help="attempts per episode before giving it up (default 5)")
    p.add_argument("--keep-failed", action="store_const", const=True, help="store failed episodes too")
    p.add_argument("--workers", type=int, help="worker processes; 0 plays in this process (default 1)")
    p.add_argument("--seed", type=int, help="seed of sticky actions and expert tie-breaks (default 0)")
    p.add_argument("--out", help="trajectory store to append to (created if missing)")
    p.add_argument("--wait", action="store_true",
                   help="if another command is writing the store, wait for it to finish (default: stop, naming it)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--log-every", type=float, default=10.0, metavar="SECONDS",
                   help="without a terminal: a progress line every SECONDS (default 10)")
    p.set_defaults(func=cmd_collect)

    p = subparsers.add_parser("play", help="play a MiniHack level in the terminal; store it as a human demo")
    p.add_argument("task", help="task id, e.g. MiniHack-MazeWalk-15x15-v0")
    p.add_argument("--level", type=int, default=0, help="level index within --split (default 0)")
    p.add_argument("--split", default="heldout", help="split whose level seeds --level indexes (default heldout)")
    p.add_argument("--out", required=True, help="trajectory store to append the demo to (created if missing)")
    p.add_argument("--sticky", type=float, default=0.0, help="sticky-action probability (default 0)")
    p.add_argument("--max-steps", type=int, default=None, help="step limit (default: the task's own)")
    p.add_argument("--keep-failed", action="store_true", help="store the episode even if it did not solve the task")
    p.set_defaults(func=cmd_play)


def load_collect_config(args: argparse.Namespace) -> tuple[Any, str]:
    """The CollectConfig of a recipe, ``--set`` overrides and flags; and a name for error messages."""
    from icrl.config import apply_overrides, read_yaml, validate
    from icrl.collect.config import CollectConfig, resolve_recipe_path

    data: dict[str, Any] = {}
    source = "command line"
    if args.recipe:
        path = resolve_recipe_path(args.recipe)
        data = read_yaml(path)
        source = str(path)
    data = apply_overrides(data, args.overrides)
    flags = {field: getattr(args, dest) for dest, field in FLAG_FIELDS.items() if getattr(args, dest) is not None}
    data.update(flags)
    if args.overrides or (flags and args.recipe):
        source += " (with " + " ".join([f"--set {o}" for o in args.overrides] + [f"--{k.replace('_', '-')}" for k in flags]) + ")"
    return validate(CollectConfig, data, source), source


class CollectProgress:
    """Episodes done / total, steps/s, success so far and ETA: a live bar on a terminal, else a
    plain line every ``log_every`` seconds (CI logs stay short)."""

    def __init__(self, *, quiet: bool = False, log_every: float = 10.0):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self.log_every = log_every
        self.bar: Any = None
        self.report: Any = None
        self.start_time = time.perf_counter()
        self.last_log = self.start_time
        self.logged_done = -1  # episodes done at the last plain line (no repeated final line)

    def start(self, report: Any) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.report = report
        self.start_time = self.last_log = time.perf_counter()
        if self.live and report.planned:
            self.bar = Progress(
                TextColumn("collect"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                TextColumn("{task.fields[rate]} steps/s"), TextColumn("success {task.fields[success]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task("collect", total=report.planned, rate="-", success="-")

    def _figures(self) -> tuple[str, str]:
        r = self.report
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        success = f"{100 * r.successes / r.attempts:.1f}%" if r.attempts else "-"
        return f"{r.steps / elapsed:,.0f}", success

    def tick(self) -> None:
        if self.report is None or self.quiet:
            return
        now = time.perf_counter()
        if self.bar is not None:
            rate, success = self._figures()
            self.bar.update(self.task, completed=self.report.done, rate=rate, success=success)
        elif now - self.last_log >= self.log_every:
            self.last_log = now
            self._line()

    def _line(self) -> None:
        r = self.report
        rate, success = self._figures()
        elapsed = time.perf_counter() - self.start_time
        eta = "-"
        if r.done:
            left = elapsed / r.done * (r.planned - r.done)
            eta = time.strftime("%H:%M:%S", time.gmtime(left))
        pct = 100 * r.done / r.planned if r.planned else 100.0
        self.logged_done = r.done
        self.console.print(f"collect: {r.done:,}/{r.planned:,} episodes ({pct:.0f}%), {rate} steps/s, "
                           f"success {success}, ETA {eta}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.tick()
            self.bar.stop()
        elif self.report is not None and self.report.planned and not self.quiet \
                and self.logged_done != self.report.done:
            self._line()


def cmd_collect(args: argparse.Namespace) -> int:
    from icrl.collect.run import run_collection
    from icrl.errors import IcrlError

    if args.log_every <= 0:
        raise IcrlError(f"--log-every must be positive, got {args.log_every}")
    cfg, source = load_collect_config(args)
    if not cfg.keep_failed:
        from icrl.collect.config import resolve

        procgen = [t for t in resolve(cfg, source).tasks if t.startswith("procgen:")]
        if procgen:  # plunder, starpilot, ... cannot be finished in 200 steps: every attempt would be dropped
            print(f"warning: {len(procgen)} Procgen task(s): episodes that do not finish the level are dropped, "
                  "and several games cannot be finished in 200 steps; --keep-failed keeps them "
                  "(datasets/procgen-*.yaml do)", flush=True)
    progress = CollectProgress(quiet=args.quiet, log_every=args.log_every)

    def on_wait(holder: str) -> None:
        progress.console.print(f"collect: {cfg.out} is being written by {holder}; waiting for it to finish",
                               highlight=False, soft_wrap=True)

    try:
        report = run_collection(cfg, on_start=progress.start, tick=progress.tick, source=source,
                                wait=args.wait, on_wait=on_wait)
    finally:
        progress.close()
    print(report.summary(), flush=True)
    return 0 if report.complete else 1


def cmd_play(args: argparse.Namespace) -> int:
    from icrl.collect.play import play_in_terminal
    from icrl.errors import IcrlError

    if not 0.0 <= args.sticky <= 1.0:
        raise IcrlError(f"--sticky must be in [0, 1], got {args.sticky}")
    if args.max_steps is not None and args.max_steps < 1:
        raise IcrlError(f"--max-steps must be >= 1, got {args.max_steps}")
    outcome = play_in_terminal(args.task, args.level, args.out, split=args.split, sticky=args.sticky,
                               max_steps=args.max_steps, keep_failed=args.keep_failed)
    print(outcome.message)
    return 0
