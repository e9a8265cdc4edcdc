"""NLD conversion throughput against raw ``nle.dataset.TtyrecDataset``, bytes per frame, peak memory.

    uv run python benchmarks/nld_throughput.py [--games 64] [--sample DIR] [--repeats 3] [--replicate 4]

1. Records an NLD-AA-format sample with ``icrl nld sample`` (or reuses ``--sample DIR``) and indexes
   it with nle's ``add_nledata_directory``.
2. On the same games, in the same run, alternating: raw ``TtyrecDataset`` iteration (decode only,
   same batch size, sequence length and thread pool as the conversion) and ``icrl nld convert``
   into a fresh store. Prints the median frames/s of each and their ratio (goal >= 0.8) twice: over
   whole passes (start-up, and creating and sealing the store, included: a fixed cost of ~0.15 s a
   run here) and in the steady state from the first batch to the last, the rate that decides how
   long a large conversion takes. Then the cost of the optional ``--verify-bz2`` pass.
3. Bytes per frame: the store on disk (shards + index) per frame, for each codec, against the
   ttyrec.bz2 files per frame.
4. Peak RSS of conversions of batch-size games, all games, and all games copied ``--replicate``
   times, each in a fresh process (VmHWM), next to a process that only imports and selects.
   Streaming bounds the working set by the batch (B x seq_length frames of nle buffers), B
   segments being filled and the writer queue (2 x B segments): it fills up over the first few
   batches, then stays flat.

Figures depend on the machine and its load; the ratio is the number to compare (both sides run
interleaved in one process, on one data set).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icrl.store.codec import COMPRESSIONS  # noqa: E402
from icrl.nld.convert import convert  # noqa: E402
from icrl.nld.index import build_index  # noqa: E402
from icrl.nld.sample import write_sample  # noqa: E402
from icrl.nld.selection import select_games  # noqa: E402

DATASET = "nld-aa"

# VmHWM (the peak RSS of this address space), not getrusage's ru_maxrss: Linux carries ru_maxrss
# over from the parent through fork + exec, so a child would report the parent's peak.
_RSS_CHILD = """
import json, sys
sys.path.insert(0, {repo!r})
from icrl.nld.convert import convert
from icrl.nld.selection import select_games
sel = select_games({db!r}, {dataset!r}, limit={games})
frames = 0
if {convert!r}:
    frames = convert(sel, {store!r}, **{kwargs!r}).frames
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({{"maxrss_kib": int(status["VmHWM"].split()[0]), "frames": frames, "games": len(sel.games)}}))
"""


class Batches:
    """Frames and times of the batches of one pass: the steady rate leaves out the first batch
    (start-up) and everything after the last (for conversion, sealing the store)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []  # (time after batch, frames so far)

    def mark(self, frames: int) -> None:
        self.marks.append((time.perf_counter(), frames))

    def steady_rate(self) -> float:
        (t0, f0), (t1, f1) = self.marks[0], self.marks[-1]
        return (f1 - f0) / (t1 - t0) if t1 > t0 else float("nan")


def raw_pass(db: Path, batch_size: int, seq_length: int, threads: int) -> tuple[int, float, Batches]:
    """Iterate the whole dataset with TtyrecDataset, touching nothing. → (frames, seconds, batches)."""
    import nle.dataset as nld

    gameids = [g.gameid for g in select_games(db, DATASET).games]
    batches = Batches()
    start = time.perf_counter()
    frames = 0
    with ThreadPoolExecutor(threads) as pool:
        ds = nld.TtyrecDataset(DATASET, batch_size=min(batch_size, len(gameids)), seq_length=seq_length,
                               dbfilename=str(db), threadpool=pool, gameids=gameids, shuffle=False)
        for mb in ds:
            frames += int(np.count_nonzero(mb["gameids"]))
            batches.mark(frames)
    return frames, time.perf_counter() - start, batches


def convert_pass(db: Path, store: Path, **kwargs) -> tuple[int, float, Batches]:
    shutil.rmtree(store, ignore_errors=True)
    batches = Batches()
    start = time.perf_counter()
    report = convert(select_games(db, DATASET), store, progress=lambda r, _: batches.mark(r.frames), **kwargs)
    seconds = time.perf_counter() - start  # includes selection, preflight and sealing the store
    assert not report.skips, report.skips
    return report.frames, seconds, batches


def encode_rate(store_path: Path, compression: str) -> float:
    """Frames/s of icrl.store.codec.encode_episode on the converted episodes (one thread)."""
    from icrl.store.codec import encode_episode
    from icrl.store.reader import TrajectoryStore

    with TrajectoryStore(store_path) as store:
        episodes = [store.read(ref) for ref in store]
    start = time.perf_counter()
    for ep in episodes:
        encode_episode(ep, compression)
    return sum(ep.length for ep in episodes) / (time.perf_counter() - start)


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss(db: Path, store: Path, games: int, do_convert: bool, kwargs: dict) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    code = _RSS_CHILD.format(repo=str(REPO), db=str(db), dataset=DATASET, games=games, convert=do_convert,
                             store=str(store), kwargs=kwargs)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, help="existing NLD-AA-format directory (default: record one)")
    parser.add_argument("--games", type=int, default=64, help="games to record (default 64)")
    parser.add_argument("--min-steps", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating raw/convert passes (default 3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--replicate", type=int, default=4,
                        help="copies of the sample for the largest peak-RSS conversion (default 4)")
    parser.add_argument("--writers", type=int, default=1, help="compressing writer threads (default 1)")
    parser.add_argument("--segment-length", type=int, default=256)
    parser.add_argument("--compression", default="zstd", choices=sorted(COMPRESSIONS),
                        help="codec of the timed conversion (default zstd, as `icrl nld convert`)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nld-bench-"))
    try:
        sample = args.sample
        if sample is None:
            sample = work / "sample"
            t = time.perf_counter()
            write_sample(sample, args.games, seed=0, min_steps=args.min_steps, max_steps=args.max_steps)
            print(f"recorded {args.games} games in {time.perf_counter() - t:.1f}s")
        db = work / "ttyrecs.db"
        with contextlib.redirect_stdout(io.StringIO()):
            build_index(db, aa=sample)
        sel = select_games(db, DATASET)
        bz2_bytes = sum(g.nbytes for g in sel.games)
        kwargs = dict(segment_length=args.segment_length, batch_size=args.batch_size, seq_length=args.seq_length,
                      threads=args.threads, writers=args.writers)
        timed = dict(kwargs, compression=args.compression)
        print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; {len(sel.games)} games; "
              f"batch {args.batch_size} x {args.seq_length} frames, {args.threads} threads, {args.writers} writers, "
              f"segments of {args.segment_length}")

        raw_fps, conv_fps, raw_steady, conv_steady, frames = [], [], [], [], 0
        for _ in range(args.repeats):
            frames, s, batches = raw_pass(db, args.batch_size, args.seq_length, args.threads)
            raw_fps.append(frames / s)
            raw_steady.append(batches.steady_rate())
            n, s, batches = convert_pass(db, work / "store", **timed)
            assert n == frames, (n, frames)
            conv_fps.append(n / s)
            conv_steady.append(batches.steady_rate())
        med = statistics.median
        raw, conv = med(raw_fps), med(conv_fps)
        passes = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
        print(f"frames: {frames:,}")
        print("whole passes (start-up, and for conversion creating and sealing the store, included):")
        print(f"  raw TtyrecDataset : {raw:10,.0f} frames/s  (passes: {passes(raw_fps)})")
        print(f"  nld convert ({args.compression}): {conv:10,.0f} frames/s  (passes: {passes(conv_fps)})")
        print(f"  ratio convert/raw : {conv / raw:.2f}  (goal >= 0.8)")
        print("steady state (first batch to last batch: the rate that decides a large conversion):")
        print(f"  raw TtyrecDataset : {med(raw_steady):10,.0f} frames/s  (passes: {passes(raw_steady)})")
        print(f"  nld convert ({args.compression}): {med(conv_steady):10,.0f} frames/s  (passes: {passes(conv_steady)})")
        print(f"  ratio convert/raw : {med(conv_steady) / med(raw_steady):.2f}  (goal >= 0.8)")
        rates = ", ".join(f"{encode_rate(work / 'store', c):,.0f} ({c})" for c in sorted(COMPRESSIONS))
        print(f"  of which encoding: the store's encode_episode alone, frames/s on one core: {rates}")
        n, s, _ = convert_pass(db, work / "store-verify", full_bz2=True, **kwargs)
        print(f"nld convert --verify-bz2: {n / s:,.0f} frames/s ({n / s / raw:.2f} of raw)")

        print(f"ttyrec.bz2        : {bz2_bytes / frames:7.1f} B/frame ({bz2_bytes:,} B)")
        for compression in sorted(COMPRESSIONS):
            store = work / f"store-{compression}"
            convert_pass(db, store, compression=compression, **kwargs)
            nbytes = disk_bytes(store)
            print(f"store ({compression:5s})     : {nbytes / frames:7.1f} B/frame ({nbytes:,} B; "
                  f"{nbytes / bz2_bytes:.2f}x the bz2)")

        # A larger data set for the memory check: the sample's run directories, copied --replicate
        # times (nle indexes every copy as new games), so it costs no extra recording.
        big = work / "replicated"
        for k in range(args.replicate):
            for run in sorted(p for p in Path(sample).iterdir() if p.is_dir()):
                shutil.copytree(run, big / f"{run.name}-copy{k}")
        db_big = work / "replicated.db"
        with contextlib.redirect_stdout(io.StringIO()):
            build_index(db_big, aa=big)
        base = peak_rss(db, work / "rss", len(sel.games), False, kwargs)
        print(f"peak RSS, import + select only       : {base['maxrss_kib'] / 1024:7.1f} MiB")
        n_big = len(select_games(db_big, DATASET).games)
        runs = [(db, n) for n in sorted({min(n, len(sel.games)) for n in (args.batch_size, len(sel.games))})]
        for source_db, n in runs + [(db_big, n_big)]:
            r = peak_rss(source_db, work / "rss", n, True, kwargs)
            print(f"peak RSS, convert {r['games']:4d} games ({r['frames']:9,} frames): "
                  f"{r['maxrss_kib'] / 1024:7.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
