"""Collection throughput (``icrl collect``) and the store figures on the episodes it collects.

Prints:
- collection episodes/s and steps/s (every attempt's steps) with 0 (in-process), 1 and 2 worker
  processes: over the whole run (worker start-up included) and from the first finished episode on;
- store write throughput (episodes/s) re-writing the collected episodes with the collection's writer
  settings, random-read throughput by index (episodes/s, steps/s), and bytes per step on disk
  against raw arrays (``benchmarks/store_throughput.py`` functions, on real oracle episodes);
- peak RSS of a reader doing the same random reads on a store and on one 10x larger.

    uv run python benchmarks/collect_throughput.py                       # ~2 minutes on 2 cores
    uv run python benchmarks/collect_throughput.py --levels 50 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from store_throughput import fill, peak_rss_mib, random_reads  # benchmarks/ is sys.path[0]

from icrl.collect.config import CollectConfig
from icrl.collect.run import run_collection
from icrl.collect.units import Event
from icrl.store.reader import TrajectoryStore
from icrl.store.summary import summarize

DEFAULT_TASKS = ("MiniHack-MazeWalk-9x9-v0", "MiniHack-MultiRoom-N6-v0", "MiniHack-CorridorBattle-Dark-v0",
                 "MiniHack-SimpleCrossingS9N2-v0")


@dataclasses.dataclass
class Timing:
    workers: int
    episodes: int
    steps: int
    seconds: float
    steady_episodes: int
    steady_steps: int
    steady_seconds: float


def collect(path: Path, tasks: list[str], levels: int, episodes: int, workers: int, sticky: float) -> Timing:
    """One collection run into a fresh store; rates over the run and after the first episode."""
    stamps: list[tuple[float, int, bool]] = []  # (time, steps, stored) per attempt

    def on_event(ev: Event) -> None:
        stamps.append((time.perf_counter(), ev.steps, ev.outcome == "stored"))

    cfg = CollectConfig(suite="minihack", split="train", tasks=tasks, levels=levels, episodes_per_level=episodes,
                        sticky=sticky, workers=workers, out=str(path))
    report = run_collection(cfg, on_event=on_event)
    t0 = stamps[0][0]
    return Timing(workers, report.stored, report.steps, report.seconds,
                  sum(s for _, _, s in stamps[1:]), sum(n for _, n, _ in stamps[1:]), stamps[-1][0] - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="train tasks of envs/minihack.yaml")
    ap.add_argument("--levels", type=int, default=10, help="levels per task")
    ap.add_argument("--episodes-per-level", type=int, default=2)
    ap.add_argument("--sticky", type=float, default=0.2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time (0: in-process)")
    ap.add_argument("--reads", type=int, default=300, help="random reads per read measurement")
    ap.add_argument("--writes", type=int, default=200, help="episodes re-written for the write measurement")
    ap.add_argument("--rss-episodes", type=int, default=100, help="episodes of the small RSS store (large: 10x)")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="icrl-collect-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"collection benchmark: {len(args.tasks)} tasks x {args.levels} levels x {args.episodes_per_level} "
          f"episodes, sticky {args.sticky}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"work dir {work}")
    for t in args.tasks:
        print(f"  {t}")
    header = (f"{'workers':>7} | {'episodes':>8} {'steps':>7} {'seconds':>7} | {'episodes/s':>10} {'steps/s':>8} | "
              f"{'after 1st episode: ep/s':>23} {'steps/s':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    stores = {}
    for w in args.workers:
        stores[w] = path = work / f"collect-w{w}"
        t = collect(path, args.tasks, args.levels, args.episodes_per_level, w, args.sticky)
        print(f"{w:7d} | {t.episodes:8d} {t.steps:7d} {t.seconds:7.1f} | {t.episodes / t.seconds:10.2f} "
              f"{t.steps / t.seconds:8.0f} | {t.steady_episodes / t.steady_seconds:23.2f} "
              f"{t.steady_steps / t.steady_seconds:8.0f}")
    print("steps count every attempt (dropped failures too); seconds include starting the worker processes.")

    collected = stores[args.workers[-1]]
    store = TrajectoryStore(collected)
    episodes = [store.read(r) for r in store]
    s = summarize(store)
    print(f"\nstore of the collected episodes ({s.episodes} episodes, {s.steps} steps, "
          f"{s.steps / s.episodes:.1f} steps/episode):")
    print(f"  bytes per step: raw arrays {s.raw_bytes / s.steps:,.0f}, encoded records "
          f"{s.record_bytes / s.steps:,.1f} ({s.compression_ratio:.0f}x), on disk {s.disk_bytes_per_step:,.1f} "
          f"({s.disk_ratio:.0f}x; disk includes ArrayRecord's per-shard padding and the index)")
    t_append, t_seal = fill(work / "rewrite", episodes, args.writes)  # lzma, fsync per append: as collect
    print(f"  write: {args.writes / (t_append + t_seal):,.1f} episodes/s ({args.writes} episodes re-written, "
          f"lzma, fdatasync per append)")
    t_read, steps = random_reads(collected, args.reads)
    print(f"  random read by index: {args.reads / t_read:,.1f} episodes/s, {steps / t_read:,.0f} steps/s")

    small, large = work / "rss-small", work / "rss-large"
    fill(small, episodes, args.rss_episodes, fsync=False)
    fill(large, episodes, 10 * args.rss_episodes, fsync=False)
    p_small, p_large = peak_rss_mib(small, args.reads), peak_rss_mib(large, args.reads)
    print(f"  reader peak RSS, {args.reads} random reads: store of {args.rss_episodes} episodes {p_small:.1f} MiB, "
          f"of {10 * args.rss_episodes} episodes {p_large:.1f} MiB ({p_large - p_small:+.1f} MiB)")


if __name__ == "__main__":
    main()
