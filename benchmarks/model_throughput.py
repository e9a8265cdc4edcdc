"""Model throughput: training tokens/s and FLOP/s against this machine's matmul peak, and KV-cache
decoding against full recomputation. Optionally, the RoPE-vs-learned position measurement.

Prints, in one run on one device:
- the matrix-multiply peak (FLOP/s of a large jitted matmul in the compute dtype), measured here;
- per preset (default 1M and 10M): training tokens/s (forward + backward + AdamW update) and
  achieved FLOP/s (3 × analytic forward FLOPs per token, ``icrl.model.info``) as a fraction of peak;
- per context (default 512 and 2048 tokens): time per environment step of cached decoding (observe
  + append_action on a full cache) and of recomputing the whole context, and their ratio;
- with ``--positions``: a small in-context retrieval task (copy the action a demo took in the same
  state, states in a new order) trained with RoPE and with learned positions: query accuracy, loss
  and step time of each.

    uv run python benchmarks/model_throughput.py --quick      # a few minutes on 2 CPU cores
    uv run python benchmarks/model_throughput.py              # larger batches, more iterations
    uv run python benchmarks/model_throughput.py --positions --skip-train --skip-decode

On GPU the compute dtype defaults to bfloat16 (cuDNN flash attention), on CPU to float32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from icrl.envs.actions import PAD_ACTION, VOCAB_SIZE
from icrl.model.config import ModelConfig, preset
from icrl.model.decoding import Decoder
from icrl.model.example import example_batch
from icrl.model.info import flops_per_token, param_counts
from icrl.model.loss import action_accuracy, action_loss
from icrl.model.model import ICRLModel


def timed(fn: Callable[[], object], iters: int, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` (its result is waited for), after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_peak(dtype: jnp.dtype, n: int, iters: int) -> float:
    """FLOP/s of an n×n by n×n jitted matmul (best of ``iters``): the machine's practical peak."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, b))
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def build(config: ModelConfig, seed: int = 0) -> ICRLModel:
    """Build the model under jit: one compilation instead of one per parameter shape."""
    return nnx.jit(lambda: ICRLModel(config, rngs=nnx.Rngs(params=seed, dropout=seed + 1)))()


def make_train_step(model: ICRLModel, tx: optax.GradientTransformation):
    """(optimizer, step) where step(model, optimizer, batch) → loss runs forward, backward, ``tx``."""
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit(donate_argnums=(0, 1))
    def step(model, optimizer, batch):
        def loss_fn(model):
            return action_loss(model(batch), batch["actions"], batch["loss_mask"])

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return optimizer, step


def bench_train(name: str, domain: str, dtype: str, batch: int, context: int, iters: int, peak: float) -> None:
    config = preset(name, domain=domain, dtype=dtype, max_tokens=context)
    model = build(config)
    steps = context // config.tokens_per_step
    data = example_batch(domain, batch, steps, episodes=4)
    data["loss_mask"] = np.ones((batch, steps), bool)
    data = jax.device_put(data)
    optimizer, step = make_train_step(model, optax.adamw(1e-4))
    t0 = time.perf_counter()
    jax.block_until_ready(step(model, optimizer, data))
    compile_s = time.perf_counter() - t0
    sec = timed(lambda: step(model, optimizer, data), iters, warmup=1)
    tokens = batch * steps * config.tokens_per_step
    flops = 3 * flops_per_token(config, context=context)["total"] * tokens / sec
    print(
        f"train {name:>4} {domain}: {param_counts(config)['total'] / 1e6:6.2f}M params, batch {batch}×{context} tokens: "
        f"{sec * 1e3:8.1f} ms/step, {tokens / sec:10,.0f} tokens/s, {flops / 1e9:8.2f} GFLOP/s = "
        f"{100 * flops / peak:5.1f}% of peak (first step incl. compile {compile_s:.1f} s)"
    )


def bench_decode(name: str, domain: str, dtype: str, context: int, iters: int) -> tuple[float, float]:
    """Per-step time at ``context`` tokens: cached (observe + append_action) vs recomputing the
    context; printed, and returned as (cached, full) seconds."""
    config = preset(name, domain=domain, dtype=dtype, max_tokens=context)
    decoder = Decoder(build(config))
    s = config.tokens_per_step
    steps = context // s
    data = jax.device_put(example_batch(domain, 1, steps, episodes=4))
    full = timed(lambda: decoder.forward(data), iters)

    # The cache holds steps-1 whole steps and the last observation. Each timed call is one rollout
    # step (decoder.step: append_action, restart at the prefix, observe): the cache is full (``context``
    # tokens) after its append_action, and every token attends over the whole capacity.
    prefix = {k: data[k][:, : steps - 1] for k in ("actions", "rewards", "episode_start", "timestep")}
    prefix["obs"] = {k: v[:, : steps - 1] for k, v in data["obs"].items()}
    prefix["legal_mask"] = data["legal_mask"]
    _, cache = decoder.prefill(prefix, capacity=context)
    obs = {k: v[:, -1] for k, v in data["obs"].items()}
    start, timestep, legal = data["episode_start"][:, -1], data["timestep"][:, -1], data["legal_mask"]
    _, cache = decoder.observe(cache, obs, start, timestep, legal)
    actions, rewards = data["actions"][:, -1], data["rewards"][:, -1]
    restart, restart_length = jnp.ones((1,), bool), jnp.int32((steps - 1) * s)
    state = {"cache": cache}

    def one_step():
        logits, state["cache"] = decoder.step(
            state["cache"], actions, rewards, obs, start, timestep, legal, restart, restart_length
        )
        return logits

    cached = timed(one_step, iters * 5, warmup=2)
    print(
        f"decode {name} {domain} context {context:5d}: cached {cached * 1e3:8.2f} ms/step, "
        f"full recomputation {full * 1e3:9.2f} ms/step, cached is {full / cached:7.1f}× faster"
    )
    return cached, full


# -- positions: RoPE vs learned on an in-context retrieval task -----------------------------------


def retrieval_batch(rng: np.random.Generator, batch: int, states: int, max_offset: int) -> dict:
    """Rows of a distractor episode, a demo and a query episode, then padding.

    Demo and query visit the same ``states`` screens (a random 5×5 glyph patch around a random
    cursor each) in different orders; each row draws its own state → action map, so the query's
    actions can only be read from the demo in context. The distractor (another level, 0 …
    ``max_offset`` steps) shifts where the pair starts, as packing does in real bursty sequences.
    """
    t = max_offset + 2 * states
    chars = np.full((batch, t, 24, 80), 32, np.uint8)
    colors = np.zeros((batch, t, 24, 80), np.uint8)
    cursor = np.zeros((batch, t, 2), np.uint8)
    actions = np.full((batch, t), PAD_ACTION, np.int32)
    episode_start = np.zeros((batch, t), bool)
    timestep = np.zeros((batch, t), np.int32)
    loss_mask = np.zeros((batch, t), bool)
    query = np.zeros((batch, t), bool)
    for b in range(batch):
        offset = int(rng.integers(0, max_offset + 1))
        patches = rng.integers(33, 127, (2 * states, 5, 5), dtype=np.uint8)
        where = np.stack([rng.integers(3, 20, 2 * states), rng.integers(3, 77, 2 * states)], -1)
        acts = rng.integers(0, 8, 2 * states)
        # States [states, 2·states) belong to the distractor level, [0, states) to the demo's.
        order = np.concatenate([states + rng.integers(0, states, offset), rng.permutation(states), rng.permutation(states)])
        starts = [0, offset, offset + states] if offset else [offset, offset + states]
        for i, k in enumerate(order):
            r, c = where[k]
            chars[b, i, r - 2 : r + 3, c - 2 : c + 3] = patches[k]
            colors[b, i, r - 2 : r + 3, c - 2 : c + 3] = 7
            cursor[b, i] = (r, c)
            actions[b, i] = acts[k]
        episode_start[b, starts] = True
        for lo, hi in zip(starts, starts[1:] + [len(order)]):
            timestep[b, lo:hi] = np.arange(hi - lo)
        loss_mask[b, : len(order)] = True
        query[b, offset + states : offset + 2 * states] = True
    mask = np.zeros((batch, VOCAB_SIZE), bool)
    mask[:, :8] = True
    return {
        "obs": {"tty_chars": chars, "tty_colors": colors, "tty_cursor": cursor},
        "actions": actions,
        "rewards": np.zeros((batch, t), np.float32),
        "episode_start": episode_start,
        "timestep": timestep,
        "legal_mask": mask,
        "loss_mask": loss_mask,
        "query_mask": query,
    }


def bench_positions(train_steps: int, batch: int, states: int, max_offset: int, seeds: int) -> None:
    """Train the same small model with each position kind; report query accuracy and speed."""
    small = dict(
        d_model=64, num_heads=4, num_layers=2, char_dim=8, color_dim=4, crop_channels=8, map_channels=4,
        tty_features=32, tty_hidden=64, dropout=0.0, max_tokens=2 * (max_offset + 2 * states), max_timestep=64,
    )  # fmt: skip
    rng = np.random.default_rng(1234)
    evals = [retrieval_batch(rng, 32, states, max_offset) for _ in range(2)]
    for kind in ("rope", "learned"):
        accs, losses, times = [], [], []
        for seed in range(seeds):
            config = preset("1M", positions=kind, **small)
            model = build(config, seed)
            optimizer, step = make_train_step(model, optax.adam(1e-3))

            @nnx.jit
            def evaluate(model, data):
                logits = model(data, deterministic=True)
                q = data["query_mask"]
                return action_accuracy(logits, data["actions"], q), action_loss(logits, data["actions"], q)

            data_rng = np.random.default_rng(seed)
            elapsed = 0.0
            for i in range(train_steps):
                data = retrieval_batch(data_rng, batch, states, max_offset)
                t0 = time.perf_counter()
                jax.block_until_ready(step(model, optimizer, data))
                if i > 0:  # the first step compiles
                    elapsed += time.perf_counter() - t0
            times.append(elapsed / max(1, train_steps - 1))
            scores = [evaluate(model, e) for e in evals]
            accs.append(np.mean([float(a) for a, _ in scores]))
            losses.append(np.mean([float(l) for _, l in scores]))
        print(
            f"positions {kind:>7}: query accuracy {np.mean(accs):.3f} (per seed {', '.join(f'{a:.3f}' for a in accs)}), "
            f"query loss {np.mean(losses):.3f}, {np.mean(times) * 1e3:.0f} ms/step "
            f"[{train_steps} steps, batch {batch}, {states} states/episode, offsets 0-{max_offset}, chance 0.125]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches and few iterations (CPU-friendly)")
    parser.add_argument("--presets", nargs="+", default=["1M", "10M"], help="presets to train")
    parser.add_argument("--domain", choices=("nethack", "procgen"), default="nethack")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="compute dtype")
    parser.add_argument("--batch", type=int, help="training batch (default 2 quick, 8 full)")
    parser.add_argument("--context", type=int, help="training context in tokens (default 256 quick, 2048 full)")
    parser.add_argument("--iters", type=int, help="timed iterations (default 3 quick, 10 full)")
    parser.add_argument("--decode-preset", default="10M", help="preset for the decoding comparison")
    parser.add_argument("--decode-contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--positions", action="store_true", help="also run the RoPE vs learned measurement")
    parser.add_argument("--positions-steps", type=int, default=1500)
    parser.add_argument("--positions-seeds", type=int, default=1)
    args = parser.parse_args()

    on_gpu = jax.default_backend() == "gpu"
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    batch = args.batch or (2 if args.quick else 8)
    context = args.context or (256 if args.quick else 2048)
    iters = args.iters or (3 if args.quick else 10)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}, {len(jax.devices())} devices), dtype {dtype}")

    n = (8192 if on_gpu else 2048) if not args.quick else (4096 if on_gpu else 1024)
    peak = matmul_peak(jnp.dtype(dtype), n, iters=5 if args.quick else 10)
    print(f"matmul peak ({n}×{n} {dtype}): {peak / 1e9:,.1f} GFLOP/s")

    if not args.skip_train:
        for name in args.presets:
            bench_train(name, args.domain, dtype, batch, context, iters, peak)
    if not args.skip_decode:
        for ctx in args.decode_contexts:
            bench_decode(args.decode_preset, args.domain, dtype, ctx, iters)
    if args.positions:
        bench_positions(args.positions_steps, batch=8, states=8, max_offset=16, seeds=args.positions_seeds)


if __name__ == "__main__":
    main()
