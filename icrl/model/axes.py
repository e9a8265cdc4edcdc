"""Logical axis names of the model's parameters and activations, and the helpers that use them.

Every parameter carries a tuple of logical axis names (one per array axis) as Flax NNX sharding
metadata (``out_sharding``). The training code maps names to mesh axes with a rule table, e.g.::

    rules = complete_rules((("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("vocab", "tensor")))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        model = ICRLModel(config, rngs=nnx.Rngs(0))      # parameters created already sharded

or, without building the model first, ``nnx.get_partition_spec(nnx.state(nnx.eval_shape(...)))``
under the same rules. Flax passes a name missing from the rules through unchanged (and then fails:
it is no mesh axis), hence ``complete_rules``, which replicates every name the table leaves out.

Outside a mesh (tests, single-device runs) the names are kept as metadata only, so the model can
be built anywhere; inside a mesh (``jax.set_mesh``) parameters are sharded as they are created.

Activations carry logical names too (``ACTIVATION_AXES``): the model calls ``constrain(x, "batch",
"sequence", "act_embed")`` at the residual stream, attention heads and MLP hidden units. That is a
no-op unless the caller traces the model inside ``activation_sharding(spec_for)``, where
``spec_for(names, shape)`` turns the names into a sharding from the same rule table as the
parameters (``icrl.train.mesh.activation_sharding``); the constraint then pins the layout that XLA's
propagation would otherwise choose (tensor parallelism: heads and MLP units split over ``tensor``).
The model code names axes only; which mesh axis each name goes to is the config's rule table.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax

# Every logical axis name a parameter may carry, with what it indexes. The training issue's rule
# table should mention the large ones; the rest may stay replicated.
LOGICAL_AXES: dict[str, str] = {
    "embed": "the residual stream, d_model",
    "mlp": "the transformer MLP's hidden units",
    "heads": "attention heads",
    "kv": "features per attention head (head_dim)",
    "vocab": "the unified action vocabulary (VOCAB_SIZE)",
    "norm": "the features a norm scale multiplies",
    "positions": "rows of the learned position table (max_tokens)",
    "timestep": "rows of the timestep-in-episode table (max_timestep)",
    "token_type": "rows of the token-type table (observation, action, reward)",
    "reward_in": "reward features fed to the reward embedding",
    "char_vocab": "rows of the tty character / colour tables (256 byte values)",
    "char_embed": "width of a tty character or colour embedding",
    "conv_h": "kernel rows of a convolution",
    "conv_w": "kernel columns of a convolution",
    "conv_in": "input channels of a convolution",
    "conv_out": "output channels of a convolution",
    "enc_in": "input features of an encoder projection (a flattened feature map or line)",
    "enc_hidden": "hidden features inside an observation encoder",
    "layers": "the stacked transformer blocks (scanned over: never split, each device holds every layer's share)",
}

# Logical names of activation axes (``constrain``). Parameter and activation axes have distinct
# names because they shard differently: a weight's ``embed`` dimension is split over ``fsdp``
# (ZeRO-3), an activation's residual dimension is not (its batch already is).
ACTIVATION_AXES: dict[str, str] = {
    "batch": "rows of a batch (always split over mesh.batch_axes, as the input batch is)",
    "sequence": "tokens of a row (or steps, for per-step activations)",
    "act_embed": "the residual stream of an activation, d_model",
    "act_heads": "attention heads of queries, keys, values and attention outputs",
    "act_kv": "features per attention head of an activation",
    "act_mlp": "the MLP's hidden units of an activation",
}

LOGICAL_AXES.update(ACTIVATION_AXES)


def complete_rules(rules: tuple[tuple[str, str | None], ...]) -> tuple[tuple[str, str | None], ...]:
    """``rules`` (logical name → mesh axis or None) plus ``(name, None)`` for every other name.

    Raises ValueError naming a rule for an unknown logical name.
    """
    named = {name for name, _ in rules}
    unknown = sorted(named - set(LOGICAL_AXES))
    if unknown:
        raise ValueError(f"rules name unknown logical axes {unknown}; known: {sorted(LOGICAL_AXES)}")
    return tuple(rules) + tuple((name, None) for name in LOGICAL_AXES if name not in named)


def mesh_active() -> bool:
    """True inside ``jax.set_mesh(...)``: parameters are then sharded as they are created."""
    return not jax.sharding.get_abstract_mesh().empty


def sharding(*names: str) -> dict[str, Any]:
    """Metadata for ``nnx.Param(..., **sharding("embed", "mlp"))`` or ``kernel_metadata=``.

    Raises ValueError naming an unknown axis name, so a typo cannot silently replicate a weight.
    """
    for name in names:
        if name not in LOGICAL_AXES:
            raise ValueError(f"unknown logical axis name {name!r}; known: {sorted(LOGICAL_AXES)}")
    return {"out_sharding": tuple(names), "eager_sharding": mesh_active()}


SpecFor = Callable[[Sequence[str], Sequence[int]], Any]
_SPEC_FOR: contextvars.ContextVar[SpecFor | None] = contextvars.ContextVar("icrl_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(spec_for: SpecFor | None) -> Iterator[None]:
    """Trace the model inside this to constrain its activations: ``spec_for(names, shape)`` → a
    ``jax.sharding.Sharding`` (or None: leave that activation to XLA). ``None``: no constraints."""
    token = _SPEC_FOR.set(spec_for)
    try:
        yield
    finally:
        _SPEC_FOR.reset(token)


def constrain(x: jax.Array, *names: str) -> jax.Array:
    """x with a sharding constraint from its logical axis ``names`` (one per axis of x), inside
    ``activation_sharding``; x unchanged outside it."""
    spec_for = _SPEC_FOR.get()
    if spec_for is None:
        return x
    if len(names) != x.ndim:
        raise ValueError(f"constrain: {len(names)} names {names} for an array of shape {x.shape}")
    sharding = spec_for(names, x.shape)
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)
