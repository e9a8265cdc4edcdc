"""The decoding fast path: cache attention, shared-prefix caches, and the policy that uses them.

``causal_attention`` (training and prefill, in blocks of queries) and ``cached_attention`` must
equal ``jax.nn.dot_product_attention``; ``shared_prefix_attention`` must
equal attention over each row's whole cache; decoding from ``share_prefix`` must give the logits
of a full forward pass over each row's sequence; the model policy must take the same actions
whichever cache layout its rows get.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icrl.model.attention import causal_attention, cached_attention, shared_prefix_attention
from icrl.model.cache import SharedPrefix, rewind, share_prefix, take_rows, tile
from icrl.model.config import preset
from icrl.model.decoding import Decoder
from icrl.model.example import example_batch
from icrl.model.model import ICRLModel

TINY = dict(d_model=24, num_heads=3, num_layers=2, char_dim=4, color_dim=4, crop_channels=4, map_channels=4,
            tty_features=8, tty_hidden=16, max_tokens=96, max_timestep=16, dropout=0.0)


def tiny_model(**overrides) -> ICRLModel:
    return ICRLModel(preset("1M", **{**TINY, **overrides}), rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape).astype(np.float32) * scale)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("block", [4, 7, 64])  # blocks that split L = 19 evenly, unevenly, not at all
def test_causal_attention_in_query_blocks_equals_dot_product_attention(masked, block):
    rng = np.random.default_rng(2)
    b, length, h, dh = 3, 19, 2, 4
    q, k, v = (normal(rng, b, length, h, dh, scale=3.0) for _ in range(3))
    segment = jnp.asarray(rng.integers(0, 3, (b, length)).cumsum(-1) // 4)  # packed rows: runs of one segment
    mask = (segment[:, None, :, None] == segment[:, None, None, :]) if masked else None

    def ours(q, k, v):
        return causal_attention(q, k, v, mask, block=block)

    def want(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation="xla")

    np.testing.assert_allclose(ours(q, k, v), want(q, k, v), atol=1e-5, rtol=1e-5)
    cotangent = normal(rng, b, length, h, dh)
    grads = [jax.vjp(f, q, k, v)[1](cotangent) for f in (ours, want)]
    for g_ours, g_want in zip(*grads, strict=True):
        np.testing.assert_allclose(g_ours, g_want, atol=1e-4, rtol=1e-4)
    # A key after its query never counts, whatever it holds.
    later = causal_attention(q, k.at[:, -1].set(1e3), v.at[:, -1].set(1e3), mask, block=block)
    np.testing.assert_allclose(later[:, :-1], ours(q, k, v)[:, :-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: sharp softmaxes, scores far from 0
def test_cached_attention_equals_dot_product_attention(scale):
    rng = np.random.default_rng(0)
    b, c, h, dh = 6, 9, 3, 4
    q, keys, values = normal(rng, b, h, dh, scale=scale), normal(rng, b, c, h, dh), normal(rng, b, c, h, dh)
    lengths = jnp.array([1, 9, 4, 2, 7, 5], jnp.int32)
    want = jax.nn.dot_product_attention(q[:, None], keys, values, key_value_seq_lengths=lengths,
                                        implementation="xla")[:, 0]
    np.testing.assert_allclose(cached_attention(q, keys, values, lengths), want, atol=1e-5, rtol=1e-5)
    # Entries past a row's length do not count, whatever they hold.
    garbage = jnp.where(jnp.arange(c)[None, :, None, None] >= lengths[:, None, None, None], 1e4, keys)
    np.testing.assert_allclose(cached_attention(q, garbage, values, lengths), want, atol=1e-5, rtol=1e-5)
    # A row with no valid entry gives zeros, not NaN.
    empty = cached_attention(q, keys, values, lengths.at[2].set(0))
    assert np.all(np.asarray(empty[2]) == 0) and np.all(np.isfinite(np.asarray(empty)))


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_shared_prefix_attention_equals_attention_over_each_rows_whole_cache(scale):
    """G = 3 groups of n = 2 rows; prefix lengths 5, 0, 3 and own lengths 1..4, 0: row r's whole
    cache is its group's valid prefix followed by its own entries."""
    rng = np.random.default_rng(1)
    g, n, p, w, h, dh = 3, 2, 5, 4, 2, 4
    prefix_length = np.array([5, 0, 3], np.int32)
    own_lengths = np.array([1, 4, 2, 0, 3, 1], np.int32)
    pk, pv = normal(rng, g, p, h, dh), normal(rng, g, p, h, dh)
    ok, ov = normal(rng, g * n, w, h, dh), normal(rng, g * n, w, h, dh)
    q = normal(rng, g * n, h, dh, scale=scale)

    def whole(prefix, own):  # [R, P + W, H, Dh]: valid entries first, the rest zeros
        out = np.zeros((g * n, p + w, h, dh), np.float32)
        for r in range(g * n):
            a, b = prefix_length[r // n], own_lengths[r]
            out[r, :a], out[r, a:a + b] = np.asarray(prefix)[r // n, :a], np.asarray(own)[r, :b]
        return jnp.asarray(out)

    keys = SharedPrefix(prefix=pk, prefix_length=jnp.asarray(prefix_length), own=ok)
    values = SharedPrefix(prefix=pv, prefix_length=jnp.asarray(prefix_length), own=ov)
    got = shared_prefix_attention(q, keys, values, jnp.asarray(own_lengths))
    want = cached_attention(q, whole(pk, ok), whole(pv, ov), jnp.asarray(prefix_length.repeat(n) + own_lengths))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(got[3]) == 0)  # group 1 has no prefix and row 3 no own entry yet


def test_decoding_from_shared_prefixes_equals_full_forward():
    """Two levels' demos of 5 and 3 steps (padded to 5), two rollouts each with their own steps
    (reward tokens: 3 per step). Every decoded step's logits equal a full forward pass over the
    row's demos followed by its rollout; a rewound row replays its first step."""
    model = tiny_model(reward_tokens=True)
    s, t_ctx, t_roll, n = model.tokens_per_step, 5, 4, 2
    decoder = Decoder(model)
    demos, rollouts = example_batch("nethack", 2, t_ctx, seed=3), example_batch("nethack", 4, t_roll, seed=4)
    demo_steps = np.array([5, 3])
    context = {k: v for k, v in demos.items() if k != "legal_mask"}
    _, prefix = decoder.prefill(context, t_ctx * s, jnp.asarray(demo_steps))
    cache = share_prefix(prefix, n, t_roll * s)
    assert cache.shared and cache.batch_size == 4 and cache.length.tolist() == [15, 15, 9, 9]

    # Full recomputation: row r = its level's demo steps, then its rollout, then padding (causal:
    # nothing after a step changes its logits).
    total = t_ctx + t_roll
    full = jax.tree.map(lambda a: np.zeros((4, total, *a.shape[2:]), a.dtype), context)
    for r in range(4):
        d = demo_steps[r // n]
        for key in ("actions", "rewards", "episode_start", "timestep"):
            full[key][r, :d], full[key][r, d:d + t_roll] = demos[key][r // n, :d], rollouts[key][r]
        for key in full["obs"]:
            full["obs"][key][r, :d] = demos["obs"][key][r // n, :d]
            full["obs"][key][r, d:d + t_roll] = rollouts["obs"][key][r]
    want = np.asarray(decoder.forward(full))
    at = np.repeat(demo_steps, n)

    def observe(cache, t):
        obs = {k: v[:, t] for k, v in rollouts["obs"].items()}
        return decoder.observe(cache, obs, rollouts["episode_start"][:, t], rollouts["timestep"][:, t])

    for t in range(t_roll):
        logits, cache = observe(cache, t)
        np.testing.assert_allclose(logits, want[np.arange(4), at + t], atol=1e-5, err_msg=f"step {t}")
        cache = decoder.append_action(cache, rollouts["actions"][:, t], rollouts["rewards"][:, t])
    assert cache.length.tolist() == list(at * s + t_roll * s)

    restart = jnp.array([False, True, True, False])
    cache = rewind(cache, restart, jnp.asarray(at * s))
    logits, _ = observe(cache, 0)
    np.testing.assert_allclose(logits[1:3], want[[1, 2], at[1:3]], atol=1e-5)
    np.asarray(prefix.keys[0])  # the prefilled cache is still valid: share_prefix copied it


def test_shared_caches_refuse_tile_and_take_rows():
    model = tiny_model()
    cache = share_prefix(model.init_cache(2, 6), 3, 4)
    assert cache.capacity == 10 and cache.batch_size == 6
    for op in (lambda: tile(cache, 2), lambda: take_rows(cache, np.array([0, 1]))):
        with pytest.raises(ValueError, match="SharedPrefix"):
            op()


def test_model_policy_takes_the_same_actions_with_shared_and_per_row_prefixes():
    """Rows level by level share their level's demos (``share_prefix``); interleaved rows get a copy
    each (``take_rows``); a row's actions are the same either way (sampling, row generators)."""
    from icrl.data.layout import ContextLayout
    from icrl.data.synthetic import nethack_episode
    from icrl.envs.nethack import TTY_SPEC
    from icrl.envs.spec import EnvSpec
    from icrl.eval.model_policy import ModelPolicy

    layout = ContextLayout(episodes=3, window=8, context_steps=24, tokens_per_step=2, positions="rope")
    spec = EnvSpec("MiniHack-Synthetic-v0", "nethack", dict(TTY_SPEC), np.arange(8, dtype=np.int32))
    demos = [[nethack_episode(level=lv, episode=e, length=6 + 2 * lv) for e in range(2)] for lv in range(2)]
    screens = example_batch("nethack", 4, 6, seed=7)["obs"]  # rollout (level, i) sees screens[2·level + i]
    policy = ModelPolicy(Decoder(tiny_model()), layout, greedy=False)
    taken = {}
    for order in ([0, 0, 1, 1], [1, 0, 0, 1]):
        rows = np.array(order)
        which = [2 * lv + i for lv, i in zip(order, (0, 1, 0, 1) if order == [0, 0, 1, 1] else (0, 0, 1, 1))]
        policy.start(spec, demos, rows, [np.random.default_rng(w) for w in which])
        assert policy.cache.shared == (order == [0, 0, 1, 1])
        actions = []
        for t in range(6):
            a = policy.act({k: v[which, t] for k, v in screens.items()}, np.ones(4, bool))
            policy.record(a, np.zeros(4, np.float32), np.zeros(4, bool))
            actions.append(a)
        taken[tuple(order)] = {w: tuple(col) for w, col in zip(which, np.stack(actions, 1))}
    assert taken[(0, 0, 1, 1)] == taken[(1, 0, 0, 1)]
