"""``icrl envs ...``: list the suites and check that every task constructs and steps."""

from __future__ import annotations

import argparse
import time

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    envs = subparsers.add_parser("envs", help="environment suites: list, show, check")
    sub = envs.add_subparsers(dest="envs_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="suites, tasks, observation and action info")
    p.add_argument("suites", nargs="*", help="suite names or files (default: all in envs/)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="print (and optionally save) a resolved suite config")
    p.add_argument("suite", help="suite name or file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set sticky_p=0.2 (repeatable)")
    p.add_argument("--save", metavar="PATH", help="also write the resolved suite to PATH")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check", help="construct and step every task; non-zero exit if any fails")
    p.add_argument("suites", nargs="*", help="suite names or files (default: all in envs/)")
    p.add_argument("--split", help="only this split")
    p.add_argument("--steps", type=int, default=20, help="random legal steps per task (default 20)")
    p.add_argument("--level", type=int, default=0, help="level seed to check (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite field, e.g. --set sticky_p=0.2")
    p.set_defaults(func=cmd_check)


def _suites(names: list[str], overrides: list[str] = ()):
    from icrl.envs.suite import load_suite, suite_paths

    return [load_suite(n, overrides) for n in (names or [str(p) for p in suite_paths()])]


def _describe_obs(spec) -> str:
    return ", ".join(f"{k} {np.dtype(d).name}{list(s)}" for k, (s, d) in spec.obs_spec.items())


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from icrl.envs.registry import make_env

    console = Console()
    for suite in _suites(args.suites):
        table = Table(title=f"suite {suite.name} ({suite.domain})")
        for col in ("split", "task", "observation", "actions"):
            table.add_column(col)
        spec = None
        for split, tasks in suite.splits.items():
            for task in tasks:
                env = make_env(task, max_steps=suite.max_steps, distribution_mode=suite.distribution_mode)
                spec = env.spec
                env.close()
                table.add_row(split, task, _describe_obs(spec), str(spec.num_actions))
        console.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from icrl.config import dump_config, save_config

    (suite,) = _suites([args.suite], args.overrides)
    print(dump_config(suite), end="")
    if args.save:
        save_config(suite, args.save)
    return 0


def check_task(task: str, *, steps: int, level: int, sticky_p: float = 0.0,
               max_steps: int | None = None, distribution_mode: str = "easy") -> str:
    """Construct ``task``, reset it twice on ``level``, take ``steps`` random legal actions.

    Returns a one-line summary; raises on any failure (bad spec, non-deterministic level, crash).
    """
    from icrl.envs.registry import make_env

    t0 = time.perf_counter()
    env = make_env(task, sticky_p=sticky_p, max_steps=max_steps, distribution_mode=distribution_mode)
    try:
        first = env.reset(level)
        env.spec.check_observation(first)
        again = env.reset(level)
        for key in first:
            if not np.array_equal(first[key], again[key]):
                raise AssertionError(f"level {level} is not reproducible: {key} differs between resets")
        rng = np.random.default_rng(level)
        episodes, t1 = 0, time.perf_counter()
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(int(rng.choice(env.spec.legal_actions)))
            env.spec.check_observation(obs)
            if not np.isfinite(reward):
                raise AssertionError(f"non-finite reward {reward}")
            if terminated or truncated:
                episodes += 1
                env.reset(level)
        rate = steps / max(time.perf_counter() - t1, 1e-9)
    finally:
        env.close()
    return (f"{_describe_obs(env.spec)}; {env.spec.num_actions} actions; "
            f"{steps} steps ({episodes} episodes ended), {rate:,.0f} steps/s; "
            f"{time.perf_counter() - t0:.1f}s")


def cmd_check(args: argparse.Namespace) -> int:
    from icrl.errors import IcrlError

    if args.steps < 1:
        raise IcrlError(f"--steps must be >= 1, got {args.steps}")
    ok = failed = 0
    for suite in _suites(args.suites, args.overrides):
        for task in suite.tasks(args.split):
            try:
                line = check_task(task, steps=args.steps, level=args.level, sticky_p=suite.sticky_p,
                                  max_steps=suite.max_steps, distribution_mode=suite.distribution_mode)
            except Exception as err:  # one line per failing task; the run goes on
                failed += 1
                print(f"FAIL {suite.name:8s} {task}: {type(err).__name__}: {err}", flush=True)
            else:
                ok += 1
                print(f"ok   {suite.name:8s} {task}: {line}", flush=True)
    print(f"checked {ok + failed} tasks: {ok} ok, {failed} failed")
    return 1 if failed else 0
