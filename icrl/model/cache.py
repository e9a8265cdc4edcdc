"""The KV cache of cached decoding: per-layer keys and values plus per-row lengths.

A cache is an immutable pytree; every decoding call returns a new one (jit with donation makes the
update in place). Rows are independent: row b has ``length[b]`` valid tokens, so rollouts that
share a prefix but run episodes of different lengths live in one batch, and ``rewind`` sends a
finished rollout back to the shared prefix without touching the others.

Sharing a prefix: prefill the demonstrations once with batch 1, then ``tile(cache, n)`` gives the
cache of n rollouts that all start from it. Several prefixes at once (one per level): prefill them
as a batch of L rows, then ``take_rows(cache, rows)`` gives rollout r the prefix ``rows[r]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    """keys / values: per layer [B, C, H, Dh] (C = capacity in tokens); length [B] int32 valid
    tokens per row; timestep [B] int32 step-in-episode of each row's latest observation token,
    which the action (and reward) tokens that follow it share; obs [B, d_model] that token's
    encoded observation, which the action token after it carries (``action_sees_obs``)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    length: jax.Array
    timestep: jax.Array
    obs: jax.Array

    @property
    def batch_size(self) -> int:
        return int(self.length.shape[0])

    @property
    def capacity(self) -> int:
        """Tokens a row can hold. The caller keeps ``length + tokens to add <= capacity``."""
        return int(self.keys[0].shape[1])


def empty_cache(
    num_layers: int, batch: int, capacity: int, num_heads: int, head_dim: int, d_model: int, dtype: jnp.dtype
) -> KVCache:
    """A cache of ``batch`` empty rows holding up to ``capacity`` tokens each."""
    shape = (batch, capacity, num_heads, head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
    return KVCache(
        keys=zeros,
        values=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
        length=jnp.zeros((batch,), jnp.int32),
        timestep=jnp.zeros((batch,), jnp.int32),
        obs=jnp.zeros((batch, d_model), dtype),
    )


def tile(cache: KVCache, n: int) -> KVCache:
    """Repeat each row ``n`` times: batch B → B·n, rows b·n … b·n+n−1 are copies of row b."""
    return jax.tree.map(lambda a: jnp.repeat(a, n, axis=0), cache)


def take_rows(cache: KVCache, rows: jax.Array) -> KVCache:
    """Row ``rows[r]`` of ``cache`` as row r: batch B → len(rows); ``rows`` [R] int in [0, B).

    ``tile(cache, n)`` is ``take_rows(cache, repeat(arange(B), n))``; this also serves prefixes
    shared by unequal numbers of rows, in any order.
    """
    rows = jnp.asarray(rows, jnp.int32)
    return jax.tree.map(lambda a: jnp.take(a, rows, axis=0), cache)


def rewind(cache: KVCache, rows: jax.Array, length: jax.Array | int) -> KVCache:
    """Set the length of the rows where ``rows`` [B] bool is True to ``length`` (scalar or [B]).

    Tokens past the new length are ignored by attention and overwritten by later decoding, so a
    rollout whose episode ended restarts from the shared prefix (its prefill length) for free.
    """
    new_length = jnp.where(rows, jnp.asarray(length, jnp.int32), cache.length)
    return cache.replace(length=new_length)
