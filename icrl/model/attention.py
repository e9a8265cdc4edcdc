"""Causal multi-head self-attention.

Two entry points share the projections:

- ``__call__``: a whole sequence, causal (training, and the prefill of a KV cache); on GPU with a
  bfloat16/float16 compute dtype through cuDNN's fused flash-attention kernel
  (``jax.nn.dot_product_attention``) where a probe compile at the call's shapes succeeds
  (``attention_implementation``), else XLA ops in blocks of queries (``causal_attention``; or
  ``model.attention: xla``, jax's own XLA version); a packed row's segment mask goes to either
  (cuDNN takes it as an additive bias);
- ``decode``: one new token per row against a layer's KV cache, where row b holds ``lengths[b]``
  valid entries; the new key/value is written at index ``lengths[b]``, then ``cached_attention``
  reads the cache once (``shared_prefix_attention`` where groups of rows store a common prefix
  once: ``icrl.model.cache.SharedPrefix``).

There is no dropout on attention probabilities (the fused kernels have none); dropout is applied
to the residual branches instead (``transformer.Block``).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.errors import IcrlError
from icrl.model.axes import constrain, sharding
from icrl.model.cache import SharedPrefix
from icrl.model.config import ModelConfig
from icrl.model.positions import apply_rope


def attention_implementation(choice: str, dtype: jnp.dtype, q_shape: tuple[int, ...], masked: bool) -> str:
    """Resolve ``ModelConfig.attention`` for one call: "blocks", "xla" or "cudnn".

    "auto" takes cuDNN flash attention when the backend is a GPU, the compute dtype is 16-bit, the
    head size is a multiple of 8 up to 128 (cuDNN's documented limits on every GPU it supports),
    and a probe compile of the kernel at these shapes, forward and backward, succeeds
    (``_cudnn_compiles``); else "blocks" (``causal_attention``). cuDNN turns shapes down both while
    tracing and while XLA compiles (the cuDNN graph is built then), so catching errors around the
    traced call — as this once did — misses the second kind, and a failed compile would end the
    run; the probe sees both.
    "cudnn" insists (an error where it does not apply, rather than a silent fallback).
    q_shape: [B, L, H, Dh] of the queries; masked: a [B, 1, L, L] mask goes with them.
    """
    if choice in ("blocks", "xla"):
        return choice
    if choice == "cudnn":
        if jax.default_backend() != "gpu":
            raise IcrlError(f"model.attention=cudnn needs a GPU, but jax's backend is {jax.default_backend()!r}; "
                            "use model.attention=auto or xla")
        return "cudnn"
    dh = q_shape[-1]
    fits = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) and dh % 8 == 0 and dh <= 128
    if jax.default_backend() != "gpu" or not fits:
        return "blocks"
    _, length, heads, _ = q_shape
    return "cudnn" if _cudnn_compiles(length, heads, dh, jnp.dtype(dtype).name, masked) else "blocks"


@functools.cache
def _cudnn_compiles(length: int, heads: int, head_dim: int, dtype: str, masked: bool) -> bool:
    """Whether causal cuDNN attention over one row of these sizes lowers and compiles, with its
    gradient: a probe of well under a second, once per process and shape (the batch does not
    change what cuDNN supports, so one row stands for any)."""
    q = jax.ShapeDtypeStruct((1, length, heads, head_dim), jnp.dtype(dtype))
    m = jax.ShapeDtypeStruct((1, 1, length, length), jnp.bool_) if masked else None

    def loss(q, k, v, m):
        y = jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=True, implementation="cudnn")
        return jnp.sum(y.astype(jnp.float32))

    try:
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q, m).compile()
    except Exception as err:  # noqa: BLE001 — any refusal (trace, lowering, cuDNN graph) means XLA
        logging.getLogger(__name__).info("cuDNN attention unavailable for L=%d H=%d Dh=%d %s%s: %s; using XLA",
                                         length, heads, head_dim, dtype, " masked" if masked else "", err)
        return False
    return True


class Attention(nnx.Module):
    """Self-attention over x [B, L, d_model] with ``num_heads`` heads of ``head_dim`` features."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        h, dh, d = dims.num_heads, dims.head_dim, dims.d_model
        kw = dict(
            use_bias=False,
            dtype=jnp.dtype(config.compute_dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            rngs=rngs,
        )
        self.query = nnx.LinearGeneral(d, (h, dh), kernel_metadata=sharding("embed", "heads", "kv"), **kw)
        self.key = nnx.LinearGeneral(d, (h, dh), kernel_metadata=sharding("embed", "heads", "kv"), **kw)
        self.value = nnx.LinearGeneral(d, (h, dh), kernel_metadata=sharding("embed", "heads", "kv"), **kw)
        self.out = nnx.LinearGeneral((h, dh), d, axis=(-2, -1), kernel_metadata=sharding("heads", "kv", "embed"), **kw)
        self.rope_base = config.rope_base if config.positions == "rope" else None
        # Resolved per call (``attention_implementation``): the shapes decide, and they are known
        # only then. An explicit cudnn off a GPU fails here, when the model is built.
        self.attention = config.attention
        if config.attention == "cudnn":
            attention_implementation("cudnn", jnp.dtype(config.compute_dtype), (1, 1, h, dh), False)

    def _project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [B, L, d], positions [B, L] → q, k, v [B, L, H, Dh] (RoPE applied to q and k)."""
        heads = ("batch", "sequence", "act_heads", "act_kv")
        q, k, v = (constrain(p(x), *heads) for p in (self.query, self.key, self.value))
        if self.rope_base is not None:
            q = apply_rope(q, positions, self.rope_base)
            k = apply_rope(k, positions, self.rope_base)
        return q, k, v

    def __call__(
        self, x: jax.Array, positions: jax.Array, mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Causal attention over the whole sequence.

        x [B, L, d], positions [B, L], mask [B, 1, L, L] bool or None (packed rows: segments) →
        (y [B, L, d], k [B, L, H, Dh], v [B, L, H, Dh]); k and v are what a KV cache stores for these
        tokens.
        """
        q, k, v = self._project(x, positions)
        implementation = attention_implementation(self.attention, q.dtype, q.shape, mask is not None)
        if implementation == "blocks":
            y = causal_attention(q, k, v, mask)
        else:
            y = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation=implementation)
        y = constrain(y, "batch", "sequence", "act_heads", "act_kv")
        return self.out(y), k, v

    def decode(
        self,
        x: jax.Array,
        positions: jax.Array,
        k_cache: jax.Array | SharedPrefix,
        v_cache: jax.Array | SharedPrefix,
        lengths: jax.Array,
    ) -> tuple[jax.Array, jax.Array | SharedPrefix, jax.Array | SharedPrefix]:
        """One token per row against the cache.

        x [B, 1, d], positions [B, 1], k_cache / v_cache [B, C, H, Dh] (or ``SharedPrefix`` layers:
        rows in groups that store their common prefix once), lengths [B] int32 (valid entries
        per row) → (y [B, 1, d], updated k_cache, updated v_cache). The caller keeps
        ``lengths < C`` (shared: ``lengths - prefix length < W``).
        """
        q, k, v = self._project(x, positions)
        q = q[:, 0].astype(k_cache.dtype)
        # Entries at and beyond lengths+1 are stale or empty: the length mask hides them. One query
        # token needs no causal mask.
        if isinstance(k_cache, SharedPrefix):
            at = k_cache.own_index(lengths)
            k_cache = k_cache.replace(own=_write(k_cache.own, k.astype(k_cache.dtype), at))
            v_cache = v_cache.replace(own=_write(v_cache.own, v.astype(v_cache.dtype), at))
            y = shared_prefix_attention(q, k_cache, v_cache, at + 1)
        else:
            k_cache = _write(k_cache, k.astype(k_cache.dtype), lengths)
            v_cache = _write(v_cache, v.astype(v_cache.dtype), lengths)
            y = cached_attention(q, k_cache, v_cache, lengths + 1)
        return self.out(y[:, None].astype(x.dtype)), k_cache, v_cache


# Queries per block of ``causal_attention``. On the 2-core CPU, fwd+bwd of one layer of the
# quickstart's attention (benchmarks/attention_blocks.py: 16 rows × 512 tokens, 4 heads of 32,
# segment mask) took 0.48x the time of jax.nn.dot_product_attention's XLA version in blocks of 128,
# 0.47-0.55x in blocks of 32-256, 0.77x in one block (docs/benchmarks.md).
QUERY_BLOCK = 128


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                     block: int = QUERY_BLOCK) -> jax.Array:
    """Causal softmax attention in blocks of ``block`` queries; a block reads only the keys up to its end.

    q, k, v [B, L, H, Dh], mask [B, 1, L, L] bool or None (True: may attend) → [B, L, H, Dh] in q's
    dtype. Scores and softmax in float32. Causal attention never needs a key after its query, so
    block i skips the (L − end_i) later keys: about half the score work for many blocks, and the
    [B, H, block, end] arrays of the softmax stay small enough for the CPU's caches. Every query
    keeps at least itself (the mask of a packed row is True on the diagonal), so no row is empty.
    """
    length, scale = q.shape[1], q.shape[-1] ** -0.5
    outs = []
    for start in range(0, length, block):
        end = min(length, start + block)
        scores = jnp.einsum("blhd,bmhd->bhlm", q[:, start:end], k[:, :end],
                            preferred_element_type=jnp.float32) * scale
        keep = jnp.arange(start, end)[:, None] >= jnp.arange(end)[None, :]
        if mask is not None:
            keep = keep & mask[:, :, start:end, :end]
        probs = jax.nn.softmax(jnp.where(keep, scores, -1e30), axis=-1)
        outs.append(jnp.einsum("bhlm,bmhd->blhd", probs.astype(v.dtype), v[:, :end]))
    return jnp.concatenate(outs, axis=1).astype(q.dtype)


def _write(cache: jax.Array, new: jax.Array, at: jax.Array) -> jax.Array:
    """cache [B, C, H, Dh] with new [B, 1, H, Dh] written at entry at[b] of row b (in place under jit
    with donation)."""
    return jax.vmap(lambda c, n, i: jax.lax.dynamic_update_slice(c, n, (i, 0, 0)))(cache, new, at)


def cached_attention(q: jax.Array, keys: jax.Array, values: jax.Array, lengths: jax.Array) -> jax.Array:
    """One query per row against its first ``lengths[b]`` cache entries.

    q [B, H, Dh], keys / values [B, C, H, Dh], lengths [B] int → [B, H, Dh] float32: softmax over
    the valid entries of q·k / sqrt(Dh), times the values; a row with length 0 gives zeros.

    Why not ``jax.nn.dot_product_attention``: decoding is bound by reading the cache, and XLA (on
    CPU) lowers its per-head contractions of [B, C, H, Dh] with transposed copies of the cache:
    18 ms of CPU time a layer at B = 80, C = 384, H = 4, Dh = 32, against 6 ms here
    (``_partial``) and 2.5 ms for merely reading the cache once.
    """
    top, total, mixed = _partial(q[:, None], keys, values, lengths[:, None])
    return _combine([(top[:, 0], total[:, 0], mixed[:, 0])])


def shared_prefix_attention(q: jax.Array, keys: SharedPrefix, values: SharedPrefix, own_lengths: jax.Array) -> jax.Array:
    """``cached_attention`` of rows whose caches are ``SharedPrefix`` layers: row r = g·n + i sees its
    group's first ``prefix_length[g]`` prefix entries, then its own first ``own_lengths[r]`` entries.

    q [R, H, Dh], own_lengths [R] int → [R, H, Dh] float32. The prefix is read once per group
    rather than once per row: the n queries of a group go against it in one matrix product.
    """
    g, n = keys.prefix.shape[0], keys.group_size
    r, h, dh = q.shape
    prefix = _partial(q.reshape(g, n, h, dh), keys.prefix, values.prefix,
                      jnp.broadcast_to(keys.prefix_length[:, None], (g, n)))
    own = _partial(q[:, None], keys.own, values.own, own_lengths[:, None])
    return _combine([tuple(a.reshape(r, *a.shape[2:]) for a in prefix), tuple(a[:, 0] for a in own)])


def _partial(q: jax.Array, keys: jax.Array, values: jax.Array, lengths: jax.Array):
    """Unnormalised attention of n queries per group against the group's first ``lengths`` entries.

    q [G, n, H, Dh], keys / values [G, C, H, Dh], lengths [G, n] int → (top [G, n, H]: the largest
    valid score, -inf where none; total [G, n, H]: sum of exp(score - top); mixed [G, n, H, Dh]:
    sum of exp(score - top) · value, both 0 where no entry is valid), all float32; ``_combine``
    normalises one or more of them.

    Both products are plain batched matrix products over the cache in its stored layout,
    [G, C, H·Dh], each reading it once: the queries go in as a block-diagonal [G, H·Dh, n·H]
    matrix (query (i, h) in rows h·Dh … h·Dh + Dh − 1 of column i·H + h), and weights·V computes
    every (query head, value head) pair, of which the diagonal is kept. That is H times the
    multiply-adds of the attention itself, still cheaper than reading the cache for the heads of
    this project's presets (measured up to H = 16, Dh = 64).
    """
    g, c, h, dh = keys.shape
    n = q.shape[1]
    eye = jnp.eye(h, dtype=q.dtype)
    blocks = q[:, :, :, :, None] * eye[:, None, :]  # [G, n, H, Dh, H]: zero unless the heads agree
    blocks = jnp.moveaxis(blocks, 1, 3).reshape(g, h * dh, n * h)
    scores = jnp.einsum("gck,gkq->gcq", keys.reshape(g, c, h * dh), blocks,
                        preferred_element_type=jnp.float32).reshape(g, c, n, h) / jnp.sqrt(jnp.float32(dh))
    valid = jnp.arange(c)[None, :, None, None] < lengths.astype(jnp.int32)[:, None, :, None]
    scores = jnp.where(valid, scores, -jnp.inf)
    top = jnp.max(scores, axis=1)  # [G, n, H]; -inf where no entry is valid
    weights = jnp.exp(scores - _finite(top)[:, None])  # masked entries: exactly 0
    mixed = jnp.einsum("gcq,gck->gqk", weights.reshape(g, c, n * h).astype(values.dtype),
                       values.reshape(g, c, h * dh), preferred_element_type=jnp.float32)
    mixed = jnp.diagonal(mixed.reshape(g, n, h, h, dh), axis1=2, axis2=3)  # [G, n, Dh, H]
    return top, jnp.sum(weights, axis=1), jnp.swapaxes(mixed, 2, 3)


def _combine(parts: list[tuple[jax.Array, jax.Array, jax.Array]]) -> jax.Array:
    """Softmax over the union of the entries of several ``_partial`` results (each (top [..., H],
    total [..., H], mixed [..., H, Dh])) → [..., H, Dh]; zeros where no part has a valid entry."""
    top = _finite(functools.reduce(jnp.maximum, [t for t, _, _ in parts]))
    # A part's sums are relative to its own top (0 where it has no valid entry, and then they are
    # 0): rescale each to the common top, which is at least its own, so nothing overflows.
    scales = [jnp.where(jnp.isfinite(t), jnp.exp(_finite(t) - top), 0.0) for t, _, _ in parts]
    total = sum(s * w for (_, s, _), w in zip(parts, scales))
    mixed = sum(m * w[..., None] for (_, _, m), w in zip(parts, scales))
    return mixed / jnp.where(total > 0, total, 1.0)[..., None]


def _finite(top: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(top), top, 0.0)
