"""Small building blocks with logical axis names on every parameter.

Thin constructors over Flax NNX layers (so the arithmetic is Flax's), plus an RMSNorm that computes
its statistics in float32 whatever the compute dtype. ``dtype`` is the compute dtype, ``param_dtype``
the storage dtype of the weights (float32 master weights with bfloat16 compute is the usual mix).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import default_kernel_init

from icrl.model.axes import sharding

# GPT-2-style small init for token-level embedding tables: keeps their sum with encoder outputs
# from being dominated by any single table at the start of training.
EMBED_INIT = nnx.initializers.normal(stddev=0.02)


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str, str],
    *,
    use_bias: bool,
    dtype: jnp.dtype,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
    kernel_init: nnx.Initializer = default_kernel_init,
) -> nnx.Linear:
    """A Linear layer whose kernel [in, out] carries ``axes`` and whose bias [out] carries axes[1]."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_metadata=sharding(*axes),
        bias_metadata=sharding(axes[1]),
        rngs=rngs,
    )


def conv(
    in_channels: int,
    out_channels: int,
    *,
    kernel: int = 3,
    stride: int = 1,
    dtype: jnp.dtype,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A 'SAME'-padded 2-D convolution over [..., H, W, C] with a bias."""
    return nnx.Conv(
        in_channels,
        out_channels,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_metadata=sharding("conv_h", "conv_w", "conv_in", "conv_out"),
        bias_metadata=sharding("conv_out"),
        rngs=rngs,
    )


def embed(
    num: int,
    features: int,
    axes: tuple[str, str],
    *,
    dtype: jnp.dtype,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
    init: nnx.Initializer = EMBED_INIT,
) -> nnx.Embed:
    """An embedding table [num, features] with axes ``axes``."""
    return nnx.Embed(
        num,
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        embedding_init=init,
        embedding_metadata=sharding(*axes),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """Root-mean-square norm over the last axis, statistics in float32, output in ``dtype``."""

    def __init__(self, features: int, *, dtype: jnp.dtype, param_dtype: jnp.dtype, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((features,), param_dtype), **sharding("norm"))
        self.dtype = dtype
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., features] → [..., features] in the compute dtype."""
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


def merge_patches(x: jax.Array) -> jax.Array:
    """[N, H, W, C] → [N, ⌈H/2⌉, ⌈W/2⌉, 4·C]: each 2×2 block of cells as one cell (space-to-depth).

    An odd last row or column is padded with zeros, so the output has the shape a 'SAME' stride-2
    convolution gives.
    """
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = x.shape[1] // 2, x.shape[2] // 2
    return x.reshape(n, h, 2, w, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, 4 * c)
