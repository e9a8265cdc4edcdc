"""Causal attention on CPU: ``causal_attention`` in query blocks against ``jax.nn.dot_product_attention``.

Forward + backward of one layer's attention at the quickstart's shapes (16 rows × 512 tokens,
4 heads of 32, the segment mask of packed rows), best of a few, the variants interleaved so that
the machine's drift hits them alike; prints ms per call and each one's ratio to jax's XLA version.

    .venv/bin/python benchmarks/attention_blocks.py
    .venv/bin/python benchmarks/attention_blocks.py --blocks 64 128 --rows 8 --tokens 1024
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from icrl.model.attention import causal_attention
from icrl.train.bench import best_interleaved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--segments", type=int, default=5, help="equal runs of one segment per row (packing)")
    p.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128, 256, 512], help="queries per block")
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    if min(args.rows, args.tokens, args.heads, args.head_dim, args.segments, *args.blocks, args.iters) < 1:
        raise SystemExit("attention_blocks.py: every size must be at least 1")

    keys = jax.random.split(jax.random.key(0), 3)
    shape = (args.rows, args.tokens, args.heads, args.head_dim)
    q, k, v = (jax.random.normal(key, shape) for key in keys)
    segment = jnp.broadcast_to(jnp.arange(args.tokens) * args.segments // args.tokens, (args.rows, args.tokens))
    mask = segment[:, None, :, None] == segment[:, None, None, :]

    variants = {"jax.nn.dot_product_attention (xla)": lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=True, implementation="xla")}
    for block in args.blocks:
        variants[f"causal_attention, blocks of {block}"] = lambda q, k, v, b=block: causal_attention(q, k, v, mask, b)
    grads = {name: jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2)))
             for name, f in variants.items()}
    best = best_interleaved({name: lambda g=g: g(q, k, v) for name, g in grads.items()}, args.iters)
    base = best["jax.nn.dot_product_attention (xla)"]
    print(f"causal attention fwd+bwd, {args.rows}×{args.tokens} tokens, {args.heads} heads × {args.head_dim}, "
          f"{args.segments} segments a row, {jax.default_backend()}, best of {args.iters}:")
    for name, sec in best.items():
        print(f"  {name:<36} {sec * 1e3:8.1f} ms  {sec / base:.2f}x")


if __name__ == "__main__":
    main()
