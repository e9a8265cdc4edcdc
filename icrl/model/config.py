"""The model's config: a size preset plus overrides, and the resolved dimensions the modules read.

A preset names the study's transformer size (layers / width / heads, PAPER.md) together with
encoder sizes chosen so that the whole model — encoders, token embeddings, transformer and action
head — lands near the preset's nominal parameter count in either domain (the ``presets`` test checks
±15%). Any field left ``None`` takes the preset's value; ``ModelConfig.dims()`` resolves them.

One model serves one domain: ``domain`` picks the observation encoder (tty for NetHack / MiniHack /
NLD, IMPALA ResNet for Procgen); everything after the encoder is shared code.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, field_validator, model_validator

from icrl.config import ConfigBase, validate
from icrl.errors import IcrlError

Domain = Literal["nethack", "procgen"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of one preset. Transformer: ``layers``/``d_model``/``heads``; the rest are encoders."""

    layers: int
    d_model: int
    heads: int
    char_dim: int  # tty character embedding width
    color_dim: int  # tty colour embedding width
    crop_channels: int  # conv channels over the crop around the cursor
    map_channels: int  # conv channels over the whole map
    tty_features: int  # features per tty branch (crop, map, message, status)
    tty_hidden: int  # hidden width of the MLP that fuses the four branches into d_model
    impala_channels: tuple[int, int, int]  # channels of the three IMPALA stacks
    rgb_hidden: int  # hidden width between the IMPALA features and d_model
    nominal: int  # the study's parameter count


PRESETS: dict[str, Preset] = {
    "1M": Preset(4, 128, 4, 8, 4, 8, 8, 24, 64, (8, 16, 16), 32, 1_000_000),
    "10M": Preset(6, 256, 8, 32, 16, 32, 32, 256, 1024, (32, 64, 64), 1024, 10_000_000),
    "30M": Preset(8, 512, 8, 32, 16, 32, 32, 256, 1024, (32, 64, 64), 768, 30_000_000),
    "100M": Preset(12, 768, 12, 32, 16, 64, 64, 512, 2048, (64, 128, 128), 1536, 100_000_000),
    "200M": Preset(12, 1024, 16, 64, 32, 64, 64, 1024, 4096, (64, 128, 128), 4096, 200_000_000),
    "310M": Preset(18, 1024, 16, 64, 32, 128, 128, 1024, 8192, (64, 128, 128), 8192, 310_000_000),
}


def _check_preset_name(name: str) -> str:
    if name not in PRESETS:
        raise IcrlError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return name


class ModelConfig(ConfigBase):
    """Everything that shapes the model. ``None`` size fields take the preset's value."""

    preset: str = Field("1M", description="size preset: 1M, 10M, 30M, 100M, 200M or 310M")
    domain: Domain = Field("nethack", description="observation encoder: tty (nethack) or IMPALA RGB (procgen)")
    num_layers: int | None = Field(None, ge=1, description="transformer blocks (None: the preset's)")
    d_model: int | None = Field(None, ge=8, description="residual stream width (None: the preset's)")
    num_heads: int | None = Field(None, ge=1, description="attention heads (None: the preset's)")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width as a multiple of d_model")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout on embeddings and residual branches (study: 0.2)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="compute dtype: auto = bfloat16 on GPU and TPU, float32 on CPU (``compute_dtype``); "
        "bfloat16 is mixed precision (parameters, gradients, optimizer state and loss stay float32)")
    param_dtype: Literal["float32", "bfloat16"] = Field("float32", description="parameter dtype (float32 master weights)")
    positions: Literal["rope", "learned"] = Field("rope", description="token positions: rotary (RoPE) or a learned table")
    rope_base: float = Field(10_000.0, gt=1.0, description="RoPE wavelength base")
    max_tokens: int = Field(
        2048, ge=2, description="longest training sequence in tokens; with learned positions, the table's rows")
    max_timestep: int = Field(1024, ge=1, description="rows of the timestep-in-episode table; later steps share the last row")
    reward_tokens: bool = Field(False, description="add a reward token after each action token (3 tokens per step)")
    recall: Literal["none", "cell", "screen", "nearest"] = Field(
        "none", description="embed each step's recalled action (icrl.data.recall: what an earlier episode of the "
        "context did at the same cursor cell, on the same screen, or at the nearest frame) into its observation token; "
        "must agree with data.recall")
    action_sees_obs: bool = Field(
        False, description="action tokens also carry a learned projection of their step's observation encoding"
    )
    crop_size: int = Field(12, ge=2, description="side of the tty crop around the cursor")
    tty_view: Literal["full", "crop"] = Field(
        "full", description="tty encoder branches: full = crop, whole map, message and status rows; crop = only the "
        "crop around the cursor, so a step at a given place encodes alike whatever else the screen shows")
    map_downsample: Literal["conv", "patch"] = Field(
        "conv", description="how the tty map branch halves the map three times (21×80 → 3×10): conv = 3×3 stride-2 "
        "convolutions; patch = each 2×2 block of cells merged into one by a dense layer (space-to-depth, matmuls "
        "only: the map branch's forward + backward about 3.5× faster on CPU, where small-channel convolutions are slow)")
    rgb_downsample: Literal["conv", "patch"] = Field(
        "conv", description="how the RGB encoder takes a 64×64 frame down: conv = IMPALA stacks (conv 3×3, max-pool, two "
        "residual blocks, 64 → 8 per side); patch = 4×4-pixel patches, then 2×2 merges, each a dense layer over the "
        "pixels or cells it merges (16 → 8 → 4 per side: matmuls only, for CPUs, where the IMPALA convolutions are slow)")
    cursor_position: bool = Field(
        False, description="tty encoder: add a fixed code (random Fourier features) of the cursor's absolute cell, so a "
        "step can be matched by where the agent is, which the centred crop and the coarse map do not tell")
    char_dim: int | None = Field(None, ge=1, description="tty character embedding width (None: the preset's)")
    color_dim: int | None = Field(None, ge=1, description="tty colour embedding width (None: the preset's)")
    crop_channels: int | None = Field(None, ge=1, description="conv channels over the crop (None: the preset's)")
    map_channels: int | None = Field(None, ge=1, description="conv channels over the whole map (None: the preset's)")
    tty_features: int | None = Field(None, ge=1, description="features per tty branch (None: the preset's)")
    tty_hidden: int | None = Field(None, ge=1, description="hidden width fusing tty branches (None: the preset's)")
    impala_channels: tuple[int, int, int] | None = Field(
        None, description="channels of the RGB encoder's three stages, IMPALA stacks or patch merges (None: the preset's)")
    rgb_hidden: int | None = Field(None, ge=1, description="hidden width after the RGB encoder's stages (None: the preset's)")
    attention: Literal["auto", "blocks", "xla", "cudnn"] = Field(
        "auto", description="attention kernel: auto = cuDNN flash attention where it compiles (GPU, 16-bit compute), "
        "else blocks; blocks = XLA ops in blocks of 128 queries, each reading only the keys up to its end "
        "(icrl.model.attention.causal_attention); xla = jax.nn.dot_product_attention's XLA version (about 2x the "
        "time on CPU: benchmarks/attention_blocks.py); cudnn = cuDNN or an error")
    scan_unroll: int = Field(
        1, ge=1, description="layers per iteration of the scan over blocks: 1 keeps compile time flat in depth; "
        "num_layers unrolls fully (the speed of a Python loop on CPU, whose scan costs ~1.5x the blocks' time at "
        "the 1M preset, and the compile time of one)")
    remat: bool = Field(
        False, description="recompute each block's activations in the backward pass: memory of one block's "
        "activations plus the residual stream per layer, for about one more forward pass of compute")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        d, h = self.dims().d_model, self.dims().num_heads
        if d % h:
            raise ValueError(f"d_model {d} is not divisible by num_heads {h}")
        if self.positions == "rope" and (d // h) % 2:
            raise ValueError(f"RoPE needs an even head size, got d_model/num_heads = {d // h}")
        return self

    @property
    def compute_dtype(self) -> str:
        """``dtype`` resolved: "auto" is "bfloat16" when jax's default backend is a GPU or TPU, else
        "float32" (CPUs have no fast bf16 matmuls, and tests compare against float32)."""
        if self.dtype != "auto":
            return self.dtype
        import jax

        return "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"

    @property
    def tokens_per_step(self) -> int:
        """Observation + action (+ reward) tokens per environment step."""
        return 3 if self.reward_tokens else 2

    def dims(self) -> ModelDims:
        """The resolved sizes: each ``None`` field replaced by the preset's value."""
        p = PRESETS[self.preset]

        def pick(value, default):
            return default if value is None else value

        d_model = pick(self.d_model, p.d_model)
        num_heads = pick(self.num_heads, p.heads)
        return ModelDims(
            num_layers=pick(self.num_layers, p.layers),
            d_model=d_model,
            num_heads=num_heads,
            head_dim=d_model // num_heads,
            mlp_dim=self.mlp_ratio * d_model,
            char_dim=pick(self.char_dim, p.char_dim),
            color_dim=pick(self.color_dim, p.color_dim),
            crop_channels=pick(self.crop_channels, p.crop_channels),
            map_channels=pick(self.map_channels, p.map_channels),
            tty_features=pick(self.tty_features, p.tty_features),
            tty_hidden=pick(self.tty_hidden, p.tty_hidden),
            impala_channels=tuple(pick(self.impala_channels, p.impala_channels)),
            rgb_hidden=pick(self.rgb_hidden, p.rgb_hidden),
        )


@dataclasses.dataclass(frozen=True)
class ModelDims:
    """Resolved sizes (see ``ModelConfig.dims``)."""

    num_layers: int
    d_model: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    char_dim: int
    color_dim: int
    crop_channels: int
    map_channels: int
    tty_features: int
    tty_hidden: int
    impala_channels: tuple[int, ...]
    rgb_hidden: int


def preset(name: str, **overrides: object) -> ModelConfig:
    """The ModelConfig of preset ``name`` (``1M`` ... ``310M``) with field ``overrides``.

    Raises IcrlError (a ConfigError) naming an unknown preset or a bad override.
    """
    _check_preset_name(name)
    return validate(ModelConfig, {"preset": name, **overrides}, source=f"model preset {name}")
