"""The training state (a plain pytree), the optimiser, and the model as a pure function of its params.

``TrainState`` holds everything a checkpoint needs besides the data iterator: the step, the fp32
parameters (a nested dict, as ``nnx.to_pure_dict`` gives), the optax state and the dropout key.
Being plain arrays in dicts and named tuples, it is jitted, sharded, donated and saved by Orbax
without any Flax object in between.

``ModelTemplate`` keeps the model's static structure (``nnx`` graph definition and the abstract
parameters with their logical axis names) and rebuilds a live ``ICRLModel`` from a params dict
inside a traced function — the usual functional NNX pattern.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from icrl.model.config import ModelConfig
from icrl.model.model import ICRLModel
from icrl.train.config import TrainConfig


@flax.struct.dataclass
class TrainState:
    """step [] int32 (optimizer steps done); params: nested dict of float32 arrays; opt_state: optax
    state over params; rng [2] uint32: raw key data of the dropout key (step s uses fold_in(rng, s))."""

    step: jax.Array
    params: dict
    opt_state: Any
    rng: jax.Array


def learning_rate(cfg: TrainConfig) -> optax.Schedule:
    """Step → learning rate: linear warm-up to ``lr``, then cosine to ``final_lr`` at ``steps`` (or constant)."""
    if cfg.schedule == "constant":
        if cfg.warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), optax.constant_schedule(cfg.lr)],
                [cfg.warmup_steps])
        return optax.constant_schedule(cfg.lr)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if cfg.warmup_steps else cfg.lr, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.steps, end_value=cfg.final_lr)


def decayed(params: dict) -> dict:
    """Which parameters get weight decay: matrices (ndim >= 2 per layer), not biases, norm scales
    or the episode-start vector. Parameters under ``transformer.blocks`` are stacked over layers
    (``icrl.model.transformer``), so their first axis does not count."""

    def matrix(path, p) -> bool:
        keys = [getattr(k, "key", None) for k in path]
        stacked = keys[:2] == ["transformer", "blocks"]
        return p.ndim - stacked >= 2

    return jax.tree_util.tree_map_with_path(matrix, params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """(clip by global norm →) AdamW with the schedule; weight decay on matrices only (``decayed``)."""
    adamw = optax.adamw(learning_rate(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                        mask=decayed)
    if cfg.grad_clip is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)


class ModelTemplate:
    """An ``ICRLModel``'s structure without its values: rebuilds the model from a params dict."""

    def __init__(self, config: ModelConfig):
        self.config = config
        abstract = nnx.eval_shape(lambda: ICRLModel(config, rngs=nnx.Rngs(0)))
        self.graphdef, self.abstract_params, self.abstract_rest = nnx.split(abstract, nnx.Param, ...)

    def init_params(self, key: jax.Array) -> dict:
        """Fresh parameters (a traceable function of ``key``): nested dict of arrays."""
        model = ICRLModel(self.config, rngs=nnx.Rngs(params=key, dropout=key))
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    def build(self, params: dict, dropout_key: jax.Array | None = None) -> ICRLModel:
        """The model with ``params``; every dropout stream reseeded from ``dropout_key`` (typed key)."""
        state = jax.tree.map(lambda x: x, self.abstract_params)
        nnx.replace_by_pure_dict(state, params)
        key = dropout_key if dropout_key is not None else jax.random.key(0)
        rest = jax.tree.map(
            lambda s: key if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key) else jnp.zeros(s.shape, s.dtype),
            self.abstract_rest)
        model = nnx.merge(self.graphdef, state, rest)
        if dropout_key is not None:
            tags = {v.tag for _, v in nnx.to_flat_state(nnx.state(model, nnx.RngKey))}
            nnx.reseed(model, **{tag: dropout_key for tag in tags})
        return model


def init_state(template: ModelTemplate, tx: optax.GradientTransformation, seed: int | jax.Array) -> TrainState:
    """Step-0 state from ``seed`` (an int, or an int32 scalar so one compiled program serves every
    seed): a pure function, jitted with ``out_shardings`` so every array is created where it lives."""
    key = jax.random.key(seed)
    params = template.init_params(jax.random.fold_in(key, 0))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.fold_in(key, 1)))


def state_shardings(abstract: TrainState, params_sharding: dict, tx: optax.GradientTransformation,
                    replicated: jax.sharding.Sharding) -> TrainState:
    """Shardings of a TrainState: optimizer moments follow their parameters, scalars are replicated."""
    is_sharding = lambda x: isinstance(x, jax.sharding.Sharding)  # noqa: E731
    opt = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, params_sharding,
                                transform_non_params=lambda _: replicated, is_leaf=is_sharding)
    return TrainState(step=replicated, params=params_sharding, opt_state=opt, rng=replicated)
