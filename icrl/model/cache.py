"""The KV cache of cached decoding: per-layer keys and values plus per-row lengths.

A cache is an immutable pytree; every decoding call returns a new one (jit with donation makes the
update in place). Rows are independent: row b has ``length[b]`` valid tokens, so rollouts that
share a prefix but run episodes of different lengths live in one batch, and ``rewind`` sends a
finished rollout back to the shared prefix without touching the others.

Sharing a prefix: prefill the demonstrations once with batch 1, then ``tile(cache, n)`` gives the
cache of n rollouts that all start from it. Several prefixes at once (one per level): prefill them
as a batch of L rows, then ``take_rows(cache, rows)`` gives rollout r the prefix ``rows[r]``.

Both copy the prefix into every row, and decoding then reads every copy at every token: at 80 rows
over 16 levels, most of what a decoding step reads. ``share_prefix(cache, n, own)`` stores each
prefix once instead (``SharedPrefix`` layers: rows g·n … g·n + n − 1 share prefix g, each row has
``own`` further entries of its own), for the same results; attention reads a prefix once per group.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SharedPrefix:
    """One layer's keys (or values) of G groups of n consecutive rows, each group with a common prefix.

    prefix [G, P, H, Dh]: group g's first ``prefix_length[g]`` [G] int32 entries, stored once;
    own [G·n, W, H, Dh]: each row's entries after its prefix. Row r = g·n + i's entry j is
    ``prefix[g, j]`` for j < prefix_length[g], else ``own[r, j - prefix_length[g]]``.
    """

    prefix: jax.Array
    prefix_length: jax.Array
    own: jax.Array

    @property
    def group_size(self) -> int:
        return int(self.own.shape[0] // self.prefix.shape[0])

    @property
    def dtype(self) -> jnp.dtype:
        return self.own.dtype

    def own_index(self, lengths: jax.Array) -> jax.Array:
        """Row lengths [G·n] (tokens in all) → their index into ``own`` [G·n]."""
        return lengths - jnp.repeat(self.prefix_length, self.group_size, total_repeat_length=self.own.shape[0])


@struct.dataclass
class KVCache:
    """keys / values: per layer [B, C, H, Dh] (C = capacity in tokens) or ``SharedPrefix``
    (``share_prefix``); length [B] int32 valid
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
        """Tokens a row can hold. The caller keeps ``length + tokens to add <= capacity``; with
        ``SharedPrefix`` layers this is the longest prefix plus ``own``'s W (a row holds its own
        prefix plus W)."""
        first = self.keys[0]
        if isinstance(first, SharedPrefix):
            return int(first.prefix.shape[1] + first.own.shape[1])
        return int(first.shape[1])

    @property
    def shared(self) -> bool:
        """True when the layers are ``SharedPrefix`` (``share_prefix``)."""
        return isinstance(self.keys[0], SharedPrefix)


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
    _plain(cache, "tile")
    return jax.tree.map(lambda a: jnp.repeat(a, n, axis=0), cache)


def share_prefix(cache: KVCache, n: int, own: int) -> KVCache:
    """``tile(cache, n)`` with each row's entries stored once: batch B → B·n rows in B groups of n,
    row b·n + i starting from row b's ``length[b]`` tokens, with room for ``own`` tokens more.

    The prefixes are copied (the result's calls donate them, the given cache stays valid); the
    rows decode as ``tile``'s would, and attention reads each prefix once per group
    (``icrl.model.attention.shared_prefix_attention``). ``rewind`` applies; ``tile`` and
    ``take_rows`` do not.
    """
    _plain(cache, "share_prefix")
    return _share_prefix(cache, n, own)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _share_prefix(cache: KVCache, n: int, own: int) -> KVCache:
    # One compiled call rather than some twenty small eager ones (about 1 ms each on CPU), which
    # counted when the evaluator plays one level at a time.
    rows = cache.batch_size * n

    def layer(a: jax.Array) -> SharedPrefix:
        # Copies, also of the lengths: one buffer may not be donated twice in one call.
        return SharedPrefix(prefix=jnp.copy(a), prefix_length=jnp.copy(cache.length),
                            own=jnp.zeros((rows, own, *a.shape[2:]), a.dtype))

    return KVCache(keys=tuple(layer(a) for a in cache.keys), values=tuple(layer(a) for a in cache.values),
                   length=jnp.repeat(cache.length, n), timestep=jnp.repeat(cache.timestep, n),
                   obs=jnp.repeat(cache.obs, n, axis=0))


def _plain(cache: KVCache, what: str) -> None:
    if cache.shared:
        raise ValueError(f"{what} needs a cache of plain [B, C, H, Dh] layers, not SharedPrefix ones")


def take_rows(cache: KVCache, rows: jax.Array) -> KVCache:
    """Row ``rows[r]`` of ``cache`` as row r: batch B → len(rows); ``rows`` [R] int in [0, B).

    ``tile(cache, n)`` is ``take_rows(cache, repeat(arange(B), n))``; this also serves prefixes
    shared by unequal numbers of rows, in any order.
    """
    _plain(cache, "take_rows")
    rows = jnp.asarray(rows, jnp.int32)
    return jax.tree.map(lambda a: jnp.take(a, rows, axis=0), cache)


def rewind(cache: KVCache, rows: jax.Array, length: jax.Array | int) -> KVCache:
    """Set the length of the rows where ``rows`` [B] bool is True to ``length`` (scalar or [B]).

    Tokens past the new length are ignored by attention and overwritten by later decoding, so a
    rollout whose episode ended restarts from the shared prefix (its prefill length) for free.
    """
    new_length = jnp.where(rows, jnp.asarray(length, jnp.int32), cache.length)
    return cache.replace(length=new_length)
