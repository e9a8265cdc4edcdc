"""The training step: a pure function (state, batch) → (state, metrics), jitted by the loop.

Loss: cross-entropy of the expert's action at every counted step (``loss_mask`` and not padding),
averaged over all counted steps of the global batch. With gradient accumulation the batch
[B, ...] is cut into A microbatches of B/A rows (rows k, k+A, k+2A, ... form microbatch k, so each
microbatch is spread over every device the batch is); microbatch k contributes
``loss_k · n_k / N`` (n_k its counted steps, N the batch's), so the accumulated loss and gradient
are exactly those of the whole batch at once.

Dropout: step s, microbatch k draws from fold_in(fold_in(rng, s), k): a pure function of the
state, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from icrl.envs.actions import PAD_ACTION
from icrl.model.axes import SpecFor, activation_sharding
from icrl.model.loss import action_accuracy, action_loss
from icrl.train.state import ModelTemplate, TrainState

# What the model reads (its batch format) and what the loss adds; the pipeline's other keys
# (index, episode_id, source/task ids, slot_*) stay on the host.
MODEL_KEYS: tuple[str, ...] = ("obs", "actions", "rewards", "episode_start", "timestep", "legal_mask")
DEVICE_KEYS: tuple[str, ...] = MODEL_KEYS + ("loss_mask",)
# Also sent where present: packed rows' segments (icrl.data.packing) and recalled actions (icrl.data.recall).
PACKED_KEYS: tuple[str, ...] = ("segment", "segment_step", "recall")

Batch = Mapping[str, Any]


def device_batch(batch: Batch) -> dict:
    """The keys of a pipeline batch that go to the devices."""
    return {k: batch[k] for k in DEVICE_KEYS + PACKED_KEYS if k in batch}


def model_batch(batch: Batch) -> dict:
    """The keys of a device batch that the model reads."""
    return {k: batch[k] for k in MODEL_KEYS + PACKED_KEYS if k in batch}


def counted(batch: Batch) -> jax.Array:
    """[B, T] bool: the steps whose action is a training target."""
    return batch["loss_mask"] & (batch["actions"] != PAD_ACTION)


def microbatch_loss(template: ModelTemplate, params: dict, batch: Batch, dropout_key: jax.Array | None,
                    total: jax.Array, compute_shardings: Any = None,
                    activations: SpecFor | None = None) -> tuple[jax.Array, jax.Array]:
    """(loss share, accuracy share) of one microbatch: its mean cross-entropy (accuracy) · n_k / N.

    ``compute_shardings``: where the parameters are used (FSDP: gathered over ``fsdp``); the
    gradient flows back through the constraint as a reduce-scatter onto the stored sharding.
    ``activations``: the model's activation constraints (``icrl.train.mesh.activation_sharding``),
    None for none. The loss is float32 whatever the compute dtype (the logits are).
    """
    if compute_shardings is not None:
        params = jax.lax.with_sharding_constraint(params, compute_shardings)
    model = template.build(params, dropout_key)
    with activation_sharding(activations):
        logits = model(model_batch(batch), deterministic=dropout_key is None)
    weight = counted(batch).sum().astype(jnp.float32) / jnp.maximum(total, 1.0)
    loss = action_loss(logits, batch["actions"], batch["loss_mask"])
    accuracy = action_accuracy(logits, batch["actions"], batch["loss_mask"])
    return loss * weight, accuracy * weight


def loss_and_grads(template: ModelTemplate, params: dict, batch: Batch, dropout_key: jax.Array | None = None,
                   grad_accum: int = 1, micro_sharding: jax.sharding.Sharding | None = None,
                   compute_shardings: Any = None, activations: SpecFor | None = None
                   ) -> tuple[jax.Array, jax.Array, dict]:
    """(loss, accuracy, gradients) of the whole batch, over ``grad_accum`` microbatches.

    batch: model keys plus ``loss_mask`` with leading dimension B; ``dropout_key`` None: no dropout.
    ``micro_sharding``: where each microbatch [B/A, ...] lives (keeps it spread over the batch axes);
    ``compute_shardings``, ``activations``: see ``microbatch_loss``.
    """
    total = counted(batch).sum().astype(jnp.float32)
    grad_fn = jax.value_and_grad(
        lambda p, mb, key: microbatch_loss(template, p, mb, key, total, compute_shardings, activations),
        has_aux=True)
    if grad_accum == 1:
        (loss, accuracy), grads = grad_fn(params, batch, dropout_key)
        return loss, accuracy, grads

    def split(x: jax.Array) -> jax.Array:
        b = x.shape[0]
        x = jnp.swapaxes(x.reshape(b // grad_accum, grad_accum, *x.shape[1:]), 0, 1)  # [A, B/A, ...]
        if micro_sharding is not None:
            spec = jax.sharding.PartitionSpec(None, *micro_sharding.spec)
            x = jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(micro_sharding.mesh, spec))
        return x

    micro = jax.tree.map(split, dict(batch))

    def body(carry, inputs):
        k, mb = inputs
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, k)
        (loss, accuracy), grads = grad_fn(params, mb, key)
        g, l, a = carry
        return (jax.tree.map(jnp.add, g, grads), l + loss, a + accuracy), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, loss, accuracy), _ = jax.lax.scan(
        body, (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)),
        (jnp.arange(grad_accum), micro))
    return loss, accuracy, grads


def make_train_step(template: ModelTemplate, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    grad_accum: int = 1, micro_sharding: jax.sharding.Sharding | None = None,
                    compute_shardings: Any = None, dropout: bool = True, activations: SpecFor | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The pure train step. Metrics (float32 scalars): loss, accuracy, grad_norm, param_norm, lr
    (the rate this step used) and actions (counted steps in the batch). The sharding arguments are
    those of ``loss_and_grads`` (None outside a mesh)."""

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step) if dropout else None
        loss, accuracy, grads = loss_and_grads(template, state.params, batch, key, grad_accum, micro_sharding,
                                               compute_shardings, activations)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "actions": counted(batch).sum().astype(jnp.float32),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step
