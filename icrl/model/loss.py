"""The imitation loss: cross-entropy of the expert's actions under the model's masked logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icrl.envs.actions import PAD_ACTION


def action_loss(logits: jax.Array, actions: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean cross-entropy over the steps where ``loss_mask`` is True.

    logits [B, T, V] float (masked by the model), actions [B, T] int32 targets, loss_mask [B, T]
    bool. Steps whose target is PAD_ACTION never count, whatever the mask says (padding and
    observation-only data). Returns a float32 scalar; 0 when no step counts.
    """
    counted = loss_mask & (actions != PAD_ACTION)
    # Uncounted steps read index 0, so their (possibly out-of-range) labels never reach the gather.
    labels = jnp.where(counted, actions, 0).astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    target = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    weights = counted.astype(jnp.float32)
    return -jnp.where(counted, target, 0.0).sum() / jnp.maximum(weights.sum(), 1.0)


def action_accuracy(logits: jax.Array, actions: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Fraction of counted steps (as in ``action_loss``) whose arg-max action is the target."""
    weights = (loss_mask & (actions != PAD_ACTION)).astype(jnp.float32)
    hits = (jnp.argmax(logits, axis=-1) == actions).astype(jnp.float32)
    return (hits * weights).sum() / jnp.maximum(weights.sum(), 1.0)
