"""Trajectory store throughput, compression and reader memory.

Prints, per domain (nethack tty, procgen rgb) and compression (lzma, zlib):
- write throughput: episodes/s and MB/s of raw arrays, with the per-append fsync on and off, and
  what the journal-then-seal design costs against writing the same records straight into one
  ArrayRecord file (no durability before close);
- random-read throughput by index (episodes/s, steps/s);
- bytes per step: raw arrays, encoded records, on disk; compression ratios;
- peak RSS of a reader that reads N random episodes from a store and from one 10x larger, each in
  its own subprocess so the peaks are separate.

Episodes are synthetic (``icrl.data.synthetic``); ``--real`` adds compression ratios measured on
random-action MiniHack and Procgen episodes from the environments themselves.

    uv run python benchmarks/store_throughput.py            # ~1 minute on 2 cores
    uv run python benchmarks/store_throughput.py --episodes 500 --length 200 --real
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from icrl.store.codec import COMPRESSIONS, encode_episode, raw_nbytes
from icrl.store.episode import Episode
from icrl.store.layout import WRITER_OPTIONS
from icrl.store.reader import TrajectoryStore
from icrl.store.writer import ShardWriter
from icrl.store.summary import summarize
from icrl.data.synthetic import nethack_episode, procgen_episode


def templates(domain: str, length: int, k: int = 8) -> list[Episode]:
    make = nethack_episode if domain == "nethack" else procgen_episode
    return [make(seed, level=seed, length=length, success=seed % 2 == 0) for seed in range(k)]


def fill(path: Path, eps: list[Episode], n: int, **writer_kwargs: object) -> tuple[float, float]:
    """Write n episodes (cycling the templates with new levels); (append seconds, close seconds)."""
    TrajectoryStore.create(path)
    w = ShardWriter(path, "bench", **writer_kwargs)
    t0 = time.perf_counter()
    for i in range(n):
        w.append(dataclasses.replace(eps[i % len(eps)], level=i, episode=0))
    t1 = time.perf_counter()
    w.close()
    return t1 - t0, time.perf_counter() - t1


def encode_only(eps: list[Episode], n: int, compression: str) -> tuple[float, list[bytes]]:
    """Seconds to encode n episodes (no I/O), and the records."""
    t0 = time.perf_counter()
    records = [encode_episode(dataclasses.replace(eps[i % len(eps)], level=i), compression) for i in range(n)]
    return time.perf_counter() - t0, records


def direct_arrayrecord(path: Path, records: list[bytes]) -> float:
    """Seconds to write encoded records straight into one ArrayRecord file (durable only on close)."""
    t0 = time.perf_counter()
    w = ArrayRecordWriter(str(path), WRITER_OPTIONS)
    for r in records:
        w.write(r)
    w.close()
    os.sync()
    return time.perf_counter() - t0


def random_reads(path: Path, n: int) -> tuple[float, int]:
    store = TrajectoryStore(path)
    rows = np.random.default_rng(0).integers(0, len(store), size=n)
    t0 = time.perf_counter()
    steps = sum(store.read(store.ref(int(i))).length for i in rows)
    return time.perf_counter() - t0, steps


_PEAK_READER = """
    import resource, sys
    import numpy as np
    from icrl.store.reader import TrajectoryStore
    store = TrajectoryStore(sys.argv[1])
    for i in np.random.default_rng(0).integers(0, len(store), size=int(sys.argv[2])):
        store.read(store.ref(int(i)))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(path: Path, reads: int) -> float:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_PEAK_READER), str(path), str(reads)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout) / 1024


def real_episodes(length: int) -> dict[str, list[Episode]]:
    """Random-action episodes from MiniHack and Procgen (environments imported here only)."""
    import gymnasium as gym
    import minihack  # noqa: F401  (registers MiniHack environments)

    rng = np.random.default_rng(0)
    out: dict[str, list[Episode]] = {}
    for env_id in ("MiniHack-MazeWalk-15x15-v0", "MiniHack-Room-Random-15x15-v0"):
        env = gym.make(env_id, observation_keys=("tty_chars", "tty_colors", "tty_cursor"))
        eps = []
        for level in range(3):
            obs, _ = env.reset(seed=level)
            frames: dict[str, list[np.ndarray]] = {k: [] for k in obs}
            rewards = []
            for _ in range(length):
                for k in obs:
                    frames[k].append(obs[k])
                obs, r, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
                rewards.append(r)
                if term or trunc:
                    break
            T = len(rewards)
            eps.append(Episode(
                domain="nethack", task=env_id, level=level, source="random",
                observations={k: np.stack(v).astype(np.uint8) for k, v in frames.items()},
                actions=rng.integers(0, 8, T).astype(np.int32), rewards=np.asarray(rewards, np.float32),
                terminated=bool(term), truncated=not term))
        out[env_id] = eps
    from procgen import ProcgenGym3Env

    for game in ("coinrun", "ninja"):
        eps = []
        for level in range(3):
            env = ProcgenGym3Env(num=1, env_name=game, start_level=level, num_levels=1, distribution_mode="easy")
            frames, rewards = [], []
            for _ in range(length):
                env.act(rng.integers(15, size=1))
                rew, ob, _ = env.observe()
                frames.append(ob["rgb"][0])
                rewards.append(float(rew[0]))
            eps.append(Episode(
                domain="procgen", task=f"procgen:{game}", level=level, source="random",
                observations={"rgb": np.stack(frames)}, actions=rng.integers(121, 136, length).astype(np.int32),
                rewards=np.asarray(rewards, np.float32), terminated=False, truncated=True))
        out[f"procgen:{game}"] = eps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=200, help="episodes written per configuration")
    ap.add_argument("--length", type=int, default=100, help="steps per episode")
    ap.add_argument("--reads", type=int, default=200, help="random reads per store")
    ap.add_argument("--rss-episodes", type=int, default=100, help="episodes of the small store (large: 10x)")
    ap.add_argument("--real", action="store_true", help="also measure compression on real MiniHack/Procgen")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="icrl-store-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"store benchmark: {args.episodes} episodes x {args.length} steps per configuration, "
          f"{os.cpu_count()} CPUs, work dir {work}\n")
    header = (f"{'domain':8} {'codec':5} {'fsync':5} | {'write ep/s':>10} {'raw MB/s':>8} | {'encode':>6} "
              f"{'I/O':>6} {'AR only':>7} | {'read ep/s':>9} {'steps/s':>8} | {'raw B/st':>8} {'rec B/st':>8} "
              f"{'disk B/st':>9} {'ratio':>6} {'disk ratio':>10}")
    print(header)
    print("-" * len(header))
    for domain in ("nethack", "procgen"):
        eps = templates(domain, args.length)
        raw_per_ep = np.mean([raw_nbytes(e) for e in eps])
        for compression in COMPRESSIONS:
            t_encode, records = encode_only(eps, args.episodes, compression)
            t_direct = direct_arrayrecord(work / f"direct-{domain}-{compression}.ar", records)
            for fsync in (True, False):
                path = work / f"{domain}-{compression}-{'sync' if fsync else 'nosync'}"
                t_append, t_seal = fill(path, eps, args.episodes, compression=compression, fsync=fsync)
                t_write = t_append + t_seal
                t_read, steps = random_reads(path, args.reads)
                s = summarize(TrajectoryStore(path))
                ms = 1e3 / args.episodes
                print(f"{domain:8} {compression:5} {str(fsync):5} | {args.episodes / t_write:10.1f} "
                      f"{args.episodes * raw_per_ep / t_write / 1e6:8.1f} | {t_encode * ms:6.2f} "
                      f"{max(t_write - t_encode, 0) * ms:6.2f} {t_direct * ms:7.2f} | "
                      f"{args.reads / t_read:9.1f} {steps / t_read:8.0f} | "
                      f"{s.raw_bytes / s.steps:8.0f} {s.record_bytes / s.steps:8.1f} "
                      f"{s.disk_bytes_per_step:9.1f} {s.compression_ratio:5.0f}x {s.disk_ratio:9.0f}x")
    print("\nwrite = append (encode + journal frame + fdatasync when fsync) + seal on close. Per episode, in ms:"
          "\nencode = serialise + compress; I/O = write time - encode (journal, fsync, seal: what durability costs);"
          "\nAR only = writing the same encoded records straight into one ArrayRecord file (durable only on close)."
          "\ndisk B/st includes ArrayRecord's per-shard padding (a shard file is at least 128 KiB) and the index.")

    small, large = work / "rss-small", work / "rss-large"
    eps = templates("nethack", args.length)
    fill(small, eps, args.rss_episodes, compression="zlib", fsync=False)
    fill(large, eps, 10 * args.rss_episodes, compression="zlib", fsync=False)
    reads = args.reads
    p_small, p_large = peak_rss_mib(small, reads), peak_rss_mib(large, reads)
    raw_mib = 9 * args.rss_episodes * raw_nbytes(eps[0]) / 2**20
    print(f"\nreader peak RSS, {reads} random reads: store of {args.rss_episodes} episodes {p_small:.1f} MiB, "
          f"of {10 * args.rss_episodes} episodes {p_large:.1f} MiB (difference {p_large - p_small:+.1f} MiB; "
          f"the larger store holds {raw_mib:.0f} MiB more raw episode data)")

    if args.real:
        print("\ncompression on real random-action episodes (record bytes vs raw arrays):")
        for task, real in real_episodes(args.length).items():
            raw = sum(raw_nbytes(e) for e in real)
            steps = sum(e.length for e in real)
            cells = []
            for compression in COMPRESSIONS:
                t0 = time.perf_counter()
                size = sum(len(encode_episode(e, compression)) for e in real)
                dt = time.perf_counter() - t0
                cells.append(f"{compression} {raw / size:6.0f}x {size / steps:7.1f} B/step {raw / dt / 1e6:6.1f} MB/s")
            print(f"  {task:32} {steps:5} steps | " + " | ".join(cells))


if __name__ == "__main__":
    main()
