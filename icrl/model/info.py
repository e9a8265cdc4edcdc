"""Model size and cost: parameters per part and forward FLOPs per token (``icrl model info``).

FLOPs count a multiply-add as 2 and cover matrix multiplies, convolutions and attention (the
elementwise work is a few percent at these widths). Training costs about 3× the forward FLOPs
(forward + backward of activations and weights).
"""

from __future__ import annotations

import dataclasses
import math

import jax
from flax import nnx

from icrl.envs.actions import VOCAB_SIZE
from icrl.model.config import PRESETS, ModelConfig
from icrl.model.rgb_encoder import PATCH, SIDE
from icrl.model.tty_encoder import COLS, MAP_CONVS, MAP_ROWS

PARTS = ("encoder", "tokens", "transformer", "head")


def param_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters per part (encoder, tokens, transformer, head) and ``total``, without allocating."""
    from icrl.model.model import ICRLModel

    model = nnx.eval_shape(lambda: ICRLModel(config, rngs=nnx.Rngs(0)))
    counts = {}
    for part in PARTS:
        leaves = nnx.state(getattr(model, part), nnx.Param)
        counts[part] = sum(math.prod(x.shape) for x in jax.tree.leaves(leaves))
    counts["total"] = sum(counts.values())
    return counts


def _conv_flops(h: int, w: int, c_in: int, c_out: int, k: int = 3) -> int:
    return 2 * h * w * k * k * c_in * c_out


def encoder_flops(config: ModelConfig) -> int:
    """Forward FLOPs to encode one observation."""
    d = config.dims()
    if config.domain == "nethack":
        e, k = d.char_dim + d.color_dim, config.crop_size
        cc, cm, f = d.crop_channels, d.map_channels, d.tty_features
        flops = _conv_flops(k, k, e, cc) + _conv_flops(k, k, cc, cc) + 2 * k * k * cc * f
        if config.tty_view == "crop":
            return flops + 2 * f * d.tty_hidden + 2 * d.tty_hidden * d.d_model
        h, w, c_in = MAP_ROWS[1] - MAP_ROWS[0], COLS, e
        for _ in range(MAP_CONVS):
            h, w = -(-h // 2), -(-w // 2)
            flops += _conv_flops(h, w, c_in, cm, k=3 if config.map_downsample == "conv" else 2)
            c_in = cm
        flops += 2 * h * w * cm * f + 2 * 3 * COLS * d.char_dim * f
        return flops + 2 * 4 * f * d.tty_hidden + 2 * d.tty_hidden * d.d_model
    side, c_in, flops = SIDE, 3, 0
    if config.rgb_downsample == "patch":
        side, c_in = SIDE // PATCH, PATCH * PATCH * 3
        for i, c in enumerate(d.impala_channels):
            if i:
                side, c_in = -(-side // 2), 4 * c_in
            flops += 2 * side * side * c_in * c
            c_in = c
    else:
        for c in d.impala_channels:
            flops += _conv_flops(side, side, c_in, c)
            side = -(-side // 2)
            flops += 4 * _conv_flops(side, side, c, c)
            c_in = c
    return flops + 2 * side * side * c_in * d.rgb_hidden + 2 * d.rgb_hidden * d.d_model


def flops_per_token(config: ModelConfig, context: int | None = None) -> dict[str, float]:
    """Forward FLOPs per token, by part, for sequences of ``context`` tokens (default max_tokens).

    Encoder and head run once per step, so they are divided by the tokens per step; causal
    attention attends on average to (context + 1) / 2 keys.
    """
    d = config.dims()
    n = config.max_tokens if context is None else context
    s = config.tokens_per_step
    matmul = d.num_layers * 2 * (4 * d.d_model * d.d_model + 2 * d.d_model * d.mlp_dim)
    attention = d.num_layers * 4 * d.d_model * (n + 1) / 2
    out = {
        "encoder": encoder_flops(config) / s,
        "transformer": float(matmul),
        "attention": attention,
        "head": 2 * d.d_model * VOCAB_SIZE / s,
    }
    out["total"] = sum(out.values())
    return out


def train_flops_per_token(config: ModelConfig, context: int | None = None) -> float:
    """Training FLOPs per token: 3 × the forward total (forward, then the backward pass's
    gradients of activations and of weights), encoder and head included. These are the model
    FLOPs that MFU counts (``icrl.train.mfu``); rematerialisation's recomputation is not."""
    return 3 * flops_per_token(config, context)["total"]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What ``icrl model info`` prints."""

    config: ModelConfig
    params: dict[str, int]
    flops: dict[str, float]

    def lines(self) -> list[str]:
        d = self.config.dims()
        nominal = PRESETS[self.config.preset].nominal
        total = self.params["total"]
        out = [
            f"preset {self.config.preset} ({self.config.domain}): {d.num_layers} layers, d_model {d.d_model}, "
            f"{d.num_heads} heads, {self.config.tokens_per_step} tokens/step, positions {self.config.positions}",
            "parameters:",
        ]
        out += [f"  {part:<12}{self.params[part]:>14,}" for part in PARTS]
        out.append(f"  study nominal {nominal:,} (this model: {100 * (total / nominal - 1):+.1f}%)")
        out.append(f"forward FLOPs per token at context {self.config.max_tokens}:")
        out += [f"  {part:<12}{self.flops[part]:>14,.0f}" for part in ("encoder", "transformer", "attention", "head")]
        out.append(f"  {'total':<12}{self.flops['total']:>14,.0f}  (training ≈ 3×: {3 * self.flops['total']:,.0f})")
        out.append(f"total parameters: {total}")
        return out


def model_info(config: ModelConfig) -> ModelInfo:
    return ModelInfo(config, param_counts(config), flops_per_token(config))
