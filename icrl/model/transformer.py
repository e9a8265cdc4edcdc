"""The causal transformer: pre-norm blocks (attention, MLP), residual dropout, a final norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.model.attention import Attention
from icrl.model.cache import KVCache
from icrl.model.config import ModelConfig
from icrl.model.layers import RMSNorm, dense


class MLP(nnx.Module):
    """x [..., d_model] → gelu(x W_in) W_out, hidden width ``mlp_dim``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        kw = dict(use_bias=False, dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.wi = dense(dims.d_model, dims.mlp_dim, ("embed", "mlp"), **kw)
        self.wo = dense(dims.mlp_dim, dims.d_model, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.wo(nnx.gelu(self.wi(x)))


class Block(nnx.Module):
    """x + dropout(attn(norm(x))), then x + dropout(mlp(norm(x)))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        dt, pdt = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        self.attn_norm = RMSNorm(dims.d_model, dtype=dt, param_dtype=pdt)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = RMSNorm(dims.d_model, dtype=dt, param_dtype=pdt)
        self.mlp = MLP(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(
        self, x: jax.Array, positions: jax.Array, deterministic: bool | None = None, mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [B, L, d], positions [B, L], mask [B, 1, L, L] bool or None → (x [B, L, d], k, v [B, L, H, Dh])."""
        y, k, v = self.attn(self.attn_norm(x), positions, mask)
        x = x + self.dropout(y, deterministic=deterministic)
        x = x + self.dropout(self.mlp(self.mlp_norm(x)), deterministic=deterministic)
        return x, k, v

    def decode(
        self, x: jax.Array, positions: jax.Array, k_cache: jax.Array, v_cache: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One token per row, no dropout: x [B, 1, d] → (x, k_cache, v_cache) (see Attention.decode)."""
        y, k_cache, v_cache = self.attn.decode(self.attn_norm(x), positions, k_cache, v_cache, lengths)
        x = x + y
        x = x + self.mlp(self.mlp_norm(x))
        return x, k_cache, v_cache


def _block_forward(block: Block, x: jax.Array, positions: jax.Array, deterministic: bool | None, mask):
    return block(x, positions, deterministic, mask)


def _block_forward_x(block: Block, x: jax.Array, positions: jax.Array, deterministic: bool | None, mask):
    # Training needs no keys/values: returning only x keeps them out of remat's saved residuals.
    return block(x, positions, deterministic, mask)[0]


class Transformer(nnx.Module):
    """``num_layers`` blocks and a final RMSNorm over token embeddings x [B, L, d_model]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(dims.num_layers)])
        self.norm = RMSNorm(dims.d_model, dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))
        # Rematerialise block activations in the backward pass: memory O(layers · tokens · d) instead
        # of O(layers · tokens · (mlp_dim + ...)), for about one extra forward of compute.
        self.remat = config.remat

    def __call__(
        self, x: jax.Array, positions: jax.Array, deterministic: bool | None = None, return_kv: bool = False,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
        """x [B, L, d], positions [B, L], mask [B, 1, L, L] bool or None (packed rows: which tokens
        may see which, on top of causality) → (normed x [B, L, d], per-layer (k, v) [B, L, H, Dh] if
        ``return_kv``, else an empty list)."""
        fn = _block_forward if return_kv else _block_forward_x
        forward = nnx.remat(fn, static_argnums=(3,)) if self.remat else fn
        kv = []
        for block in self.blocks:
            if return_kv:
                x, k, v = forward(block, x, positions, deterministic, mask)
                kv.append((k, v))
            else:
                x = forward(block, x, positions, deterministic, mask)
        return self.norm(x), kv

    def decode(self, x: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """One token per row at position ``cache.length``: x [B, 1, d] → (normed x, cache one longer)."""
        positions = cache.length[:, None]
        keys, values = [], []
        for block, k_cache, v_cache in zip(self.blocks, cache.keys, cache.values, strict=True):
            x, k_cache, v_cache = block.decode(x, positions, k_cache, v_cache, cache.length)
            keys.append(k_cache)
            values.append(v_cache)
        return self.norm(x), cache.replace(keys=tuple(keys), values=tuple(values), length=cache.length + 1)
