"""Input pipeline throughput: bursty sequences/s and tokens/s with 0, 1 and 2 Grain workers,
and (with --model) the pipeline's tokens/s over a training step's tokens/s at the 1M and 10M presets.

The store holds synthetic MiniHack-like episodes (``icrl.data.synthetic``; 8 levels x 5 episodes
x 2 tasks, 20-120 steps). Sequences: E=4 episodes in 256 steps (512 tokens), p_burst=1, batch 8.

    uv run python benchmarks/pipeline_throughput.py [--batches 20] [--model]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from icrl.data.pipeline import make_loader
from icrl.data.sequences import SequenceConfig, SourceConfig
from icrl.store.reader import TrajectoryStore
from icrl.data.synthetic import write_synthetic

TASKS = ("MiniHack-MazeWalk-9x9-v0", "MiniHack-Labyrinth-Small-v0")


def build_store(path: Path) -> None:
    TrajectoryStore.create(path)
    specs = [("nethack", task, lv, ep, 20 + (lv * 13 + ep * 7) % 100)
             for task in TASKS for lv in range(8) for ep in range(5)]
    write_synthetic(path, "bench", specs)


def pipeline_rate(cfg: SequenceConfig, batches: int) -> tuple[float, float]:
    """(sequences/s, tokens/s) of the loader after its first batch (start-up excluded)."""
    it = iter(make_loader(cfg))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    sequences = batches * cfg.batch_size
    tokens = sequences * cfg.context_steps * (3 if cfg.reward_tokens else 2)
    return sequences / seconds, tokens / seconds


def train_tokens_per_second(cfg: SequenceConfig, preset: str, steps: int) -> float:
    """Tokens/s of jitted training steps of a preset on batches of this pipeline."""
    from icrl.train.bench import train_step_rate

    return train_step_rate(cfg, preset, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--model", action="store_true", help="also compare with training steps (1M, 10M)")
    parser.add_argument("--train-steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build_store(store)
        base = SequenceConfig(sources=[SourceConfig(path=str(store))], episodes_per_sequence=4,
                              context_steps=256, p_burst=1.0, batch_size=8)
        print(f"{'workers':>8s} {'sequences/s':>12s} {'tokens/s':>12s} {'x 0 workers':>12s}")
        rates = {}
        for workers in (0, 1, 2):
            cfg = base.model_copy(update={"worker_count": workers})
            seq_rate, tok_rate = pipeline_rate(cfg, args.batches)
            rates[workers] = tok_rate
            print(f"{workers:8d} {seq_rate:12,.1f} {tok_rate:12,.0f} {tok_rate / rates[0]:12.2f}")
        if args.model:
            best = max(rates.values())
            print(f"{'preset':>8s} {'train tokens/s':>15s} {'pipeline/train':>15s}")
            for preset in ("1M", "10M"):
                train = train_tokens_per_second(base, preset, args.train_steps)
                print(f"{preset:>8s} {train:15,.0f} {best / train:15.2f}")


if __name__ == "__main__":
    main()
