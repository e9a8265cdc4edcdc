"""Success rate and return of the MiniHack planning oracle, per task.

    uv run python benchmarks/oracle_success.py --levels 50 --sticky 0.2
    uv run python benchmarks/oracle_success.py --tasks MiniHack-MazeWalk-9x9-v0 --levels 5 -v

Runs the oracle (``icrl.experts.make_expert``) on levels 0..N-1 of each task through icrl's env
adapter (``icrl.envs.make_env``: level pinning, sticky actions, the task's own step limit) and prints
one row per task: success rate, mean return, mean episode length, wall time. ``--markdown`` prints
the table as Markdown (what docs/experts.md holds).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from icrl.envs import make_env
from icrl.envs.suite import load_suite
from icrl.experts import REQUIRED_KEYS, make_expert


@dataclasses.dataclass
class TaskResult:
    task: str
    split: str
    returns: list[float]
    lengths: list[int]
    successes: list[bool]
    seconds: float

    @property
    def failed_levels(self) -> list[int]:
        return [i for i, ok in enumerate(self.successes) if not ok]


def run_task(task: str, split: str, levels: int, sticky: float, max_steps: int | None, seed: int) -> TaskResult:
    """Play one episode of the oracle on each level 0..levels-1 of ``task``."""
    env = make_env(task, sticky_p=sticky, max_steps=max_steps, seed=seed, extra_keys=REQUIRED_KEYS)
    expert = make_expert(task, env.native_actions, np.random.default_rng(seed))
    legal = env.spec.legal_actions
    result = TaskResult(task, split, [], [], [], 0.0)
    start = time.perf_counter()
    for level in range(levels):
        obs = env.reset(level)
        expert.reset()
        total, steps, done, info, reward = 0.0, 0, False, {}, 0.0
        while not done:
            obs, reward, terminated, truncated, info = env.step(int(legal[expert.act(obs)]))
            total += reward
            steps += 1
            done = terminated or truncated
        result.returns.append(total)
        result.lengths.append(steps)
        result.successes.append(bool(info.get("success", False)))
    result.seconds = time.perf_counter() - start
    env.close()
    return result


def format_rows(results: list[TaskResult], markdown: bool) -> str:
    header = ("split", "task", "levels", "success", "mean return", "mean length", "time (s)")
    rows = [
        (r.split, r.task, str(len(r.successes)), f"{np.mean(r.successes):.2f}", f"{np.mean(r.returns):+.2f}",
         f"{np.mean(r.lengths):.1f}", f"{r.seconds:.0f}")
        for r in results
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(x.ljust(n) for x, n in zip(row, widths)) for row in [header, *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="minihack", help="task suite (envs/<name>.yaml) when --tasks is not given")
    parser.add_argument("--tasks", nargs="*", default=None, help="task ids (default: every task of the suite)")
    parser.add_argument("--levels", type=int, default=50, help="levels 0..N-1 per task, one episode each")
    parser.add_argument("--sticky", type=float, default=0.0, help="sticky-action probability")
    parser.add_argument("--max-steps", type=int, default=None, help="step limit (default: the task's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sticky draws and the oracle's rng")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each task's failed levels")
    args = parser.parse_args(argv)

    suite = load_suite(args.suite)
    split_of = {t: s for s, tasks in suite.splits.items() for t in tasks}
    tasks = args.tasks or suite.tasks()
    results = []
    for task in tasks:
        res = run_task(task, split_of.get(task, "-"), args.levels, args.sticky, args.max_steps, args.seed)
        results.append(res)
        if args.verbose:
            print(f"{task}: success {np.mean(res.successes):.2f}, failed levels {res.failed_levels}", flush=True)
    print(f"oracle, {args.levels} levels per task, sticky p = {args.sticky}")
    print(format_rows(results, args.markdown))


if __name__ == "__main__":
    main()
