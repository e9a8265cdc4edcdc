"""The model: causality, cached decoding = full forward, masking, gradients, axes, presets, CLI."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icrl.config import ConfigError
from icrl.data.recall import NO_RECALL
from icrl.envs.actions import PAD_ACTION
from icrl.errors import IcrlError
from icrl.model.axes import LOGICAL_AXES, complete_rules
from icrl.model.cache import rewind, tile
from icrl.model.config import PRESETS, ModelConfig, preset
from icrl.model.decoding import Decoder
from icrl.model.example import example_batch, legal_actions
from icrl.model.info import flops_per_token, param_counts
from icrl.model.loss import action_accuracy, action_loss
from icrl.model.model import MASKED_LOGIT, ICRLModel
from icrl.model.transformer import Block

TINY = dict(
    d_model=32,
    num_heads=2,
    num_layers=2,
    char_dim=4,
    color_dim=4,
    crop_channels=4,
    map_channels=4,
    tty_features=8,
    tty_hidden=16,
    impala_channels=(4, 4, 4),
    rgb_hidden=8,
    max_tokens=96,
    max_timestep=16,
    dropout=0.0,
    reward_tokens=True,
)


def tiny(**overrides) -> ModelConfig:
    return preset("1M", **{**TINY, **overrides})


def rngs(seed: int = 0) -> nnx.Rngs:
    """RBG keys: XLA compiles their initialisers several times faster than threefry's on CPU, and
    eager initialisation compiles one small program per parameter shape."""
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


@functools.cache
def cached_model(domain: str = "nethack", **overrides) -> ICRLModel:
    """One model per config for the whole module (tests only read it): building and compiling a
    model is most of these tests' time on CPU."""
    return ICRLModel(tiny(domain=domain, **overrides), rngs=rngs())


def random_batch(domain: str, b: int, t: int, seed: int = 0) -> dict:
    """A batch in the model's format with two episodes per row (the second starts at t // 2)."""
    return example_batch(domain, b, t, episodes=2, seed=seed)


def steps(batch: dict, lo: int, hi: int) -> dict:
    """Steps [lo, hi) of every per-step array of ``batch``."""
    out = {k: v[:, lo:hi] for k, v in batch.items() if k not in ("obs", "legal_mask")}
    out["obs"] = {k: v[:, lo:hi] for k, v in batch["obs"].items()}
    out["legal_mask"] = batch["legal_mask"]
    return out


def perturb_from(batch: dict, t: int, seed: int) -> dict:
    """A copy of ``batch`` whose a_t, r_t and every input of steps > t are redrawn."""
    domain = "nethack" if "tty_chars" in batch["obs"] else "procgen"
    other = random_batch(domain, *batch["actions"].shape, seed=seed)
    legal = legal_actions(domain)
    out = jax.tree.map(np.copy, batch)
    for k in out["obs"]:
        out["obs"][k][:, t + 1 :] = other["obs"][k][:, t + 1 :]
    out["actions"][:, t:] = legal[(np.searchsorted(legal, batch["actions"][:, t:]) + 1) % len(legal)]
    out["rewards"][:, t:] = other["rewards"][:, t:] + 1.0
    out["episode_start"][:, t + 1 :] = ~batch["episode_start"][:, t + 1 :]
    out["timestep"][:, t + 1 :] = (batch["timestep"][:, t + 1 :] + 3) % TINY["max_timestep"]
    return out


# Every test that runs a model uses these shapes, so the compiled functions are shared.
B, T, T_CTX, CAPACITY = 2, 8, 4, 64


@pytest.mark.parametrize("domain", ["nethack", "procgen"])
def test_causal_output_at_t_ignores_later_inputs(domain):
    decoder = Decoder(cached_model(domain))
    batch = random_batch(domain, B, T)
    base = np.asarray(decoder.forward(batch))
    for t in (0, 3, 6):
        changed = np.asarray(decoder.forward(perturb_from(batch, t, seed=10 + t)))
        np.testing.assert_allclose(changed[:, : t + 1], base[:, : t + 1], atol=1e-5)
        # The perturbation is visible downstream, so the test would catch a leak.
        assert np.abs(changed[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-3


@pytest.mark.parametrize(
    "domain, overrides",
    [
        ("nethack", dict()),  # reward tokens (3 per step), RoPE
        ("nethack", dict(reward_tokens=False, positions="learned")),
        ("nethack", dict(action_sees_obs=True)),  # the cache carries each step's encoded obs
        ("nethack", dict(recall="cell")),  # each observation token also carries a recalled action
        ("procgen", dict()),
    ],
)
def test_cached_decoding_equals_full_forward(domain, overrides):
    model = cached_model(domain, **overrides)
    if model.tokens.action_obs is not None:
        # The projection starts at zero; random weights make a wrong cached observation visible.
        model = nnx.clone(model)
        kernel = model.tokens.action_obs.kernel
        kernel[...] = jax.random.normal(jax.random.key(5), kernel[...].shape) * 0.5
    s = model.tokens_per_step
    decoder = Decoder(model)
    batch = random_batch(domain, B, T, seed=3)
    recall = overrides.get("recall", "none") != "none"
    if recall:
        batch["recall"] = jnp.asarray(np.random.default_rng(4).integers(0, NO_RECALL + 1, (B, T)), jnp.int32)
        with pytest.raises(ValueError, match="need 'recall'"):
            decoder.forward({k: v for k, v in batch.items() if k != "recall"})
    full = np.asarray(decoder.forward(batch))

    logits, cache = decoder.prefill(steps(batch, 0, T_CTX), capacity=CAPACITY)
    np.testing.assert_allclose(logits, full[:, :T_CTX], atol=1e-5)
    assert cache.length.tolist() == [T_CTX * s] * B
    for t in range(T_CTX, T):
        obs = {k: v[:, t] for k, v in batch["obs"].items()}
        step_logits, cache = decoder.observe(
            cache, obs, batch["episode_start"][:, t], batch["timestep"][:, t], batch["legal_mask"],
            batch["recall"][:, t] if recall else None,
        )
        np.testing.assert_allclose(step_logits, full[:, t], atol=1e-5, err_msg=f"step {t}")
        cache = decoder.append_action(cache, batch["actions"][:, t], batch["rewards"][:, t])
    assert cache.length.tolist() == [T * s] * B


def test_shared_prefix_tile_rewind_and_padded_prefill():
    """Prefill once with batch 1, tile to B rollouts, step them apart, restart one at the prefix."""
    decoder = Decoder(cached_model())
    s = cached_model().tokens_per_step
    t_ctx = T_CTX - 1
    batch = random_batch("nethack", B, T, seed=5)
    for k in batch["obs"]:  # every rollout starts from the same demos: row 0's first t_ctx steps
        batch["obs"][k][:, :t_ctx] = batch["obs"][k][:1, :t_ctx]
    for k in ("actions", "rewards", "episode_start", "timestep"):
        batch[k][:, :t_ctx] = batch[k][:1, :t_ctx]
    full = np.asarray(decoder.forward(batch))

    # The prefix is prefilled padded to T_CTX steps with lengths=[t_ctx]: the padding is forgotten.
    padded = steps(jax.tree.map(lambda a: a[:1], batch), 0, T_CTX)
    _, prefix = decoder.prefill(padded, capacity=CAPACITY, lengths=jnp.array([t_ctx], jnp.int32))
    assert prefix.length.tolist() == [t_ctx * s]
    cache = tile(prefix, B)
    assert cache.batch_size == B and cache.capacity == CAPACITY

    def at(t):
        obs = {k: v[:, t] for k, v in batch["obs"].items()}
        return obs, batch["episode_start"][:, t], batch["timestep"][:, t], batch["legal_mask"]

    # observe the first step, then one fused append_action + observe call per step.
    logits, cache = decoder.observe(cache, *at(t_ctx))
    got = [np.asarray(logits)]
    for t in range(t_ctx + 1, T):
        logits, cache = decoder.step(cache, batch["actions"][:, t - 1], batch["rewards"][:, t - 1], *at(t))
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(got, 1), full[:, t_ctx:], atol=1e-5)
    assert cache.length.tolist() == [(T - 1) * s + 1] * B

    # Row 1 restarts from the prefix inside the fused step: append_action, rewind row 1, observe step t_ctx.
    restart = jnp.arange(B) == 1
    logits, cache = decoder.step(
        cache, batch["actions"][:, -1], batch["rewards"][:, -1], *at(t_ctx), restart=restart,
        restart_length=t_ctx * s,
    )  # fmt: skip
    np.testing.assert_allclose(logits[1], full[1, t_ctx], atol=1e-5)
    assert cache.length.tolist() == [T * s + 1, t_ctx * s + 1]
    # And with rewind between separate calls: row 1 again replays step t_ctx.
    cache = decoder.append_action(cache, batch["actions"][:, t_ctx], batch["rewards"][:, t_ctx])
    cache = rewind(cache, restart, t_ctx * s)
    assert cache.length.tolist() == [T * s + s, t_ctx * s]
    logits, cache = decoder.observe(cache, *at(t_ctx))
    np.testing.assert_allclose(logits[1], full[1, t_ctx], atol=1e-5)


def test_illegal_actions_get_zero_probability():
    decoder = Decoder(cached_model())
    batch = random_batch("nethack", B, T)
    batch["legal_mask"][1, :] = False
    batch["legal_mask"][1, [3, 100, 130]] = True
    probs = np.asarray(jax.nn.softmax(decoder.forward(batch), axis=-1))
    legal = batch["legal_mask"][:, None, :].repeat(T, 1)
    assert np.all(probs[~legal] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(probs[legal] > 0)
    # The same holds in cached decoding.
    _, cache = decoder.prefill(steps(batch, 0, T_CTX), capacity=CAPACITY)
    obs = {k: v[:, T_CTX] for k, v in batch["obs"].items()}
    logits, _ = decoder.observe(
        cache, obs, batch["episode_start"][:, T_CTX], batch["timestep"][:, T_CTX], batch["legal_mask"]
    )
    assert np.all(np.asarray(jax.nn.softmax(logits))[~batch["legal_mask"]] == 0.0)
    assert np.all(np.asarray(logits)[~batch["legal_mask"]] == MASKED_LOGIT)


def _loss(model: ICRLModel, batch: dict) -> jax.Array:
    return action_loss(model(batch), batch["actions"], np.ones(batch["actions"].shape, bool))


loss_and_grads = nnx.jit(nnx.value_and_grad(_loss))


def _dead_parameters(grads: nnx.State) -> list[str]:
    flat = nnx.to_flat_state(grads)
    assert len(flat) > 20
    return [".".join(map(str, path)) for path, g in flat if not np.any(np.asarray(g[...]) != 0)]


def test_gradients_reach_every_parameter_and_remat_matches():
    """nethack, every optional part on (reward tokens, learned positions, action_sees_obs), with dropout; the remat
    model gives the same loss and gradients as the plain one (same dropout masks)."""
    batch = random_batch("nethack", B, T)
    plain = ICRLModel(tiny(positions="learned", dropout=0.5, action_sees_obs=True), rngs=rngs())
    remat = ICRLModel(tiny(positions="learned", dropout=0.5, action_sees_obs=True, remat=True), rngs=rngs())
    (l1, g1), (l2, g2) = loss_and_grads(plain, batch), loss_and_grads(remat, batch)
    assert not _dead_parameters(g2), "parameters without gradient"
    assert float(l1) == pytest.approx(float(l2), rel=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Dropout draws a fresh mask each training call (the decoding tests cover deterministic mode).
    l3, _ = loss_and_grads(plain, batch)
    assert float(l3) != float(l1)


def test_gradients_reach_every_parameter_procgen():
    model = cached_model("procgen")
    _, grads = loss_and_grads(model, random_batch("procgen", B, T))
    assert not _dead_parameters(grads)


@pytest.mark.parametrize("domain", ["nethack", "procgen"])
def test_every_parameter_has_logical_axis_names(domain):
    model = nnx.eval_shape(
        lambda: ICRLModel(tiny(domain=domain, positions="learned"), rngs=nnx.Rngs(0))
    )
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        where = ".".join(map(str, path))
        assert names is not None and len(names) == var.shape.__len__(), f"{where}: {names} vs shape {var.shape}"
        assert set(names) <= set(LOGICAL_AXES), f"{where}: unknown names {names}"


def test_parameters_are_sharded_when_built_inside_a_mesh():
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    rules = complete_rules((("embed", "fsdp"), ("mlp", "data")))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        block = Block(tiny(), rngs=rngs())  # one block: whole models take long to build eagerly
    assert tuple(block.mlp.wi.kernel[...].sharding.spec) == ("fsdp", "data")
    assert tuple(block.mlp.wo.kernel[...].sharding.spec) == ("data", "fsdp")
    assert tuple(block.attn.query.kernel[...].sharding.spec) in (("fsdp", None, None), ("fsdp",))
    with pytest.raises(ValueError, match="unknown logical axes"):
        complete_rules((("embd", "fsdp"),))


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_land_within_15_percent_of_the_study(name):
    for domain in ("nethack", "procgen"):
        total = param_counts(preset(name, domain=domain))["total"]
        nominal = PRESETS[name].nominal
        assert abs(total / nominal - 1) <= 0.15, f"{name} {domain}: {total:,} vs {nominal:,}"
    dims = preset(name).dims()
    assert (dims.num_layers, dims.d_model, dims.num_heads) == (
        PRESETS[name].layers,
        PRESETS[name].d_model,
        PRESETS[name].heads,
    )


def test_config_errors_name_the_bad_value():
    with pytest.raises(IcrlError, match=r"'2M'.*1M, 10M, 30M, 100M, 200M, 310M"):
        preset("2M")
    with pytest.raises(ConfigError, match="not divisible"):
        preset("1M", num_heads=3)
    with pytest.raises(ConfigError, match="dropout"):
        preset("1M", dropout=1.5)
    with pytest.raises(ConfigError, match="unknown key 'layers'"):
        preset("1M", layers=3)
    assert preset("10M", num_layers=3).dims().num_layers == 3


def test_flops_per_token_match_xla_cost_analysis():
    # One layer: XLA's cost analysis counts the body of the scan over layers once, not per layer.
    batch = random_batch("nethack", B, T)
    config = tiny(num_layers=1)
    graphdef, state = nnx.split(cached_model(num_layers=1))
    from icrl.model.decoding import forward

    analysis = forward.lower(graphdef, state, batch).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    tokens = B * T * config.tokens_per_step
    xla = analysis["flops"] / tokens
    ours = flops_per_token(config, context=T * config.tokens_per_step)["total"]
    assert abs(xla / ours - 1) < 0.15, (xla, ours)


def test_action_loss_and_accuracy():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]]))
    actions = jnp.array([[0, 1, PAD_ACTION]])
    mask = jnp.array([[True, True, True]])
    assert math.isclose(float(action_loss(logits, actions, mask)), -(np.log(0.5) + np.log(0.8)) / 2, rel_tol=1e-6)
    assert math.isclose(float(action_loss(logits, actions, mask.at[0, 1].set(False))), -np.log(0.5), rel_tol=1e-6)
    assert float(action_accuracy(logits, jnp.array([[1, 1, 2]]), mask)) == pytest.approx(2 / 3)
    assert float(action_loss(logits, actions, jnp.zeros_like(mask))) == 0.0


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32():
    batch = random_batch("nethack", B, T)
    f32 = cached_model()
    bf16 = ICRLModel(tiny(dtype="bfloat16"), rngs=rngs())
    assert {p.dtype for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.float32)}
    a, b = np.asarray(Decoder(f32).forward(batch)), np.asarray(Decoder(bf16).forward(batch))
    legal = batch["legal_mask"][:, None, :].repeat(T, 1)
    assert b.dtype == np.float32
    assert np.abs(a[legal] - b[legal]).max() < 0.1 * max(1.0, np.abs(a[legal]).max())


def test_cli_model_info(capsys):
    from icrl.cli import main

    assert main(["model", "info", "1M", "--domain", "procgen"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"total parameters: {param_counts(preset('1M', domain='procgen'))['total']}"
    assert any(line.strip().startswith("encoder") for line in lines)
    assert any("FLOPs per token" in line for line in lines)
    assert main(["model", "info", "7M"]) == 2
    assert "7M" in capsys.readouterr().err


@pytest.mark.parametrize("cursor_position", [False, True])
def test_cursor_position_branch_tells_apart_cells_with_identical_crops(cursor_position):
    """On a blank map every crop looks alike: only the cursor branch can tell where the agent is."""
    from icrl.model.tty_encoder import TtyEncoder

    encoder = TtyEncoder(preset("1M", cursor_position=cursor_position), rngs=nnx.Rngs(0))
    blank = {"tty_chars": jnp.full((2, 24, 80), 32, jnp.uint8), "tty_colors": jnp.zeros((2, 24, 80), jnp.uint8)}
    encoded = encoder({**blank, "tty_cursor": jnp.array([[10, 30], [10, 40]], jnp.int32)})
    same = bool(jnp.allclose(encoded[0], encoded[1], atol=1e-6))
    assert same is not cursor_position


@pytest.mark.parametrize("view", ["full", "crop"])
def test_crop_view_encodes_a_place_alike_whatever_the_rest_of_the_screen(view):
    """tty_view: crop reads only the crop around the cursor: a change of the map far from the agent,
    of the message or of the status line leaves the encoding unchanged; the full view sees it."""
    from icrl.model.tty_encoder import TtyEncoder

    encoder = TtyEncoder(preset("1M", tty_view=view), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    chars = rng.integers(32, 127, (1, 24, 80), dtype=np.uint8)
    other = chars.copy()
    other[0, 0, :20] = ord("x")  # message row
    other[0, 23, :20] = ord("7")  # status row
    other[0, 15:20, 60:80] = ord("#")  # map, far from the cursor at (5, 10)
    colors = np.zeros((1, 24, 80), np.uint8)
    cursor = jnp.array([[5, 10]], jnp.int32)
    a = encoder({"tty_chars": jnp.asarray(chars), "tty_colors": jnp.asarray(colors), "tty_cursor": cursor})
    b = encoder({"tty_chars": jnp.asarray(other), "tty_colors": jnp.asarray(colors), "tty_cursor": cursor})
    assert bool(jnp.allclose(a, b, atol=1e-6)) is (view == "crop")
    near = chars.copy()
    near[0, 6, 11] = ord("@") if chars[0, 6, 11] != ord("@") else ord("%")  # inside the crop
    c = encoder({"tty_chars": jnp.asarray(near), "tty_colors": jnp.asarray(colors), "tty_cursor": cursor})
    assert not bool(jnp.allclose(a, c, atol=1e-6))


# The patch map's matmuls are so small that the elementwise ops XLA also counts (GELU: 8 FLOPs an
# element, which flops_per_token leaves out) are 20% of the tiny model's total: d_model 128 there.
@pytest.mark.parametrize("overrides", [
    {"tty_view": "crop"}, {"map_downsample": "patch", "d_model": 128, "num_heads": 4},
    {"domain": "procgen", "rgb_downsample": "patch", "impala_channels": (32, 64, 64), "d_model": 128, "num_heads": 4}])
def test_flops_per_token_of_the_crop_view_and_patch_encoders_match_xla_cost_analysis(overrides):
    config = tiny(num_layers=1, **overrides)  # one layer: see the test above
    model = ICRLModel(config, rngs=rngs())
    batch = random_batch(config.domain, B, T)
    graphdef, state = nnx.split(model)
    from icrl.model.decoding import forward

    analysis = forward.lower(graphdef, state, batch).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    xla = analysis["flops"] / (B * T * config.tokens_per_step)
    ours = flops_per_token(config, context=T * config.tokens_per_step)["total"]
    assert abs(xla / ours - 1) < 0.15, (xla, ours)


def test_merge_patches_moves_each_2x2_block_into_channels_and_zero_pads_odd_edges():
    from icrl.model.layers import merge_patches

    x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3) + 1
    out = np.asarray(merge_patches(jnp.asarray(x)))
    assert out.shape == (2, 3, 4, 12)
    padded = np.zeros((2, 6, 8, 3), np.float32)
    padded[:, :5, :7] = x
    for a in range(2):
        for b in range(2):
            block = out[..., (2 * a + b) * 3 : (2 * a + b + 1) * 3]
            np.testing.assert_array_equal(block, padded[:, a::2, b::2])
    assert not out[:, 2, :, 6:].any() and not out[:, :, 3, 3:6].any()  # the padded last row and column


def test_patch_map_branch_gets_gradients_and_sees_the_far_map():
    """map_downsample: patch trains every parameter, and a change of the map far from the agent changes
    the encoding (the map branch reads it)."""
    from icrl.model.tty_encoder import TtyEncoder

    model = ICRLModel(tiny(map_downsample="patch"), rngs=rngs())
    _, grads = loss_and_grads(model, random_batch("nethack", B, T))
    assert not _dead_parameters(grads)
    assert any("map_merges" in ".".join(map(str, path)) for path, _ in nnx.to_flat_state(grads))
    encoder = TtyEncoder(preset("1M", map_downsample="patch"), rngs=nnx.Rngs(0))
    chars = np.random.default_rng(0).integers(32, 127, (1, 24, 80), dtype=np.uint8)
    other = chars.copy()
    other[0, 15:20, 60:80] = ord("#")
    colors, cursor = jnp.zeros((1, 24, 80), jnp.uint8), jnp.array([[5, 10]], jnp.int32)
    a = encoder({"tty_chars": jnp.asarray(chars), "tty_colors": colors, "tty_cursor": cursor})
    b = encoder({"tty_chars": jnp.asarray(other), "tty_colors": colors, "tty_cursor": cursor})
    assert not bool(jnp.allclose(a, b, atol=1e-6))


def test_patch_rgb_encoder_gets_gradients_and_sees_every_corner_of_the_frame():
    """rgb_downsample: patch trains every parameter, its encoding has the model's width, and a change
    of any one 4x4-pixel patch, corners included, changes the encoding."""
    from icrl.model.rgb_encoder import RgbEncoder

    model = ICRLModel(tiny(domain="procgen", rgb_downsample="patch"), rngs=rngs())
    _, grads = loss_and_grads(model, random_batch("procgen", B, T))
    assert not _dead_parameters(grads)
    assert any("merges" in ".".join(map(str, path)) for path, _ in nnx.to_flat_state(grads))
    config = preset("1M", domain="procgen", rgb_downsample="patch")
    encoder = RgbEncoder(config, rngs=nnx.Rngs(0))
    frame = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    base = encoder({"rgb": jnp.asarray(frame)})
    assert base.shape == (2, 3, config.dims().d_model)
    for row, col in [(0, 0), (0, 60), (60, 0), (60, 60), (28, 32)]:
        other = frame.copy()
        other[1, 2, row:row + 4, col:col + 4] = 255 - other[1, 2, row:row + 4, col:col + 4]
        out = np.asarray(encoder({"rgb": jnp.asarray(other)}))
        np.testing.assert_array_equal(out[:1], np.asarray(base)[:1])  # other frames' encodings stay
        assert not np.allclose(out[1, 2], np.asarray(base)[1, 2], atol=1e-6), (row, col)
