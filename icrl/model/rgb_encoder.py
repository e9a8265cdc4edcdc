"""The RGB observation encoder (Procgen): a 64×64 frame → one d_model vector.

Three stages of ``impala_channels`` take the frame down, then relu, flatten, and an MLP to d_model.
``rgb_downsample`` picks the stages:

- ``conv``: IMPALA (Espeholt et al. 2018), as used by Procgen's baselines: three stacks of
  conv 3×3 → max-pool 3×3 stride 2 → two residual blocks (relu, conv, relu, conv, + skip), which
  take 64×64 to 8×8.
- ``patch``: the frame cut into 4×4-pixel patches (16×16 of 48 values), then twice each 2×2 block
  of cells merged into one (``merge_patches``), each stage a dense layer and a GELU: 16×16 → 8×8 →
  4×4. Matmuls only, about 1/50 of IMPALA's FLOPs at the 1M preset's widths: on CPU the small-channel
  convolutions run at a few percent of the matmul peak.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.model.config import ModelConfig
from icrl.model.layers import conv, dense, merge_patches

SIDE = 64  # Procgen frames are 64×64×3
PATCH = 4  # pixels per side of the patch encoder's first cells


class ResidualBlock(nnx.Module):
    """x [N, H, W, C] → x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int, **kw):
        self.conv0 = conv(channels, channels, **kw)
        self.conv1 = conv(channels, channels, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.conv1(nnx.relu(self.conv0(nnx.relu(x))))


class ImpalaStack(nnx.Module):
    """[N, H, W, C_in] → [N, ceil(H/2), ceil(W/2), C_out]."""

    def __init__(self, in_channels: int, out_channels: int, **kw):
        self.conv = conv(in_channels, out_channels, **kw)
        self.blocks = nnx.List([ResidualBlock(out_channels, **kw) for _ in range(2)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(self.conv(x), window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for block in self.blocks:
            x = block(x)
        return x


def final_side(downsample: str, stages: int) -> int:
    """Cells per side after the encoder's stages: IMPALA halves 64 at each; the patch encoder
    starts at 64 / PATCH and halves at each stage after the first."""
    side = SIDE if downsample == "conv" else SIDE // PATCH * 2
    for _ in range(stages):
        side = -(-side // 2)
    return side


class RgbEncoder(nnx.Module):
    """``rgb`` [..., 64, 64, 3] uint8 → [..., d_model]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        kw = dict(dtype=jnp.dtype(config.compute_dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.dtype = jnp.dtype(config.compute_dtype)
        self.patches = config.rgb_downsample == "patch"
        if self.patches:
            widths = (PATCH * PATCH * 3, *(4 * c for c in dims.impala_channels[:-1]))
            self.merges = nnx.List([dense(w, c, ("conv_in", "conv_out"), use_bias=True, **kw)
                                    for w, c in zip(widths, dims.impala_channels)])
        else:
            channels = (3, *dims.impala_channels)
            self.stacks = nnx.List([ImpalaStack(channels[i], channels[i + 1], **kw) for i in range(len(channels) - 1)])
        side = final_side(config.rgb_downsample, len(dims.impala_channels))
        self.hidden = dense(side * side * dims.impala_channels[-1], dims.rgb_hidden, ("enc_in", "enc_hidden"),
                            use_bias=True, **kw)
        self.out = dense(dims.rgb_hidden, dims.d_model, ("enc_hidden", "embed"), use_bias=True, **kw)

    def __call__(self, obs: dict[str, jax.Array]) -> jax.Array:
        rgb = obs["rgb"]
        lead = rgb.shape[:-3]
        x = rgb.reshape(-1, SIDE, SIDE, 3).astype(self.dtype) / 255.0
        if self.patches:
            x = merge_patches(merge_patches(x))  # [N, 16, 16, 48]: 4×4-pixel patches
            for i, merge in enumerate(self.merges):
                x = nnx.gelu(merge(merge_patches(x) if i else x))
        else:
            for stack in self.stacks:
                x = stack(x)
        x = nnx.relu(x).reshape(x.shape[0], -1)
        return self.out(nnx.relu(self.hidden(x))).reshape(*lead, -1)
