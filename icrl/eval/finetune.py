"""The fine-tuning baseline the study's reviewers asked for: a few gradient steps on the k demos.

For each level, a copy of the trained parameters is fine-tuned on that level's k demos (packed as
one row by the run's layout, loss on every demo action, no dropout), then rolled out with an empty
context: the demos reach the model only through its weights. With k = 0 it is the trained model,
zero-shot.

Batches: the L levels of a batch are fine-tuned one after another (one optimiser state in memory
at a time), their parameters stacked [L, ...], and all R rows roll out together: one decoding
call per step, ``jax.vmap`` over the levels, each level's rows (contiguous, the same number per
level) against its own parameters. Memory: L copies of the parameters (bound it with
``EvalConfig.level_batch``).

Speed: each Adam step is one jitted call (compiled once per k, the demo row's shape, then reused
for every level and task), driven by a Python loop. The same steps inside one ``lax.fori_loop``
ran 3-5x slower on CPU (more so for longer rows: XLA's while-loop body runs the model's
convolutions and matmuls and their gradients on a slower path), and ``jax.vmap`` over the levels'
parameters about 2x slower than one level at a time (per-level kernels turn every convolution into
a grouped one), so neither is used. The parameters equal the ``fori_loop``'s up to float rounding
(max |difference| below 1e-6).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from icrl.data.layout import ContextLayout
from icrl.eval.model_policy import MODEL_KEYS, ModelPolicy, demo_batch
from icrl.eval.policies import Policy, check_batch, check_model_domain


class FinetunePolicy(Policy):
    """Fine-tunes on each level's demos at ``start``, then acts like ``ModelPolicy`` with no demos."""

    def __init__(self, model, model_config, layout: ContextLayout, *, steps: int = 20, learning_rate: float = 1e-4,
                 name: str = "finetune", greedy: bool = False):
        from icrl.model.decoding import Decoder
        from icrl.train.state import ModelTemplate

        self.name, self.steps, self.greedy, self.domain = name, steps, greedy, model_config.domain
        self.template = ModelTemplate(model_config)
        self.params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        self.decoder = Decoder(model)  # the trained model: k = 0, and init_cache for every k
        self.layout = layout
        self.tx = optax.adam(learning_rate)
        # One compiled Adam step per demo-row shape (per k), reused for every level: see the module doc.
        self._step = jax.jit(functools.partial(adam_step, self.template, self.tx))

    def check(self, task):
        check_model_domain(self.name, self.domain, task)

    def finetune(self, batch: dict) -> dict:
        """The trained parameters after ``steps`` Adam steps on ``batch``: one level's demo row
        (model keys and ``loss_mask`` [1, T, ...], ``legal_mask`` [1, A]); a fresh optimiser state."""
        params, opt = self.params, self.tx.init(self.params)
        for _ in range(self.steps):
            params, opt = self._step(params, opt, batch)
        return params

    def start(self, spec, demos, row_demos, rngs):
        rows = check_batch(demos, row_demos, rngs)
        batch = demo_batch(demos, self.layout, spec.domain)
        decoder = self.decoder
        if batch is not None:
            groups = len(demos)
            if len(rows) % groups or not np.array_equal(rows, np.repeat(np.arange(groups), len(rows) // groups)):
                raise ValueError("fine-tuning rolls out each level's rows against its own parameters: rows must "
                                 "come level by level, the same number per level")
            inputs = {k: batch[k] for k in (*MODEL_KEYS, "recall", "loss_mask") if k in batch}
            legal = spec.legal_mask[None]
            tuned = []
            for level in range(groups):
                # One level's demos, one row as the model saw contexts in training (one layout).
                one = jax.tree.map(lambda a, i=level: jnp.asarray(a[i:i + 1]), inputs)
                tuned.append(self.finetune({**one, "legal_mask": jnp.asarray(legal)}))
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *tuned)
            decoder = GroupDecoder(self.template, stacked, groups, self.decoder)
        self.tuned = None if batch is None else stacked
        self.inner = ModelPolicy(decoder, self.layout, name=self.name, greedy=self.greedy)
        self.inner.start(spec, [[] for _ in demos], rows, rngs)
        self.step_limit = self.inner.step_limit

    def act(self, obs, live):
        return self.inner.act(obs, live)

    def record(self, actions, rewards, done):
        self.inner.record(actions, rewards, done)


class GroupDecoder:
    """Cached decoding of R rows in G contiguous groups of R/G rows, group g with parameters
    ``params[g]`` (a params dict whose leaves have a leading axis G). Same calls as ``Decoder``'s
    ``observe`` / ``append_action``; ``graphdef`` / ``state`` are ``base``'s (for ``init_cache``)."""

    def __init__(self, template, params: dict, groups: int, base):
        self.template, self.params, self.groups = template, params, groups
        self.graphdef, self.state = base.graphdef, base.state

    def observe(self, cache, obs, episode_start, timestep, legal_mask=None, recall=None):
        return _observe_groups(self.template, self.groups, self.params, cache, obs, episode_start, timestep,
                               legal_mask, recall)

    def append_action(self, cache, actions, rewards=None):
        return _append_groups(self.template, self.groups, self.params, cache, actions, rewards)


def _split(groups: int, tree):
    """Leaves [R, ...] -> [G, R/G, ...]."""
    return jax.tree.map(lambda x: x.reshape(groups, x.shape[0] // groups, *x.shape[1:]), tree)


def _join(tree):
    """Leaves [G, R/G, ...] -> [R, ...]."""
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)


@functools.partial(jax.jit, static_argnames=("template", "groups"), donate_argnames=("cache",))
def _observe_groups(template, groups, params, cache, obs, episode_start, timestep, legal_mask, recall=None):
    """``ICRLModel.observe`` of each group against its own parameters: -> (logits [R, V], cache)."""
    def one(p, c, o, e, t, m, r):
        return template.build(p).observe(c, o, e, t, m, r)

    logits, cache = jax.vmap(one)(params, *_split(groups, (cache, obs, episode_start, timestep, legal_mask, recall)))
    return _join(logits), _join(cache)


@functools.partial(jax.jit, static_argnames=("template", "groups"), donate_argnames=("cache",))
def _append_groups(template, groups, params, cache, actions, rewards):
    """``ICRLModel.append_action`` of each group against its own parameters: -> cache."""
    def one(p, c, a, r):
        return template.build(p).append_action(c, a, r)

    return _join(jax.vmap(one)(params, *_split(groups, (cache, actions, rewards))))


def adam_step(template, tx: optax.GradientTransformation, params: dict, opt_state, batch: dict):
    """One optimiser step on the imitation loss of ``batch`` [1, T, ...], no dropout (a pure
    function): -> (params, opt_state)."""
    from icrl.train.step import loss_and_grads

    _, _, grads = loss_and_grads(template, params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def param_distance(a: dict, b: dict) -> float:
    """L2 distance between two parameter trees (how far fine-tuning moved them)."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum((x - y) ** 2), a, b))
    return float(np.sqrt(sum(float(v) for v in leaves)))
