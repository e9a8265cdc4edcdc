"""The accelerator benchmark that ``benchmarks/gpu.sh`` runs: one device, one run, within a budget.

Prints, in order (each figure measured here, in this run):
1. the matmul peak: FLOP/s of a jitted square matmul in the compute dtype (bf16 8192² on an
   accelerator, fp32 1024² with --cpu);
2. per preset (10M, 30M, 100M; --cpu: 1M): the training step ``icrl train`` runs, in bf16, on a
   batch that fills the device's memory (sized from XLA's memory analysis of a 4-row batch, at
   most 256 rows; --cpu: 2 rows of 256 tokens), 2048-token rows: compile seconds, ms/step, tokens/s, and MFU against the device kind's
   table peak (``icrl.train.mfu``) and against the matmul peak of step 1;
3. causal attention, forward + backward at 2048 tokens with the 100M preset's heads: cuDNN vs
   XLA (``jax.nn.dot_product_attention``; --cpu: XLA only, cuDNN needs a GPU), with compile times;
4. decoding (``benchmarks/model_throughput.bench_decode``): ms per environment step with the KV
   cache vs recomputing the whole context, at 2048 tokens (100M; --cpu: 1M at 256 tokens);
5. a summary line of every compile time.

Items that would run past --budget seconds are skipped with a line that says so.

    benchmarks/gpu.sh            # on one GPU
    benchmarks/gpu.sh --cpu      # small presets on the CPU (CI)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if "--cpu" in sys.argv:  # before jax is imported
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_throughput import bench_decode, matmul_peak, timed  # noqa: E402

from icrl.model.config import preset  # noqa: E402
from icrl.model.example import example_batch  # noqa: E402
from icrl.model.info import param_counts, train_flops_per_token  # noqa: E402
from icrl.train.bench import make_train_step, time_steps  # noqa: E402
from icrl.train.mfu import peak_flops  # noqa: E402

def flops_label(flops: float) -> str:
    return f"{flops / 1e12:,.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.1f} GFLOP/s"


MEMORY_SHARE = 0.85  # of the device's memory the batch may fill (the rest: fragmentation, cuDNN workspaces)
MAX_ROWS = 256  # a small preset would fill memory with thousands of rows: random host screens take long


class Budget:
    """Seconds left of the run's budget."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, what: str, seconds: float) -> bool:
        if self.left() >= seconds:
            return True
        print(f"{what}: skipped (time budget: {self.left():.0f} s left, about {seconds:.0f} s needed)", flush=True)
        return False


def batch_of(config, rows: int, steps: int) -> dict:
    """A synthetic training batch [rows, steps]: random screens, legal actions, every step counted."""
    batch = example_batch(config.domain, rows, steps, episodes=4)
    batch["loss_mask"] = np.ones((rows, steps), bool)
    return batch


def rows_filling_memory(config, probe: int, steps: int, device) -> tuple[int, float]:
    """(rows, probe compile seconds): the batch that fills MEMORY_SHARE of ``device``'s memory,
    from XLA's memory analysis of a ``probe``-row batch (activations grow with the rows; the
    state does not)."""
    train = make_train_step(config, probe, devices=[device])
    batch = train.put(batch_of(config, probe, steps))
    seconds, memory = train.compile(batch)
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    if memory is None or not limit:
        return probe, seconds
    state = sum(x.nbytes for x in jax.tree.leaves(train.state))
    per_row = (memory.temp_size_in_bytes + sum(x.nbytes for x in jax.tree.leaves(batch))) / probe
    rows = min(MAX_ROWS, int((MEMORY_SHARE * limit - state) // per_row))
    return max(probe, rows // 8 * 8 if rows >= 8 else rows), seconds


def bench_train(name: str, dtype: str, context: int, rows: int | None, iters: int, peak: float,
                compiles: list[str]) -> None:
    device = jax.devices()[0]
    config = preset(name, domain="nethack", dtype=dtype, max_tokens=context)
    steps = context // config.tokens_per_step
    probe_s = None
    if rows is None:
        rows, probe_s = rows_filling_memory(config, 4, steps, device)
        compiles.append(f"{name} probe {probe_s:.1f} s")
    for attempt in range(3):
        try:
            train = make_train_step(config, rows, devices=[device])
            batch = train.put(batch_of(config, rows, steps))
            compile_s, _ = train.compile(batch)
            seconds = time_steps(train, [batch], iters)
            break
        except jax.errors.JaxRuntimeError as err:  # out of memory: the estimate was too bold
            if "RESOURCE_EXHAUSTED" not in str(err) or attempt == 2 or rows < 2:
                raise
            print(f"train {name}: {rows} rows do not fit; trying {rows // 2}", flush=True)
            rows //= 2
    compiles.append(f"{name} train step {compile_s:.1f} s")
    tokens = rows * steps * config.tokens_per_step
    flops = train_flops_per_token(config, context=context) * tokens / seconds
    table = peak_flops(device.device_kind, dtype)
    of_table = f"MFU {100 * flops / table:.1f}% of the {flops_label(table)} table peak" if table else \
        f"MFU: no table peak for {device.device_kind!r}"
    print(f"train {name:>4} ({param_counts(config)['total'] / 1e6:.1f}M params, {config.dims().num_layers} layers, "
          f"{dtype}): batch {rows}×{context} tokens, {seconds * 1e3:,.1f} ms/step, {tokens / seconds:,.0f} tokens/s, "
          f"{flops_label(flops)}; {of_table}; {100 * flops / peak:.1f}% of the matmul peak; "
          f"compile {compile_s:.1f} s" + (f" (+ {probe_s:.1f} s sizing the batch)" if probe_s else ""), flush=True)
    del train, batch


def bench_attention(implementation: str, dtype: str, batch: int, context: int, heads: int, head_dim: int,
                    iters: int) -> tuple[float, float]:
    """(compile seconds, seconds per call) of causal attention forward + backward."""
    ks = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (batch, context, heads, head_dim), jnp.dtype(dtype)) for key in ks)

    def loss(q, k, v):
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
        return out.astype(jnp.float32).sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    start = time.perf_counter()
    compiled = grad.lower(q, k, v).compile()
    compile_s = time.perf_counter() - start
    return compile_s, timed(lambda: compiled(q, k, v), iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="small presets on the CPU (for CI)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (gpu.sh: 8 minutes)")
    parser.add_argument("--presets", nargs="+", help="presets to train (default 10M 30M 100M; --cpu: 1M)")
    parser.add_argument("--iters", type=int, help="timed iterations (default 10; --cpu: 2)")
    args = parser.parse_args()
    budget = Budget(args.budget)
    device = jax.devices()[0]
    cpu = args.cpu or device.platform == "cpu"
    dtype = "float32" if cpu else "bfloat16"
    iters = args.iters or (2 if cpu else 10)
    presets = args.presets or (["1M"] if cpu else ["10M", "30M", "100M"])
    print(f"device: {device.device_kind} ({device.platform}; {len(jax.devices())} device(s), the first used), "
          f"compute dtype {dtype}, jax {jax.__version__}", flush=True)

    n = 1024 if cpu else 8192
    peak = matmul_peak(jnp.dtype(dtype), n, iters=5 if cpu else 10)
    print(f"matmul peak ({n}×{n} {dtype}): {flops_label(peak)}", flush=True)

    compiles: list[str] = []
    context = 256 if cpu else 2048
    for name in presets:
        if budget.allows(f"train {name}", 20 if cpu else 90):
            bench_train(name, dtype, context, 2 if cpu else None, iters, peak, compiles)

    heads_of = preset("1M" if cpu else "100M", domain="nethack").dims()
    att = dict(dtype=dtype, batch=1 if cpu else 8, context=2048, heads=heads_of.num_heads, head_dim=heads_of.head_dim)
    times = {}
    for implementation in ("xla", "cudnn"):
        if cpu and implementation == "cudnn":
            print("attention cudnn: not available (needs a GPU)", flush=True)
            continue
        if not budget.allows(f"attention {implementation}", 30):
            continue
        try:
            compile_s, seconds = bench_attention(implementation, iters=iters, **att)
        except Exception as err:  # cuDNN refuses some shapes, dtypes or GPUs: say which and why
            print(f"attention {implementation}: failed: {str(err).splitlines()[0][:200]}", flush=True)
            continue
        times[implementation] = seconds
        compiles.append(f"attention {implementation} {compile_s:.1f} s")
        print(f"attention {implementation}: causal forward + backward, batch {att['batch']}, {att['context']} tokens, "
              f"{att['heads']} heads × {att['head_dim']}, {dtype}: {seconds * 1e3:,.2f} ms (compile {compile_s:.1f} s)",
              flush=True)
    if len(times) == 2:
        print(f"attention: cuDNN is {times['xla'] / times['cudnn']:.2f}× XLA's speed", flush=True)

    decode_preset, decode_context = ("1M", 256) if cpu else ("100M", 2048)
    if budget.allows("decode", 30 if cpu else 60):
        start = time.perf_counter()
        bench_decode(decode_preset, "nethack", dtype, decode_context, iters)
        compiles.append(f"decode (compile and run) {time.perf_counter() - start:.1f} s")
    print(f"compile times: {'; '.join(compiles)}", flush=True)
    print(f"total {args.budget - budget.left():.0f} s of the {args.budget:.0f} s budget", flush=True)


if __name__ == "__main__":
    main()
