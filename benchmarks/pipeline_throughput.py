"""Input pipeline throughput: tokens/s in-process and with 1 and 2 worker processes (shared-memory
batches, ``icrl.data.loader``), the CPU cores each used, tokens/s per core, and how many cores one
GPU needs at the 100M preset. With --model, the pipeline against training steps at 1M and 10M.

Data: by default the data section of experiments/quickstart.yaml (its three stores under
data/quickstart/, made by ``make quickstart``); --synthetic builds a small synthetic MiniHack-like
store instead (2 tasks x 8 levels x 5 episodes, E=4 in 256 steps, batch 8).

Each configuration is measured --rounds times, interleaved (0, 1, 2, 0, 1, 2, ...) so that load
from other jobs falls on all alike; a measurement is --seconds of steady state after the first
batches (worker start-up excluded). Figures are medians over rounds. A row is one sequence, or
with data.pack = N up to N sequences packed; tokens/s counts every position of a row (what a GPU
computes on), real tokens only the non-padding steps; cores are the CPU seconds per second of this
process and its workers, so tokens/s per core is what one core builds.

    uv run python benchmarks/pipeline_throughput.py [--seconds 10 --rounds 3] [--synthetic] [--grain] [--model]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from icrl.data.pipeline import make_loader
from icrl.data.sequences import SequenceConfig, SourceConfig
from icrl.data.synthetic import write_synthetic
from icrl.store.reader import TrajectoryStore

TASKS = ("MiniHack-MazeWalk-9x9-v0", "MiniHack-Labyrinth-Small-v0")
H100_BF16 = 989.4e12  # dense bf16 peak of an H100 SXM (icrl.train.mfu)
ASSUMED_MFU = 0.45


def build_store(path: Path) -> None:
    TrajectoryStore.create(path)
    specs = [("nethack", task, lv, ep, 20 + (lv * 13 + ep * 7) % 100)
             for task in TASKS for lv in range(8) for ep in range(5)]
    write_synthetic(path, "bench", specs)


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` and its live children (the workers)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def grain_loader(cfg: SequenceConfig):
    """The Grain DataLoader icrl used before ``icrl.data.loader`` (for comparison only: with two
    workers or more its batches are not the in-process ones)."""
    import contextlib

    import grain
    from absl import flags

    from icrl.data.pipeline import ProcessSlice, SequenceSource

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    view = ProcessSlice(SequenceSource(cfg), 0, 1, cfg.batch_size)
    sampler = grain.samplers.IndexSampler(num_records=len(view), shard_options=grain.sharding.NoSharding(),
                                          shuffle=False, num_epochs=1, seed=cfg.seed)
    return contextlib.nullcontext(iter(grain.DataLoader(
        data_source=view, sampler=sampler, operations=[grain.transforms.Batch(cfg.batch_size, drop_remainder=True)],
        worker_count=cfg.worker_count)))


def measure(cfg: SequenceConfig, seconds: float, warmup: int = 3, old: bool = False) -> dict[str, float]:
    """Steady-state figures of the loader of ``cfg`` (``old``: Grain's) over ``seconds`` after
    ``warmup`` batches."""
    s = 3 if cfg.reward_tokens else 2
    me = psutil.Process()
    with grain_loader(cfg) if old else iter(make_loader(cfg)) as it:
        for _ in range(warmup + 1):
            next(it)
        start, cpu0 = time.perf_counter(), cpu_seconds(me)
        batches = real = 0
        while time.perf_counter() - start < seconds:
            batch = next(it)
            batches += 1
            real += int((np.asarray(batch["episode_id"]) >= 0).sum())
            del batch  # its shared-memory slot goes back to the workers
        wall, cpu = time.perf_counter() - start, cpu_seconds(me) - cpu0
    rows = batches * cfg.batch_size
    return {"rows_per_s": rows / wall, "tokens_per_s": rows * cfg.context_steps * s / wall,
            "real_tokens_per_s": real * s / wall, "cores": cpu / wall, "load": os.getloadavg()[0]}


def gpu_cores_needed(cfg: SequenceConfig, domain: str, tokens_per_core: float) -> tuple[float, float, int]:
    """(tokens/s one H100 consumes at the 100M preset and ASSUMED_MFU, cores needed, row tokens)."""
    from icrl.model.config import preset
    from icrl.model.info import train_flops_per_token

    s = 3 if cfg.reward_tokens else 2
    context = cfg.context_steps * s
    model = preset("100M", domain=domain, reward_tokens=cfg.reward_tokens, max_tokens=max(context, 2048))
    consumed = ASSUMED_MFU * H100_BF16 / train_flops_per_token(model, context=context)
    return consumed, consumed / tokens_per_core, context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/quickstart.yaml", help="experiment whose data section to use")
    parser.add_argument("--synthetic", action="store_true", help="a synthetic store instead of --config's")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grain", action="store_true", help="also the Grain DataLoader used before, same workers")
    parser.add_argument("--model", action="store_true", help="also compare with training steps (1M, 10M)")
    parser.add_argument("--train-steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            store = Path(tmp) / "store"
            build_store(store)
            base = SequenceConfig(sources=[SourceConfig(path=str(store))], episodes_per_sequence=4,
                                  context_steps=256, p_burst=1.0, batch_size=8)
            domain = "nethack"
        else:
            from icrl.train.config import load_experiment

            experiment = load_experiment(args.config)
            base, domain = experiment.data, experiment.model.domain
        what = "synthetic store" if args.synthetic else f"{args.config} data section"
        print(f"{what}: E={base.episodes_per_sequence}, {base.context_steps} steps, pack {base.pack}, "
              f"batch {base.batch_size}; "
              f"{os.cpu_count()} CPU cores; load average at start {os.getloadavg()[0]:.2f}")
        kinds = [("icrl", w) for w in args.workers] + ([("grain", w) for w in args.workers] if args.grain else [])
        runs: dict[tuple[str, int], list[dict]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind, w in kinds:
                runs[kind, w].append(measure(base.model_copy(update={"worker_count": w}), args.seconds,
                                             old=kind == "grain"))
        med = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in runs.items()}
        ref = med["icrl", args.workers[0]]["tokens_per_s"]
        print(f"{'loader':>6s} {'workers':>7s} {'rows/s':>8s} {'tokens/s':>10s} {'real tok/s':>10s} "
              f"{'x icrl ' + str(args.workers[0]):>8s} {'cores':>5s} {'tokens/s/core':>13s}  load (per round)")
        for (kind, w), m in med.items():
            loads = ", ".join(f"{r['load']:.2f}" for r in runs[kind, w])
            print(f"{kind:>6s} {w:7d} {m['rows_per_s']:8,.1f} {m['tokens_per_s']:10,.0f} {m['real_tokens_per_s']:10,.0f} "
                  f"{m['tokens_per_s'] / ref:8.2f} {m['cores']:5.2f} {m['tokens_per_s'] / m['cores']:13,.0f}  {loads}")
        med = {w: m for (kind, w), m in med.items() if kind == "icrl"}
        best = max(med, key=lambda w: med[w]["tokens_per_s"])
        per_core = med[best]["tokens_per_s"] / med[best]["cores"]
        consumed, cores, context = gpu_cores_needed(base, domain, per_core)
        print(f"tokens/s per core ({best} workers): {per_core:,.0f} row tokens/s")
        print(f"one H100 at the 100M preset ({context}-token rows, {100 * ASSUMED_MFU:.0f}% MFU assumed, "
              f"{H100_BF16 / 1e12:.1f} TFLOP/s bf16 peak) consumes {consumed:,.0f} tokens/s: "
              f"{cores:.1f} cores of this machine at that rate")
        if args.model:
            from icrl.train.bench import train_step_rate

            print(f"{'preset':>8s} {'train tokens/s':>15s} {'pipeline/train':>15s}")
            for name in ("1M", "10M"):
                train = train_step_rate(base.model_copy(update={"worker_count": 0}), name, args.train_steps)
                print(f"{name:>8s} {train:15,.0f} {med[best]['tokens_per_s'] / train:15.2f}")
        print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
