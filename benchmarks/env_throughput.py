"""Environment steps per second, per domain: 1 env, and N envs batched.

For each task: one env stepped alone; N envs in this process (SerialVectorEnv); N envs over worker
processes (NetHack family); and Procgen's native batch. Ratios are against the single env measured
in the same run. Random legal actions; episodes that end are reset on the same level.

    uv run python benchmarks/env_throughput.py [--num-envs 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from icrl.envs import make_env, make_vector_env

TASKS = ("MiniHack-MazeWalk-15x15-v0", "MiniHack-MultiRoom-N6-v0", "NetHackChallenge-v0", "procgen:ninja")


def single_rate(task: str, seconds: float) -> float:
    env = make_env(task)
    rng = np.random.default_rng(0)
    legal = env.spec.legal_actions
    env.reset(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in rng.choice(legal, 256):
            _, _, term, trunc, _ = env.step(int(a))
            steps += 1
            if term or trunc:
                env.reset(0)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vector_rate(task: str, num_envs: int, workers: int, seconds: float) -> float:
    venv = make_vector_env(task, num_envs, workers=workers)
    rng = np.random.default_rng(0)
    legal = venv.spec.legal_actions
    levels = list(range(num_envs))
    venv.reset(levels)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = venv.step(rng.choice(legal, num_envs))
        steps += num_envs  # every env is live: the ones that end are reset right away
        if out.done.any():
            venv.reset(levels, mask=out.done)
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    args = parser.parse_args()
    workers = min(os.cpu_count() or 1, args.num_envs)
    print(f"cpu cores: {os.cpu_count()}; N = {args.num_envs} envs; {args.seconds:.0f} s per figure")
    print(f"{'task':36s} {'mode':22s} {'steps/s':>10s} {'x single':>9s}")
    for task in args.tasks:
        base = single_rate(task, args.seconds)
        print(f"{task:36s} {'1 env':22s} {base:10,.0f} {1.0:9.2f}")
        modes = [("batched, in-process", 0)]
        if not task.startswith("procgen:"):
            modes.append((f"batched, {workers} workers", workers))
        else:
            modes = [("batched, native gym3", 0)]
        for name, w in modes:
            rate = vector_rate(task, args.num_envs, w, args.seconds)
            print(f"{task:36s} {name:22s} {rate:10,.0f} {rate / base:9.2f}")


if __name__ == "__main__":
    main()
