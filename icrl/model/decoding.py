"""Jitted, pure cached-decoding functions for rollouts (the evaluator's interface to the model).

Typical use, for k demos of one level and n rollouts on it::

    decoder = Decoder(model)                       # split once; params travel as arguments
    _, prefix = decoder.prefill(demos, capacity)   # demos: a batch of 1 row (model.py format)
    cache = tile(prefix, n)                        # n rollouts share the demos' prefix
    logits, cache = decoder.observe(cache, obs, episode_start, timestep, legal_mask)
    while rolling out:
        actions = sample(logits)                   # illegal actions have probability 0
        obs, rewards, done, ... = envs.step(actions)
        # append_action, send finished rollouts back to the demos (optional), observe: one call per step.
        logits, cache = decoder.step(cache, actions, rewards, obs, episode_start, timestep,
                                     legal_mask, restart=done, restart_length=prefix.length[0])

``observe``, ``append_action`` and ``step`` donate the cache they are given (updated in place on accelerators):
use only the cache they return. The prefix cache from ``prefill`` stays valid because ``tile``
copies it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
from flax import nnx

from icrl.model.cache import KVCache, rewind
from icrl.model.model import Batch, ICRLModel


@functools.partial(jax.jit, static_argnames=("graphdef",))
def forward(graphdef: nnx.GraphDef, state: nnx.State, batch: Batch) -> jax.Array:
    """Full forward pass without dropout: batch → logits [B, T, V] (full recomputation)."""
    return nnx.merge(graphdef, state)(batch, deterministic=True)


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity"))
def prefill(
    graphdef: nnx.GraphDef, state: nnx.State, batch: Batch, capacity: int, lengths: jax.Array | None = None
) -> tuple[jax.Array, KVCache]:
    """``ICRLModel.prefill`` as a pure function: → (logits [B, T, V], cache)."""
    return nnx.merge(graphdef, state).prefill(batch, capacity, lengths)


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def observe(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cache: KVCache,
    obs: Mapping[str, jax.Array],
    episode_start: jax.Array,
    timestep: jax.Array,
    legal_mask: jax.Array | None = None,
) -> tuple[jax.Array, KVCache]:
    """``ICRLModel.observe`` as a pure function: → (logits [B, V], cache)."""
    return nnx.merge(graphdef, state).observe(cache, obs, episode_start, timestep, legal_mask)


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def append_action(
    graphdef: nnx.GraphDef, state: nnx.State, cache: KVCache, actions: jax.Array, rewards: jax.Array | None = None
) -> KVCache:
    """``ICRLModel.append_action`` as a pure function: → cache."""
    return nnx.merge(graphdef, state).append_action(cache, actions, rewards)


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cache: KVCache,
    actions: jax.Array,
    rewards: jax.Array | None,
    obs: Mapping[str, jax.Array],
    episode_start: jax.Array,
    timestep: jax.Array,
    legal_mask: jax.Array | None = None,
    restart: jax.Array | None = None,
    restart_length: jax.Array | int = 0,
) -> tuple[jax.Array, KVCache]:
    """One environment step of a rollout in one call: ``append_action`` (the previous step's actions and
    rewards), then ``rewind`` the rows where ``restart`` [B] bool is True to ``restart_length``,
    then ``observe`` the new observation. → (logits [B, V], cache)."""
    model = nnx.merge(graphdef, state)
    cache = model.append_action(cache, actions, rewards)
    if restart is not None:
        cache = rewind(cache, restart, restart_length)
    return model.observe(cache, obs, episode_start, timestep, legal_mask)


class Decoder:
    """Holds one model's graph definition and state and calls the jitted functions above.

    ``state`` may be replaced (e.g. after fine-tuning) without recompiling, as long as shapes and
    dtypes are unchanged.
    """

    def __init__(self, model: ICRLModel):
        self.graphdef, self.state = nnx.split(model)

    def forward(self, batch: Batch) -> jax.Array:
        return forward(self.graphdef, self.state, batch)

    def prefill(self, batch: Batch, capacity: int, lengths: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
        return prefill(self.graphdef, self.state, batch, capacity, lengths)

    def observe(
        self,
        cache: KVCache,
        obs: Mapping[str, jax.Array],
        episode_start: jax.Array,
        timestep: jax.Array,
        legal_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache]:
        return observe(self.graphdef, self.state, cache, obs, episode_start, timestep, legal_mask)

    def append_action(self, cache: KVCache, actions: jax.Array, rewards: jax.Array | None = None) -> KVCache:
        return append_action(self.graphdef, self.state, cache, actions, rewards)

    def step(
        self,
        cache: KVCache,
        actions: jax.Array,
        rewards: jax.Array | None,
        obs: Mapping[str, jax.Array],
        episode_start: jax.Array,
        timestep: jax.Array,
        legal_mask: jax.Array | None = None,
        restart: jax.Array | None = None,
        restart_length: jax.Array | int = 0,
    ) -> tuple[jax.Array, KVCache]:
        return step(
            self.graphdef, self.state, cache, actions, rewards, obs, episode_start, timestep, legal_mask,
            restart, restart_length,
        )  # fmt: skip
