"""ICRLModel: observation encoder + token embeddings + causal transformer + masked action head.

Batch format (one row = one packed bursty sequence of T environment steps → T·S tokens, S = 2, or
3 with reward tokens)::

    batch = {
        "obs": {                                   # the model's domain decides the keys
            "tty_chars":  [B, T, 24, 80] uint8,    #   nethack
            "tty_colors": [B, T, 24, 80] uint8,
            "tty_cursor": [B, T, 2] integer (row, col),
            # or "rgb":   [B, T, 64, 64, 3] uint8  #   procgen
        },
        "actions":       [B, T] int32   unified vocabulary (PAD_ACTION on padding steps)
        "rewards":       [B, T] float32 reward after the action at t (read only with reward tokens)
        "episode_start": [B, T] bool    True on the first step of each episode
        "timestep":      [B, T] int32   step index within its episode
        "legal_mask":    [B, VOCAB_SIZE] bool, optional: the task's legal actions (all if absent);
                         [B, T, VOCAB_SIZE] in packed rows (each step its segment's task)
        "segment":       [B, T] int32, optional (packed rows, icrl.data.packing): the step's
                         sequence in the row; attention never crosses segments
        "segment_step":  [B, T] int32, optional: the step's index within its segment, so token
                         positions start at 0 in every segment
        "recall":        [B, T] int32, with model.recall: the recalled action of each step
                         (icrl.data.recall; NO_RECALL where none)
    }

Token order per step t: o_t, a_t (, r_t). The action logits of step t are read at o_t, so they see
every token before o_t and never a_t. Output: logits [B, T, VOCAB_SIZE] float32 with illegal
actions at ``MASKED_LOGIT`` (probability exactly 0 after softmax).

Cached decoding (rollouts): ``prefill`` a context of whole steps once → KVCache; then per
environment step ``observe`` (obs token → logits for that step) and ``append_action`` (action, and reward,
tokens → cache). ``icrl.model.decoding`` wraps these as jitted pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.envs.actions import VOCAB_SIZE
from icrl.model.cache import KVCache, empty_cache
from icrl.model.config import ModelConfig
from icrl.model.layers import dense
from icrl.model.rgb_encoder import RgbEncoder
from icrl.model.tokens import TokenEmbedder
from icrl.model.transformer import Transformer
from icrl.model.tty_encoder import TtyEncoder

# Large and finite (not -inf): exp underflows to exactly 0, yet a cross-entropy on a masked target
# stays finite, so a stray illegal label shows up as a huge loss rather than NaN everywhere.
MASKED_LOGIT = -1e9

Batch = Mapping[str, Any]


def mask_logits(logits: jax.Array, legal_mask: jax.Array | None) -> jax.Array:
    """logits [B, ..., V] float32, legal_mask [B, V] bool, or one mask per step of the same shape as
    logits (packed rows), or None → illegal entries set to MASKED_LOGIT."""
    if legal_mask is None:
        return logits
    if legal_mask.ndim != logits.ndim:
        legal_mask = legal_mask.reshape(legal_mask.shape[0], *([1] * (logits.ndim - 2)), legal_mask.shape[-1])
    return jnp.where(legal_mask, logits, MASKED_LOGIT)


def segment_mask(segment: jax.Array, tokens_per_step: int) -> jax.Array:
    """segment [B, T] int (the step's sequence in a packed row) → attention mask [B, 1, T·S, T·S]
    bool: token q may attend to token k only within one segment (causality is added by attention)."""
    seg = jnp.repeat(segment, tokens_per_step, axis=1)
    return (seg[:, :, None] == seg[:, None, :])[:, None]


class ICRLModel(nnx.Module):
    """The in-context imitation model of one domain (``config.domain``)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dims = config.dims()
        # Stored as JSON text: module attributes that are not arrays become part of the static graph
        # definition, which must be hashable (a pydantic model is not).
        self.config_json = config.model_dump_json()
        self.tokens_per_step = config.tokens_per_step
        self.reward_tokens = config.reward_tokens
        self.max_tokens = config.max_tokens
        self.learned_positions = config.positions == "learned"
        self.dims = dims
        self.cache_dtype = jnp.dtype(config.compute_dtype)
        encoder_cls = TtyEncoder if config.domain == "nethack" else RgbEncoder
        self.encoder = encoder_cls(config, rngs=rngs)
        self.tokens = TokenEmbedder(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.transformer = Transformer(config, rngs=rngs)
        self.head = dense(
            dims.d_model,
            VOCAB_SIZE,
            ("embed", "vocab"),
            use_bias=False,
            dtype=jnp.dtype(config.compute_dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            rngs=rngs,
        )

    @property
    def config(self) -> ModelConfig:
        """The ModelConfig this model was built from."""
        return ModelConfig.model_validate_json(self.config_json)

    # -- whole sequences (training, prefill) ------------------------------------------------------

    def _embed_steps(self, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Batch of T steps → (token embeddings [B, T·S, d], positions [B, T·S], encoded obs [B, T, d]).

        Positions count tokens from the row's start, or from each segment's start in packed rows.
        """
        timestep = batch["timestep"]
        encoded = self.encoder(batch["obs"])
        streams = [
            self.tokens.observation(encoded, batch["episode_start"], timestep, batch.get("recall")),
            self.tokens.action(batch["actions"], timestep, encoded),
        ]
        if self.reward_tokens:
            streams.append(self.tokens.reward(batch["rewards"], timestep))
        x = self.tokens.interleave(*streams)
        b, n = x.shape[:2]
        if self.learned_positions and n > self.max_tokens:
            # RoPE has no table to run off; evaluation contexts may be longer than training rows.
            raise ValueError(f"{n} tokens exceed max_tokens={self.max_tokens}, the rows of the learned position table")
        s = self.tokens_per_step
        if "segment_step" in batch:
            step = batch["segment_step"].astype(jnp.int32)
            positions = (step[:, :, None] * s + jnp.arange(s, dtype=jnp.int32)).reshape(b, n)
        else:
            positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        return self.tokens.add_positions(x, positions), positions, encoded

    def _step_logits(self, h: jax.Array, legal_mask: jax.Array | None) -> jax.Array:
        """Final hidden states at observation tokens [B, ..., d] → masked logits [B, ..., V] float32."""
        return mask_logits(self.head(h).astype(jnp.float32), legal_mask)

    def _forward(self, batch: Batch, deterministic: bool | None, return_kv: bool = False):
        """→ (logits [B, T, V], per-layer (keys, values) when return_kv, encoded obs [B, T, d])."""
        x, positions, encoded = self._embed_steps(batch)
        x = self.dropout(x, deterministic=deterministic)
        mask = segment_mask(batch["segment"], self.tokens_per_step) if "segment" in batch else None
        h, kv = self.transformer(x, positions, deterministic, return_kv, mask)
        b, n, d = h.shape
        s = self.tokens_per_step
        logits = self._step_logits(h.reshape(b, n // s, s, d)[:, :, 0], batch.get("legal_mask"))
        return logits, kv, encoded

    def __call__(self, batch: Batch, *, deterministic: bool | None = None) -> jax.Array:
        """Batch (see module docstring) → action logits [B, T, VOCAB_SIZE] float32, masked.

        ``deterministic=None`` follows the module's train/eval mode (``model.train()`` /
        ``model.eval()``); True disables dropout for this call.
        """
        return self._forward(batch, deterministic)[0]

    # -- cached decoding --------------------------------------------------------------------------

    def init_cache(self, batch_size: int, capacity: int) -> KVCache:
        """An empty cache for ``batch_size`` rows of up to ``capacity`` tokens."""
        dims = self.dims
        if self.learned_positions and capacity > self.max_tokens:
            raise ValueError(f"capacity {capacity} exceeds max_tokens={self.max_tokens} (learned positions)")
        return empty_cache(
            dims.num_layers, batch_size, capacity, dims.num_heads, dims.head_dim, dims.d_model, self.cache_dtype
        )

    def prefill(self, batch: Batch, capacity: int, lengths: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
        """Run a context of T whole steps once and keep its keys and values.

        batch: as for ``__call__`` (T steps each row); ``lengths`` [B] int32 (optional): valid steps
        per row when rows are padded at the end to a common T (padding steps are then forgotten).
        Returns (logits [B, T, V] of the context steps, cache with length = lengths·S tokens).
        Dropout is off.
        """
        logits, kv, encoded = self._forward(batch, deterministic=True, return_kv=True)
        b, t = batch["actions"].shape
        n = t * self.tokens_per_step
        if n > capacity:
            raise ValueError(f"context of {n} tokens does not fit a cache of capacity {capacity}")
        cache = self.init_cache(b, capacity)
        keys = tuple(c.at[:, :n].set(k.astype(c.dtype)) for c, (k, _) in zip(cache.keys, kv, strict=True))
        values = tuple(c.at[:, :n].set(v.astype(c.dtype)) for c, (_, v) in zip(cache.values, kv, strict=True))
        steps = jnp.full((b,), t, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
        last_step = jnp.clip(steps - 1, 0, t - 1)[:, None]
        last = jnp.take_along_axis(batch["timestep"], last_step, axis=1)[:, 0]
        last_obs = jnp.take_along_axis(encoded, last_step[:, :, None], axis=1)[:, 0]
        cache = cache.replace(
            keys=keys, values=values, length=steps * self.tokens_per_step, timestep=last.astype(jnp.int32),
            obs=last_obs.astype(cache.obs.dtype),
        )
        return logits, cache

    def _decode(self, cache: KVCache, x: jax.Array) -> tuple[jax.Array, KVCache]:
        """One token embedding per row x [B, d] → (final hidden state [B, d], cache one longer)."""
        x = self.tokens.add_positions(x[:, None], cache.length[:, None])
        h, cache = self.transformer.decode(x, cache)
        return h[:, 0], cache

    def observe(
        self,
        cache: KVCache,
        obs: Mapping[str, jax.Array],
        episode_start: jax.Array,
        timestep: jax.Array,
        legal_mask: jax.Array | None = None,
        recall: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache]:
        """Append each row's observation token; return the action logits of this step.

        obs: one step per row (``tty_*`` [B, 24, 80] / [B, 2], or ``rgb`` [B, 64, 64, 3]);
        episode_start [B] bool; timestep [B] int32; legal_mask [B, V] bool or None; recall [B]
        int32 (the recalled actions; with model.recall only).
        Returns (logits [B, VOCAB_SIZE] float32, masked; cache).
        """
        encoded = self.encoder({k: v[:, None] for k, v in obs.items()})[:, 0]
        x = self.tokens.observation(encoded[:, None], episode_start[:, None], timestep[:, None],
                                    None if recall is None else recall[:, None])[:, 0]
        h, cache = self._decode(cache, x)
        cache = cache.replace(timestep=timestep.astype(jnp.int32), obs=encoded.astype(cache.obs.dtype))
        return self._step_logits(h, legal_mask), cache

    def append_action(self, cache: KVCache, actions: jax.Array, rewards: jax.Array | None = None) -> KVCache:
        """Append each row's action token (and reward token, when the model has them).

        actions [B] int32 taken after the latest ``observe``; rewards [B] float32 received for them
        (required with reward tokens, ignored otherwise).
        """
        t = cache.timestep[:, None]
        _, cache = self._decode(cache, self.tokens.action(actions[:, None], t, cache.obs[:, None])[:, 0])
        if self.reward_tokens:
            if rewards is None:
                raise ValueError("this model has reward tokens: append_action() needs rewards")
            _, cache = self._decode(cache, self.tokens.reward(rewards[:, None], t)[:, 0])
        return cache
