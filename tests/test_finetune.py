"""The fine-tuning baseline (``icrl.eval.finetune``): each level's parameters are the trained ones
after ``steps`` Adam steps on that level's demos alone, they move, and they lower the imitation
loss on those demos."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from icrl.data.layout import ContextLayout
from icrl.data.synthetic import write_synthetic
from icrl.envs import make_vector_env
from icrl.eval.finetune import FinetunePolicy, param_distance
from icrl.eval.model_policy import MODEL_KEYS, demo_batch
from icrl.store.reader import TrajectoryStore
from icrl.train.step import loss_and_grads

MAZE = "MiniHack-MazeWalk-15x15-v0"
# 3 episodes of up to 24 steps in 72, 2 tokens a step.
LAYOUT = ContextLayout(episodes=3, window=24, context_steps=72, tokens_per_step=2, positions="rope")
LEVELS, K = 2, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model, the legal-action mask of MazeWalk, and K synthetic demos of each of 2 levels
    (of different lengths, so the rows hold different padding)."""
    from flax import nnx

    from icrl.model.config import ModelConfig
    from icrl.model.model import ICRLModel

    root = tmp_path_factory.mktemp("demos") / "store"
    TrajectoryStore.create(root).close()
    write_synthetic(root, "w", [("nethack", MAZE, lv, ep, 14 + 5 * lv + ep) for lv in range(LEVELS)
                                for ep in range(K)])
    store = TrajectoryStore(root)
    demos = [[store.read(r) for r in sorted(store.episodes_of(MAZE, lv), key=lambda r: r.episode)]
             for lv in range(LEVELS)]
    with make_vector_env(MAZE, 1) as venv:
        spec = venv.spec
    cfg = ModelConfig(preset="1M", num_layers=2, d_model=32, num_heads=2, max_tokens=160, dropout=0.0)
    return ICRLModel(cfg, rngs=nnx.Rngs(0)), cfg, spec, demos


def _level_rows(demos, spec) -> list[dict]:
    """Each level's demos as the one row [1, K*W, ...] the policy fine-tunes on."""
    batch = demo_batch(demos, LAYOUT, spec.domain)
    return [{**jax.tree.map(lambda a, i=i: jnp.asarray(a[i:i + 1]), {k: batch[k] for k in (*MODEL_KEYS, "loss_mask")}),
             "legal_mask": jnp.asarray(spec.legal_mask[None])} for i in range(len(demos))]


_POLICIES: dict = {}


def _tuned(setup, steps: int, lr: float) -> FinetunePolicy:
    """The policy after ``start`` on both levels' demos (2 rows each); one per (steps, lr), since
    each compiles its own step."""
    if (steps, lr) not in _POLICIES:
        model, cfg, spec, demos = setup
        policy = FinetunePolicy(model, cfg, LAYOUT, steps=steps, learning_rate=lr, greedy=True)
        rows = np.repeat(np.arange(LEVELS), 2)
        policy.start(spec, demos, rows, [np.random.default_rng(i) for i in range(len(rows))])
        _POLICIES[steps, lr] = policy
    return _POLICIES[steps, lr]


@pytest.mark.parametrize("steps, lr", [(4, 1e-2), (0, 1e-2), (4, 0.0)])
def test_finetuning_moves_the_parameters_and_lowers_the_demo_loss(setup, steps, lr):
    """With steps or lr at 0 nothing moves and the loss stays: the check fails there, as it must."""
    _, _, spec, demos = setup
    policy = _tuned(setup, steps, lr)
    for level, row in enumerate(_level_rows(demos, spec)):
        tuned = jax.tree.map(lambda a, g=level: a[g], policy.tuned)
        before = float(loss_and_grads(policy.template, policy.params, row)[0])
        after = float(loss_and_grads(policy.template, tuned, row)[0])
        if steps and lr:
            assert param_distance(tuned, policy.params) > 1e-3
            assert after < 0.95 * before, f"level {level}: loss {before:.4f} -> {after:.4f}"
        else:
            assert param_distance(tuned, policy.params) == 0.0 and after == pytest.approx(before)


def test_each_level_is_tuned_from_the_trained_parameters_on_its_own_demos(setup):
    """Level g's parameters are ``steps`` Adam steps from the trained ones on level g's row only,
    with a fresh optimiser state (nothing carried over from the level before)."""
    _, _, spec, demos = setup
    steps, lr = 4, 1e-2
    policy = _tuned(setup, steps, lr)
    tx = optax.adam(lr)
    for level, row in enumerate(_level_rows(demos, spec)):
        params, opt = policy.params, tx.init(policy.params)
        for _ in range(steps):
            grads = loss_and_grads(policy.template, params, row)[2]
            updates, opt = tx.update(grads, opt, params)
            params = optax.apply_updates(params, updates)
        tuned = jax.tree.map(lambda a, g=level: a[g], policy.tuned)
        assert param_distance(tuned, params) < 1e-4 * max(param_distance(params, policy.params), 1e-6) + 1e-5
    other = [jax.tree.map(lambda a, g=g: a[g], policy.tuned) for g in range(LEVELS)]
    assert param_distance(*other) > 1e-3  # the levels' demos differ, so do their parameters
