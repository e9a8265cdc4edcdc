"""Compile time of the training step against depth: the 1M preset with 4 and with 18 layers.

The training step (``icrl.train.step.make_train_step``: forward, backward, AdamW) of the 1M preset
is lowered and compiled for each depth on one device, with XLA's default optimisation level and
no persistent compilation cache; the script prints trace + lowering and compile seconds of each
depth and the ratio of the totals (18 / 4). With the transformer's blocks in a scan the program
holds one block whatever the depth, so the ratio should stay near 1 (goal: ≤ 1.5).

    .venv/bin/python benchmarks/compile_time.py                  # 4 vs 18 layers
    .venv/bin/python benchmarks/compile_time.py --layers 4 12 18 --context 512

Times are of one process's first compile of each program (median of ``--repeats`` fresh
compiles, each with a new jit and cleared caches): shared or loaded machines make them noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from icrl.model.config import preset
from icrl.model.example import example_batch
from icrl.train.config import TrainConfig
from icrl.train.state import ModelTemplate, init_state, learning_rate, make_optimizer
from icrl.train.step import make_train_step


def compile_seconds(layers: int, batch: int, context: int, grad_accum: int, remat: bool,
                    unroll: int | None = None) -> tuple[float, float]:
    """(trace + lower seconds, compile seconds) of the 1M train step with ``layers`` blocks
    (``unroll``: model.scan_unroll; None: the default)."""
    extra = {} if unroll is None else {"scan_unroll": unroll}
    config = preset("1M", num_layers=layers, max_tokens=context, remat=remat, **extra)
    train = TrainConfig(grad_accum=grad_accum)
    template = ModelTemplate(config)
    tx = make_optimizer(train)
    state = jax.eval_shape(lambda s: init_state(template, tx, s), np.int32(0))
    steps = context // config.tokens_per_step
    data = example_batch("nethack", batch, steps, episodes=2)
    data["loss_mask"] = np.ones((batch, steps), bool)
    data.pop("rewards")  # no reward tokens in the 1M preset's default config
    step = make_train_step(template, tx, learning_rate(train), grad_accum=grad_accum)
    jax.clear_caches()
    t0 = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=0).lower(state, data)
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, nargs="+", default=[4, 18])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--context", type=int, default=256, help="tokens per row")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--remat", action="store_true", help="model.remat=true")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--scan-unroll", type=int, default=None, help="model.scan_unroll (default: the config's)")
    args = p.parse_args()
    print(f"backend {jax.default_backend()}, 1M preset, batch {args.batch}×{args.context} tokens, "
          f"grad_accum {args.grad_accum}, remat {args.remat}, scan_unroll {args.scan_unroll or 'default'}")
    totals = {}
    for layers in args.layers:
        runs = [compile_seconds(layers, args.batch, args.context, args.grad_accum, args.remat, args.scan_unroll)
                for _ in range(args.repeats)]
        lower = statistics.median(r[0] for r in runs)
        comp = statistics.median(r[1] for r in runs)
        totals[layers] = lower + comp
        print(f"{layers:3d} layers: trace+lower {lower:6.2f} s, compile {comp:6.2f} s, total {lower + comp:6.2f} s",
              flush=True)
    lo, hi = min(totals), max(totals)
    if lo != hi:
        print(f"ratio {hi} / {lo} layers: {totals[hi] / totals[lo]:.2f}")


if __name__ == "__main__":
    main()
