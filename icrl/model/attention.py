"""Causal multi-head self-attention through ``jax.nn.dot_product_attention``.

Two entry points share the projections:

- ``__call__``: a whole sequence, causal (training, and the prefill of a KV cache); on GPU with a
  bfloat16/float16 compute dtype it uses cuDNN's fused flash-attention kernel;
- ``decode``: one new token per row against a layer's KV cache, where row b holds ``lengths[b]``
  valid entries; the new key/value is written at index ``lengths[b]``.

There is no dropout on attention probabilities (the fused kernels have none); dropout is applied
to the residual branches instead (``transformer.Block``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.model.axes import sharding
from icrl.model.config import ModelConfig
from icrl.model.positions import apply_rope


def attention_implementation(choice: str, dtype: jnp.dtype, head_dim: int) -> str:
    """Resolve ``ModelConfig.attention``: "auto" picks cuDNN where it applies, else XLA.

    cuDNN flash attention needs a GPU, a 16-bit compute dtype and a head size that is a multiple
    of 8 up to 128; every other case falls back to XLA's implementation.
    """
    if choice != "auto":
        return choice
    on_gpu = jax.default_backend() == "gpu"
    fits = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if on_gpu and fits else "xla"


class Attention(nnx.Module):
    """Self-attention over x [B, L, d_model] with ``num_heads`` heads of ``head_dim`` features."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        h, dh, d = dims.num_heads, dims.head_dim, dims.d_model
        kw = dict(
            use_bias=False,
            dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            rngs=rngs,
        )
        self.query = nnx.LinearGeneral(d, (h, dh), kernel_metadata=sharding("embed", "heads", "kv"), **kw)
        self.key = nnx.LinearGeneral(d, (h, dh), kernel_metadata=sharding("embed", "heads", "kv"), **kw)
        self.value = nnx.LinearGeneral(d, (h, dh), kernel_metadata=sharding("embed", "heads", "kv"), **kw)
        self.out = nnx.LinearGeneral((h, dh), d, axis=(-2, -1), kernel_metadata=sharding("heads", "kv", "embed"), **kw)
        self.rope_base = config.rope_base if config.positions == "rope" else None
        self.implementation = attention_implementation(config.attention, jnp.dtype(config.dtype), dh)
        # "auto" may fall back to XLA where cuDNN turns the shapes down; an explicit "cudnn" may not.
        self.fallback = config.attention == "auto"

    def _project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [B, L, d], positions [B, L] → q, k, v [B, L, H, Dh] (RoPE applied to q and k)."""
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.rope_base is not None:
            q = apply_rope(q, positions, self.rope_base)
            k = apply_rope(k, positions, self.rope_base)
        return q, k, v

    def __call__(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Causal attention over the whole sequence.

        x [B, L, d], positions [B, L] → (y [B, L, d], k [B, L, H, Dh], v [B, L, H, Dh]); k and v are
        what a KV cache stores for these tokens.
        """
        q, k, v = self._project(x, positions)
        try:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=self.implementation)
        except (NotImplementedError, RuntimeError):
            # cuDNN checks shapes, dtypes and its own presence while tracing and says no this way.
            if not self.fallback:
                raise
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
        return self.out(y), k, v

    def decode(
        self,
        x: jax.Array,
        positions: jax.Array,
        k_cache: jax.Array,
        v_cache: jax.Array,
        lengths: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One token per row against the cache.

        x [B, 1, d], positions [B, 1], k_cache / v_cache [B, C, H, Dh], lengths [B] int32 (valid
        entries per row) → (y [B, 1, d], updated k_cache, updated v_cache). The caller keeps
        ``lengths < C``.
        """
        q, k, v = self._project(x, positions)
        write = jax.vmap(lambda cache, new, i: jax.lax.dynamic_update_slice(cache, new, (i, 0, 0)))
        k_cache = write(k_cache, k.astype(k_cache.dtype), lengths)
        v_cache = write(v_cache, v.astype(v_cache.dtype), lengths)
        # Entries at and beyond lengths+1 are stale or empty: the length mask hides them. One query
        # token needs no causal mask; XLA's kernel is used because decoding is memory-bound anyway.
        y = jax.nn.dot_product_attention(
            q.astype(k_cache.dtype),
            k_cache,
            v_cache,
            key_value_seq_lengths=(lengths + 1).astype(jnp.int32),
            implementation="xla",
        )
        return self.out(y.astype(x.dtype)), k_cache, v_cache
