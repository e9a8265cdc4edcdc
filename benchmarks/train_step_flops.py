"""FLOP/s of the real training step (``icrl.train.step``) against this machine's matmul peak.

Prints the matmul peak (a jitted n×n float32 matmul, best of a few) and, for the preset, ms per
step, tokens/s and model FLOP/s (3 × the analytic forward FLOPs per token, ``icrl.model.info``)
as a fraction of that peak. With ``--parts`` it also times the forward + backward of the parts
alone (observation encoder over the batch's steps; transformer blocks over its tokens), to show
where the step's time goes.

    .venv/bin/python benchmarks/train_step_flops.py                 # 1M, batch 2×256 tokens
    .venv/bin/python benchmarks/train_step_flops.py --parts --batch 4 --context 512
    .venv/bin/python benchmarks/train_step_flops.py --versus attention=xla    # A/B, interleaved
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from icrl.model.config import preset
from icrl.model.example import example_batch
from icrl.model.info import flops_per_token
from icrl.train.bench import best_interleaved
from icrl.train.config import TrainConfig
from icrl.train.state import ModelTemplate, init_state, learning_rate, make_optimizer
from icrl.train.step import make_train_step


def best_seconds(fn, iters: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n: int, iters: int) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n**3 / best_seconds(lambda: f(a), iters)


def train_step(config, grad_accum: int, data: dict):
    """A jitted, donating training step of a fresh model of ``config`` on ``data`` → one() → loss."""
    train = TrainConfig(grad_accum=grad_accum)
    template = ModelTemplate(config)
    tx = make_optimizer(train)
    state = jax.jit(lambda s: init_state(template, tx, s))(np.int32(0))
    step = jax.jit(make_train_step(template, tx, learning_rate(train), grad_accum=grad_accum), donate_argnums=0)
    holder = {"state": state}

    def one():
        holder["state"], metrics = step(holder["state"], data)
        return metrics["loss"]

    return one


def model_override(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → (key, value); argparse reports anything else as a bad argument."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="1M")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--context", type=int, default=256, help="tokens per row")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--peak-n", type=int, default=1024)
    p.add_argument("--scan-unroll", type=int, default=1, help="model.scan_unroll")
    p.add_argument("--model", nargs="*", default=[], type=model_override, metavar="KEY=VALUE",
                   help="model config overrides, e.g. tty_view=crop (validated by ModelConfig)")
    p.add_argument("--versus", nargs="*", default=[], type=model_override, metavar="KEY=VALUE",
                   help="also time a second model, with these overrides on top of --model, interleaved with the first")
    p.add_argument("--parts", action="store_true", help="also time encoder and transformer alone")
    args = p.parse_args()

    peak = matmul_peak(args.peak_n, args.iters)
    print(f"backend {jax.default_backend()}: matmul peak ({args.peak_n}² float32) {peak / 1e9:.1f} GFLOP/s")
    config = preset(args.preset, max_tokens=args.context, scan_unroll=args.scan_unroll, **dict(args.model))
    configs = {"": config}
    if args.versus:
        configs["versus " + " ".join(f"{k}={v}" for k, v in args.versus)] = preset(
            args.preset, max_tokens=args.context, scan_unroll=args.scan_unroll, **{**dict(args.model), **dict(args.versus)})
    steps = args.context // config.tokens_per_step
    data = example_batch(config.domain, args.batch, steps, episodes=4)
    data["loss_mask"] = np.ones((args.batch, steps), bool)
    data = jax.device_put(data)
    runs = {name: train_step(c, args.grad_accum, data) for name, c in configs.items()}
    best = best_interleaved(runs, args.iters)  # a ratio of two separate runs would include the machine's drift
    tokens = args.batch * steps * config.tokens_per_step
    for name, c in configs.items():
        sec = best[name]
        flops = 3 * flops_per_token(c, context=args.context)["total"] * tokens / sec
        print(f"train {args.preset} {c.domain} ({c.compute_dtype}){' ' + name if name else ''}, batch {args.batch}×"
              f"{args.context} tokens, grad_accum {args.grad_accum}, scan_unroll {args.scan_unroll}: {sec * 1e3:.1f} "
              f"ms/step, {tokens / sec:,.0f} tokens/s, {flops / 1e9:.2f} GFLOP/s = {flops / peak:.3f} of the matmul peak")
    if args.versus:
        (name, sec), = ((n, t) for n, t in best.items() if n)
        print(f"{name}: {sec / best[''] :.3f}x the time of a step")
    per_token = flops_per_token(config, context=args.context)
    if args.parts:
        parts(config, data, steps, tokens, per_token, peak, args.iters)


def parts(config, data, steps, tokens, per_token, peak, iters) -> None:
    """Forward + backward of the encoder alone and of the transformer alone."""
    from icrl.model.model import ICRLModel

    model = ICRLModel(config, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    obs = data["obs"]
    x = jax.random.normal(jax.random.key(1), (data["actions"].shape[0], tokens // data["actions"].shape[0],
                                              config.dims().d_model))
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])

    @jax.jit
    def encoder(params):
        return jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest).encoder(obs)))(params)

    @jax.jit
    def blocks(params):
        return jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest).transformer(x, positions)[0]))(params)

    s = config.tokens_per_step
    for name, fn, flop in (("encoder", encoder, 3 * per_token["encoder"] * tokens),
                           ("transformer", blocks, 3 * (per_token["transformer"] + per_token["attention"]) * tokens)):
        sec = best_seconds(lambda fn=fn: fn(params), iters)
        print(f"  {name:<12} fwd+bwd {sec * 1e3:7.1f} ms, {flop / sec / 1e9:6.2f} GFLOP/s = {flop / sec / peak:.3f} "
              f"of peak ({flop / 1e9:.3f} GFLOP, {steps * data['actions'].shape[0]} steps, {tokens} tokens, S={s})")


if __name__ == "__main__":
    from icrl.errors import IcrlError

    try:
        main()
    except IcrlError as err:  # a bad --preset or --model value: one line, no traceback
        raise SystemExit(f"train_step_flops.py: {err}") from None
