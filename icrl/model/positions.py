"""Rotary position embeddings (RoPE, Su et al. 2021), the default token positions.

The learned alternative is a plain table added to the token embeddings (``tokens.TokenEmbedder``);
``ModelConfig.positions`` selects one. Why RoPE (``benchmarks/model_throughput.py --positions``
measures both): on an in-context retrieval task whose demo/query pair starts at a random offset,
as episodes do in packed bursty sequences, the two reached the same query accuracy (RoPE 0.39,
learned 0.38 after 1500 steps; chance 0.125), so the choice rests on what else differs. RoPE has
no parameters (the learned table of max_tokens × d_model is +25% of the 1M preset), is invariant
to where an episode starts in the sequence by construction, and lets a KV cache grow past the
training context (k demos plus several rollout episodes) where a learned table has no rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotate feature pairs of ``x`` [B, L, H, D] by angles ``positions`` [B, L] · base^(-2i/D).

    Uses the "rotate half" pairing (feature i with feature i + D/2). Computed in float32 and cast
    back, because bfloat16 angles lose the low-order bits that distinguish nearby positions.
    """
    d = x.shape[-1]
    inv_freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)  # [D/2]
    angles = positions.astype(jnp.float32)[..., None, None] * inv_freq  # [B, L, 1, D/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., : d // 2], x32[..., d // 2 :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
