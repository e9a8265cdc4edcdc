"""The fine-tuning baseline the study's reviewers asked for: a few gradient steps on the k demos.

For each level, a copy of the trained parameters is fine-tuned on that level's k demos (packed as
one sequence, loss on every demo action, no dropout), then rolled out with an empty context: the
demos reach the model only through its weights. With k = 0 it is the trained model, zero-shot.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from icrl.envs.actions import PAD_ACTION
from icrl.eval.model_policy import ModelPolicy, demo_context, pad_steps
from icrl.eval.policies import Policy


class FinetunePolicy(Policy):
    """Fine-tunes on the demos at ``start``, then acts like ``ModelPolicy`` with no demos."""

    def __init__(self, model, model_config, *, steps: int = 20, learning_rate: float = 1e-4,
                 name: str = "finetune", greedy: bool = False):
        from icrl.model.decoding import Decoder
        from icrl.train.state import ModelTemplate

        self.name, self.steps = name, steps
        self.template = ModelTemplate(model_config)
        self.params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        self.decoder = Decoder(model)
        self.inner = ModelPolicy(self.decoder, model_config, name=name, greedy=greedy)
        self.tx = optax.adam(learning_rate)
        self._update = jax.jit(functools.partial(_finetune, self.template, self.tx, steps))

    def start(self, spec, demos, num_envs, rng):
        params = self.params
        if demos:
            # Padded to one length so the jitted fine-tuning compiles once for every level.
            steps = self.inner.demo_steps
            batch = pad_steps(demo_context(demos, steps), steps)
            batch["loss_mask"] = batch["actions"] != PAD_ACTION
            batch["legal_mask"] = spec.legal_mask[None]
            params = self._update(params, jax.tree.map(jnp.asarray, batch))
        model = self.template.build(params)
        model.eval()
        self.decoder.graphdef, self.decoder.state = nnx.split(model)
        self.inner.start(spec, [], num_envs, rng)
        self.step_limit = self.inner.step_limit

    def act(self, obs, live):
        return self.inner.act(obs, live)

    def record(self, actions, rewards, done):
        self.inner.record(actions, rewards, done)


def _finetune(template, tx, steps: int, params: dict, batch: dict) -> dict:
    """``steps`` Adam steps on the imitation loss of ``batch`` [1, T, ...]: a pure function."""
    from icrl.train.step import loss_and_grads

    def body(_, carry):
        p, opt = carry
        _, _, grads = loss_and_grads(template, p, batch)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    params, _ = jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))
    return params


def param_distance(a: dict, b: dict) -> float:
    """L2 distance between two parameter trees (how far fine-tuning moved them)."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum((x - y) ** 2), a, b))
    return float(np.sqrt(sum(float(v) for v in leaves)))
