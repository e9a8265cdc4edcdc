"""Token embeddings: observation, action and reward tokens, interleaved into one sequence.

Per environment step t the sequence holds o_t, a_t (and r_t when reward tokens are on), so step t's
tokens sit at positions t·S … t·S + S − 1 with S = 2 or 3. Every token gets

    content + token-type embedding + timestep-in-episode embedding (+ learned position, if chosen)

where content is the encoder output (observation), an action embedding, or a linear map of the
symlog reward; the observation token of an episode's first step also gets the learned
episode-start marker.

With ``action_sees_obs`` the action token a_t also carries a learned projection of o_t's encoding.
Copying a demo can then be one attention hop: the query at o_t matches the key of the context's
a_t' whose screen equals o_t and reads the action from its value, where otherwise the model must
first learn a previous-token head that moves o_t' into a_t' (a two-layer induction circuit). The
projection starts at zero, so training starts from the plain model: adding the raw encoding
swamped the action identity and slowed early training (loss 1.48 vs 0.95 at step 160 of the
quickstart). It adds no information (a_t already attends to o_t): nothing leaks into o_t's logits.
Off by default: in the quickstart (300 steps of the 1M preset) it made no clear difference to how
much same-level demos lower the held-out action loss.

With ``recall`` (``icrl.data.recall``) the observation token o_t also gets an embedding of the
step's recalled action (a table of V + 1 rows, the last for "no match"): the action an earlier
episode of the context took at the same cell or screen, looked up outside the network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icrl.data.recall import RECALL_VOCAB
from icrl.envs.actions import VOCAB_SIZE
from icrl.model.axes import sharding
from icrl.model.config import ModelConfig
from icrl.model.layers import EMBED_INIT, dense, embed

OBS, ACTION, REWARD = 0, 1, 2  # token types, also the offset of each token inside its step


def symlog(x: jax.Array) -> jax.Array:
    """sign(x)·log(1+|x|): keeps rewards of any scale (Procgen's 10s, MiniHack's ±1) in range."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


class TokenEmbedder(nnx.Module):
    """Embeds the non-observation parts of the tokens and adds the shared per-token terms."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.dims().d_model
        kw = dict(dtype=jnp.dtype(config.compute_dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.dtype = jnp.dtype(config.compute_dtype)
        self.tokens_per_step = config.tokens_per_step
        self.max_timestep = config.max_timestep
        self.actions = embed(VOCAB_SIZE, d, ("vocab", "embed"), **kw)
        self.types = embed(config.tokens_per_step, d, ("token_type", "embed"), **kw)
        self.timesteps = embed(config.max_timestep, d, ("timestep", "embed"), **kw)
        self.episode_start = nnx.Param(EMBED_INIT(rngs.params(), (d,), jnp.dtype(config.param_dtype)), **sharding("embed"))
        self.rewards = dense(1, d, ("reward_in", "embed"), use_bias=True, **kw) if config.reward_tokens else None
        self.action_obs = (
            dense(d, d, ("enc_hidden", "embed"), use_bias=False, kernel_init=nnx.initializers.zeros, **kw)
            if config.action_sees_obs
            else None
        )
        self.positions = embed(config.max_tokens, d, ("positions", "embed"), **kw) if config.positions == "learned" else None
        self.recall = embed(RECALL_VOCAB, d, ("vocab", "embed"), **kw) if config.recall != "none" else None

    def _common(self, kind: int, timestep: jax.Array) -> jax.Array:
        """Token-type + timestep embedding, timestep [...] int → [..., d]."""
        t = jnp.clip(timestep.astype(jnp.int32), 0, self.max_timestep - 1)
        return self.types(jnp.full(t.shape, kind, jnp.int32)) + self.timesteps(t)

    def observation(self, encoded: jax.Array, episode_start: jax.Array, timestep: jax.Array,
                    recall: jax.Array | None = None) -> jax.Array:
        """encoded [B, T, d], episode_start [B, T] bool, timestep [B, T], recall [B, T] int (the
        recalled actions; required when the model has recall) → [B, T, d]."""
        marker = jnp.where(episode_start[..., None], self.episode_start[...].astype(self.dtype), 0)
        x = encoded.astype(self.dtype) + marker + self._common(OBS, timestep)
        if self.recall is None:
            return x
        if recall is None:
            raise ValueError("this model has recall (model.recall): its batches need 'recall' [B, T]")
        return x + self.recall(recall.astype(jnp.int32))

    def action(self, actions: jax.Array, timestep: jax.Array, encoded: jax.Array) -> jax.Array:
        """actions [B, T] int (unified vocabulary), timestep [B, T], encoded [B, T, d] (the
        step's encoded observation, projected and added when ``action_sees_obs``) → [B, T, d]."""
        x = self.actions(actions.astype(jnp.int32)) + self._common(ACTION, timestep)
        return x if self.action_obs is None else x + self.action_obs(encoded.astype(self.dtype))

    def reward(self, rewards: jax.Array, timestep: jax.Array) -> jax.Array:
        """rewards [B, T] float, timestep [B, T] → [B, T, d] (reward tokens must be enabled)."""
        r = symlog(rewards.astype(jnp.float32))[..., None].astype(self.dtype)
        return self.rewards(r) + self._common(REWARD, timestep)

    def add_positions(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """x [B, L, d] + learned position embedding at positions [B, L]; identity under RoPE."""
        if self.positions is None:
            return x
        return x + self.positions(positions)

    def interleave(self, *streams: jax.Array) -> jax.Array:
        """S streams [B, T, d] (observation, action, reward) → [B, T·S, d], step-major."""
        x = jnp.stack(streams, axis=2)
        b, t, s, d = x.shape
        return x.reshape(b, t * s, d)
