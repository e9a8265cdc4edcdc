"""The causal transformer: pre-norm blocks (attention, MLP), residual dropout, a final norm.

The ``num_layers`` blocks are one ``Block`` whose parameters are stacked along a leading
``layers`` axis ([L, ...], created with ``nnx.vmap``), and the whole-sequence pass is a
``jax.lax.scan`` over that axis: the compiled program holds one block whatever the depth, so
compile time no longer grows with it. ``remat`` wraps the scanned block in ``jax.checkpoint``;
``scan_unroll`` > 1 unrolls that many layers per iteration (faster on CPU, slower to compile).
Cached decoding (``decode``: one token per row) loops over the layers with each layer's slice of
the stacked parameters instead, because the KV cache keeps one array per layer (``KVCache``) and
a scan would stack (copy) the whole cache at every token.

Dropout: one key per call, from the transformer's own stream; layer l uses fold_in(key, l), and
inside the block fold_in(·, 0) for the attention branch and fold_in(·, 1) for the MLP branch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.model.attention import Attention
from icrl.model.axes import constrain
from icrl.model.cache import KVCache
from icrl.model.config import ModelConfig
from icrl.model.layers import RMSNorm, dense

RESIDUAL = ("batch", "sequence", "act_embed")  # logical axes of the residual stream [B, L, d]


class MLP(nnx.Module):
    """x [..., d_model] → gelu(x W_in) W_out, hidden width ``mlp_dim``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        kw = dict(use_bias=False, dtype=jnp.dtype(config.compute_dtype), param_dtype=jnp.dtype(config.param_dtype),
                  rngs=rngs)
        self.wi = dense(dims.d_model, dims.mlp_dim, ("embed", "mlp"), **kw)
        self.wo = dense(dims.mlp_dim, dims.d_model, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, L, d] → [B, L, d]; the hidden [B, L, mlp_dim] is constrained as ``act_mlp``."""
        h = constrain(self.wi(x), "batch", "sequence", "act_mlp")
        return self.wo(nnx.gelu(h))


class Block(nnx.Module):
    """x + dropout(attn(norm(x))), then x + dropout(mlp(norm(x))).

    The block holds no random state: dropout draws from the ``key`` given to ``__call__``, so a
    stack of blocks can be scanned over with one key per layer.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        dt, pdt = jnp.dtype(config.compute_dtype), jnp.dtype(config.param_dtype)
        self.attn_norm = RMSNorm(dims.d_model, dtype=dt, param_dtype=pdt)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = RMSNorm(dims.d_model, dtype=dt, param_dtype=pdt)
        self.mlp = MLP(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)

    def __call__(
        self, x: jax.Array, positions: jax.Array, key: jax.Array | None = None, mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [B, L, d], positions [B, L], key: dropout key (None: no dropout), mask [B, 1, L, L] bool or
        None → (x [B, L, d], k, v [B, L, H, Dh])."""
        y, k, v = self.attn(self.attn_norm(x), positions, mask)
        x = x + self._drop(y, key, 0)
        x = x + self._drop(self.mlp(self.mlp_norm(x)), key, 1)
        return constrain(x, *RESIDUAL), k, v

    def _drop(self, y: jax.Array, key: jax.Array | None, branch: int) -> jax.Array:
        if key is None:
            return y
        return self.dropout(y, deterministic=False, rngs=jax.random.fold_in(key, branch))

    def decode(
        self, x: jax.Array, positions: jax.Array, k_cache: jax.Array, v_cache: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One token per row, no dropout: x [B, 1, d] → (x, k_cache, v_cache) (see Attention.decode)."""
        y, k_cache, v_cache = self.attn.decode(self.attn_norm(x), positions, k_cache, v_cache, lengths)
        x = x + y
        x = x + self.mlp(self.mlp_norm(x))
        return x, k_cache, v_cache


def stacked_blocks(config: ModelConfig, rngs: nnx.Rngs) -> Block:
    """``num_layers`` blocks as one Block with every parameter stacked [L, ...] (logical axis
    ``layers`` first); layer l is initialised from its own split of ``rngs``."""

    @nnx.split_rngs(splits=config.dims().num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs: nnx.Rngs) -> Block:
        return Block(config, rngs=rngs)

    return create(rngs)


class Transformer(nnx.Module):
    """``num_layers`` blocks (stacked, scanned) and a final RMSNorm over token embeddings x [B, L, d_model]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        self.num_layers = dims.num_layers
        self.blocks = stacked_blocks(config, rngs)
        self.norm = RMSNorm(dims.d_model, dtype=jnp.dtype(config.compute_dtype),
                            param_dtype=jnp.dtype(config.param_dtype))
        # The source of the per-call dropout key (its own stream, reseeded like every other) and
        # of the train/eval mode (``model.train()`` / ``model.eval()`` set it on every Dropout).
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        # Rematerialise block activations in the backward pass: memory O(layers · tokens · d) instead
        # of O(layers · tokens · (mlp_dim + ...)), for about one extra forward of compute.
        self.remat = config.remat
        self.unroll = min(config.scan_unroll, dims.num_layers)

    def _dropout_key(self, deterministic: bool | None) -> jax.Array | None:
        off = self.dropout.deterministic if deterministic is None else deterministic
        if off or self.dropout.rate == 0.0:
            return None
        return self.dropout.rngs()

    def __call__(
        self, x: jax.Array, positions: jax.Array, deterministic: bool | None = None, return_kv: bool = False,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
        """x [B, L, d], positions [B, L], mask [B, 1, L, L] bool or None (packed rows: which tokens
        may see which, on top of causality) → (normed x [B, L, d], per-layer (k, v) [B, L, H, Dh] if
        ``return_kv``, else an empty list)."""
        key = self._dropout_key(deterministic)
        graphdef, params = nnx.split(self.blocks)
        layers = jnp.arange(self.num_layers)

        def body(x: jax.Array, xs: tuple) -> tuple[jax.Array, tuple | None]:
            layer_params, layer = xs
            block = nnx.merge(graphdef, layer_params)
            x, k, v = block(x, positions, None if key is None else jax.random.fold_in(key, layer), mask)
            # Training needs no keys/values: returning none keeps them out of remat's residuals.
            return x, ((k, v) if return_kv else None)

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)  # in a scan CSE cannot undo the remat
        x, kv = jax.lax.scan(body, constrain(x, *RESIDUAL), (params, layers), unroll=self.unroll)
        per_layer = [(kv[0][i], kv[1][i]) for i in range(self.num_layers)] if return_kv else []
        return self.norm(x), per_layer

    def layer(self, i: int) -> Block:
        """Block ``i`` on its own: a view of layer i's slice of the stacked parameters (read-only use)."""
        graphdef, params = nnx.split(self.blocks)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], params))

    def decode(self, x: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """One token per row at position ``cache.length``: x [B, 1, d] → (normed x, cache one longer)."""
        positions = cache.length[:, None]
        keys, values = [], []
        for i, (k_cache, v_cache) in enumerate(zip(cache.keys, cache.values, strict=True)):
            x, k_cache, v_cache = self.layer(i).decode(x, positions, k_cache, v_cache, cache.length)
            keys.append(k_cache)
            values.append(v_cache)
        return self.norm(x), cache.replace(keys=tuple(keys), values=tuple(values), length=cache.length + 1)
