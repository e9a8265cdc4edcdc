"""The tty observation encoder (NetHack, MiniHack, NLD): one screen → one d_model vector.

The 24×80 terminal is read in four parts, each by its own branch, then fused by an MLP:

- crop: ``crop_size``×``crop_size`` cells of the map centred on the cursor (the agent), through
  two 3×3 convolutions — the fine local view that navigation depends on;
- map: rows 1-21, halved three times (21×80 → 3×10) — a coarse global view — by 3×3 stride-2
  convolutions or (``map_downsample: patch``) by merging each 2×2 block of cells into one with a
  dense layer, which is all matmuls: on CPU, where convolutions of 8-12 channels run far below the
  matmul rate, the branch's forward + backward takes about a quarter of the convolutions' time;
- message: row 0, character embeddings flattened — what the game just said;
- status: rows 22-23, character embeddings flattened — the bottom-line stats;
With ``tty_view: crop`` only the crop branch is built and fused: the encoding of a step then
depends on the agent's surroundings alone, not on how much of the map was explored, what the
message says or the status line, so the same place in a demo and in a rollout encodes alike.

- cursor (``cursor_position``, off by default): a fixed code of the cursor's absolute cell (random
  Fourier features, ``cell_code``), added to the output. The crop is centred on the agent and the map branch is coarse, so
  without it steps in look-alike corridors of a dark maze encode alike. The code has no parameters:
  a learned table per cell was tried first and hurt held-out tasks, whose cells training rarely
  visits (held-out demo loss 0.93 vs 0.65 at step 400 of the quickstart), while the dot product of
  two fixed codes depends only on the cells' offset, the same on every map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.model.config import ModelConfig
from icrl.model.layers import conv, dense, embed, merge_patches

ROWS, COLS = 24, 80
MAP_ROWS = (1, 22)  # rows [1, 22) of the tty are the map; 0 is the message, 22-23 the status
MAP_CONVS = 3  # halvings of the map: 21×80 → 11×40 → 6×20 → 3×10


def _ceil_halvings(n: int, times: int) -> int:
    for _ in range(times):
        n = -(-n // 2)
    return n


def crop_around(grid: jax.Array, rows: jax.Array, cols: jax.Array, size: int) -> jax.Array:
    """Square crops of ``grid`` [N, H, W] centred on (rows, cols) [N] → [N, size, size].

    Cells outside the grid read as 0 (a value no tty cell holds after NLE's rendering: blank cells
    are spaces, 32), so the encoder can tell the edge of the world from empty floor.
    """
    lo = size // 2
    padded = jnp.pad(grid, ((0, 0), (lo, size - lo), (lo, size - lo)))
    # In the padded grid, the crop that starts at (row, col) has the original (row, col) at its
    # (lo, lo) cell: exactly the crop centred on the cursor.
    return jax.vmap(lambda g, r, c: jax.lax.dynamic_slice(g, (r, c), (size, size)))(padded, rows, cols)


CELL_CODE_SCALE = 1.55  # frequency scale (per cell) of the cell code: a neighbour scores about 0.3
# RMS of the cell code added to the encoding: about the encoder output's own at initialisation
# (0.29 on quickstart demos), so the code neither drowns the screen nor drowns in it.
CELL_CODE_RMS = 0.3


def cell_code(rows: jax.Array, cols: jax.Array, width: int) -> jax.Array:
    """Fixed code of tty cells (rows, cols) [N] → [N, width]: random Fourier features of the cell.

    ``sqrt(2)·cos(w·p + b)`` with fixed random 2-D frequencies w ~ N(0, 1.55²) and phases b, so
    ``code(p)·code(q) / width ≈ exp(−1.2·|p − q|²)``: about 1 at the same cell, 0.3 next to it, near
    0 farther away, on every map alike. A matching head can then pick out the demo's step at the
    agent's own cell. Unit RMS per feature; the same constants in every run (key 0).
    """
    kw, kb = jax.random.split(jax.random.key(0))
    w = CELL_CODE_SCALE * jax.random.normal(kw, (2, width))
    b = jax.random.uniform(kb, (width,), maxval=2 * jnp.pi)
    p = jnp.stack([rows, cols], -1).astype(jnp.float32)
    return jnp.sqrt(2.0) * jnp.cos(p @ w + b)


class TtyEncoder(nnx.Module):
    """tty observation → [..., d_model].

    Inputs (any leading batch axes ``...``): ``tty_chars`` [..., 24, 80] uint8, ``tty_colors``
    [..., 24, 80] uint8, ``tty_cursor`` [..., 2] (row, col) integer, in tty coordinates.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        dt, pdt = jnp.dtype(config.compute_dtype), jnp.dtype(config.param_dtype)
        kw = dict(dtype=dt, param_dtype=pdt, rngs=rngs)
        cd, kd = dims.char_dim, dims.color_dim
        cc, cm, f = dims.crop_channels, dims.map_channels, dims.tty_features
        self.crop_size = config.crop_size
        self.dtype = dt
        self.chars = embed(256, cd, ("char_vocab", "char_embed"), init=nnx.initializers.normal(1.0), **kw)
        self.colors = embed(256, kd, ("char_vocab", "char_embed"), init=nnx.initializers.normal(1.0), **kw)
        self.crop_convs = nnx.List([conv(cd + kd, cc, **kw), conv(cc, cc, **kw)])
        self.crop_out = dense(config.crop_size**2 * cc, f, ("enc_in", "enc_hidden"), use_bias=True, **kw)
        self.full_view = config.tty_view == "full"
        if self.full_view:
            self.map_patches = config.map_downsample == "patch"
            if self.map_patches:
                self.map_merges = nnx.List(
                    [dense(4 * (cd + kd if i == 0 else cm), cm, ("conv_in", "conv_out"), use_bias=True, **kw)
                     for i in range(MAP_CONVS)])
            else:
                self.map_convs = nnx.List(
                    [conv(cd + kd if i == 0 else cm, cm, stride=2, **kw) for i in range(MAP_CONVS)])
            map_cells = _ceil_halvings(MAP_ROWS[1] - MAP_ROWS[0], MAP_CONVS) * _ceil_halvings(COLS, MAP_CONVS)
            self.map_out = dense(map_cells * cm, f, ("enc_in", "enc_hidden"), use_bias=True, **kw)
            self.message_out = dense(COLS * cd, f, ("enc_in", "enc_hidden"), use_bias=True, **kw)
            self.status_out = dense(2 * COLS * cd, f, ("enc_in", "enc_hidden"), use_bias=True, **kw)
        self.cursor_position = config.cursor_position
        branches = 4 if self.full_view else 1
        self.fuse_hidden = dense(branches * f, dims.tty_hidden, ("enc_in", "enc_hidden"), use_bias=True, **kw)
        self.fuse_out = dense(dims.tty_hidden, dims.d_model, ("enc_hidden", "embed"), use_bias=True, **kw)

    def _cells(self, chars: jax.Array, colors: jax.Array) -> jax.Array:
        """[N, h, w] uint8 chars and colours → [N, h, w, char_dim + color_dim]."""
        return jnp.concatenate([self.chars(chars.astype(jnp.int32)), self.colors(colors.astype(jnp.int32))], -1)

    def __call__(self, obs: dict[str, jax.Array]) -> jax.Array:
        chars, colors, cursor = obs["tty_chars"], obs["tty_colors"], obs["tty_cursor"]
        lead = chars.shape[:-2]
        chars = chars.reshape(-1, ROWS, COLS)
        colors = colors.reshape(-1, ROWS, COLS)
        cursor = cursor.reshape(-1, 2).astype(jnp.int32)
        n = chars.shape[0]
        map_chars, map_colors = chars[:, MAP_ROWS[0] : MAP_ROWS[1]], colors[:, MAP_ROWS[0] : MAP_ROWS[1]]

        # Crop: the cursor sits on the map except on message prompts; clamping keeps the crop on it.
        rows = jnp.clip(cursor[:, 0] - MAP_ROWS[0], 0, MAP_ROWS[1] - MAP_ROWS[0] - 1)
        cols = jnp.clip(cursor[:, 1], 0, COLS - 1)
        k = self.crop_size
        x = self._cells(crop_around(map_chars, rows, cols, k), crop_around(map_colors, rows, cols, k))
        for c in self.crop_convs:
            x = nnx.gelu(c(x))
        crop = nnx.gelu(self.crop_out(x.reshape(n, -1)))
        if self.full_view:
            features = jnp.concatenate([crop, *self._screen_branches(chars, map_chars, map_colors)], -1)
        else:
            features = crop

        h = nnx.gelu(self.fuse_hidden(features))
        out = self.fuse_out(h)
        if self.cursor_position:
            out = out + CELL_CODE_RMS * cell_code(cursor[:, 0], cursor[:, 1], out.shape[-1]).astype(out.dtype)
        return out.reshape(*lead, -1)

    def _screen_branches(self, chars: jax.Array, map_chars: jax.Array, map_colors: jax.Array) -> list[jax.Array]:
        """The whole map, the message row and the status rows → three [N, tty_features] branches."""
        n = chars.shape[0]
        x = self._cells(map_chars, map_colors)
        if self.map_patches:
            for merge in self.map_merges:
                x = nnx.gelu(merge(merge_patches(x)))
        else:
            for c in self.map_convs:
                x = nnx.gelu(c(x))
        whole_map = nnx.gelu(self.map_out(x.reshape(n, -1)))

        message = nnx.gelu(self.message_out(self.chars(chars[:, 0].astype(jnp.int32)).reshape(n, -1)))
        status = nnx.gelu(self.status_out(self.chars(chars[:, MAP_ROWS[1] :].astype(jnp.int32)).reshape(n, -1)))
        return [whole_map, message, status]
