"""The scanned transformer equals a per-layer loop; precision defaults; the attention kernel choice."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icrl.errors import IcrlError
from icrl.model.attention import attention_implementation
from icrl.model.decoding import Decoder
from icrl.model.loss import action_loss
from icrl.model.model import ICRLModel, segment_mask
from icrl.model.transformer import Transformer

from test_model import B, T, random_batch, rngs, tiny


def _inputs(config, seed: int = 0):
    """x [B, L, d], positions [B, L] with two segments per row, and their mask [B, 1, L, L]."""
    d, length = config.dims().d_model, 12
    x = jax.random.normal(jax.random.key(seed), (B, length, d))
    segment = jnp.asarray(np.repeat([[0] * 4 + [1] * 2], B, 0))  # steps; 2 tokens each
    positions = jnp.asarray(np.tile(np.r_[np.arange(8), np.arange(4)], (B, 1)), jnp.int32)
    return x, positions, segment_mask(segment, 2)


def _per_layer(transformer: Transformer, x, positions, mask):
    """The reference: each layer's block on its own, in a Python loop, dropout keys as documented
    (layer l: fold_in(key, l), key drawn once from the transformer's stream)."""
    key = transformer.dropout.rngs() if transformer.dropout.rate > 0 else None
    for i in range(transformer.num_layers):
        x, _, _ = transformer.layer(i)(x, positions, None if key is None else jax.random.fold_in(key, i), mask)
    return transformer.norm(x)


@pytest.mark.parametrize("remat, unroll", [(False, 1), (True, 1), (False, 2)])
def test_scanned_layers_equal_a_per_layer_loop_in_outputs_and_gradients(remat, unroll):
    config = tiny(num_layers=3, dropout=0.3, remat=remat, scan_unroll=unroll)  # unroll 2 of 3: a remainder
    scanned = Transformer(config, rngs=rngs(1))
    reference = nnx.clone(scanned)  # the same parameters and the same dropout stream
    x, positions, mask = _inputs(config)
    target = jax.random.normal(jax.random.key(9), x.shape)

    def loss_scanned(model):
        return jnp.mean((model(x, positions, mask=mask)[0] - target) ** 2)

    def loss_reference(model):
        return jnp.mean((_per_layer(model, x, positions, mask) - target) ** 2)

    l1, g1 = nnx.jit(nnx.value_and_grad(loss_scanned))(scanned)
    l2, g2 = nnx.jit(nnx.value_and_grad(loss_reference))(reference)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
    flat1, flat2 = nnx.to_flat_state(g1), nnx.to_flat_state(g2)
    assert [p for p, _ in flat1] == [p for p, _ in flat2]
    for (path, a), (_, b) in zip(flat1, flat2, strict=True):
        np.testing.assert_allclose(np.asarray(a[...]), np.asarray(b[...]), atol=1e-6, err_msg=str(path))
    # Every layer gets its own gradient (the stacked axis is not shared), and the comparison can
    # fail: the layers' gradients differ.
    wi = np.asarray(dict(flat1)[("blocks", "mlp", "wi", "kernel")][...])
    assert wi.shape[0] == 3 and all(np.abs(wi[i]).max() > 0 for i in range(3))
    assert np.abs(wi[0] - wi[1]).max() > 1e-6
    # Keys and values of every layer come out of the scan (prefill), equal to each layer's own.
    y, kv = scanned(x, positions, deterministic=True, return_kv=True, mask=mask)
    h = x
    for i, (k, v) in enumerate(kv):
        h, k_ref, v_ref = scanned.layer(i)(h, positions, None, mask)
        np.testing.assert_allclose(k, k_ref, atol=1e-5)
        np.testing.assert_allclose(v, v_ref, atol=1e-5)


def test_dtype_auto_is_float32_on_cpu_and_bfloat16_tracks_float32():
    """The default compute dtype resolves by backend (CPU here: float32); bf16 compute keeps fp32
    parameters and gradients and gives a float32 loss close to the fp32 one."""
    assert jax.default_backend() == "cpu"
    assert tiny().dtype == "auto" and tiny().compute_dtype == "float32"
    assert tiny(dtype="bfloat16").compute_dtype == "bfloat16"
    batch = random_batch("nethack", B, T, seed=2)
    mask = np.ones(batch["actions"].shape, bool)

    def loss(model):
        return action_loss(model(batch, deterministic=True), batch["actions"], mask)

    f32 = ICRLModel(tiny(), rngs=rngs())
    bf16 = nnx.merge(nnx.graphdef(ICRLModel(tiny(dtype="bfloat16"), rngs=rngs())), nnx.state(f32))
    (l32, g32), (l16, g16) = (nnx.jit(nnx.value_and_grad(loss))(m) for m in (f32, bf16))
    assert l16.dtype == jnp.float32
    assert {g.dtype for g in jax.tree.leaves(nnx.state(g16, nnx.Param))} == {jnp.dtype(jnp.float32)}
    assert abs(float(l16) - float(l32)) < 0.02 * float(l32), (float(l16), float(l32))
    # The bf16 model really computes in bf16: its KV cache is bf16 and its logits differ a little.
    _, cache = Decoder(bf16).prefill(batch, capacity=64)
    assert cache.keys[0].dtype == jnp.bfloat16
    assert float(l16) != float(l32)


def test_attention_kernel_choice():
    """auto: query blocks off a GPU, or where cuDNN's documented limits exclude the shapes; cudnn off a
    GPU: one clear error when the model is built."""
    for dtype in (jnp.float32, jnp.bfloat16):
        assert attention_implementation("auto", dtype, (2, 64, 4, 32), True) == "blocks"
    assert attention_implementation("xla", jnp.bfloat16, (2, 64, 4, 32), False) == "xla"
    assert attention_implementation("blocks", jnp.bfloat16, (2, 64, 4, 32), False) == "blocks"
    with pytest.raises(IcrlError, match="model.attention=cudnn needs a GPU"):
        ICRLModel(tiny(attention="cudnn", dtype="bfloat16"), rngs=rngs())


def test_weight_decay_skips_stacked_norm_scales_and_reaches_stacked_matrices():
    from icrl.train.state import ModelTemplate, decayed

    params = nnx.to_pure_dict(ModelTemplate(tiny(num_layers=3)).abstract_params)
    mask = decayed(params)
    blocks = mask["transformer"]["blocks"]
    assert blocks["mlp"]["wi"]["kernel"] and blocks["attn"]["query"]["kernel"]  # [L, d, mlp], [L, d, H, Dh]
    assert not blocks["attn_norm"]["scale"] and not blocks["mlp_norm"]["scale"]  # [L, d]: per layer a vector
    assert not mask["transformer"]["norm"]["scale"] and mask["head"]["kernel"]
    assert not mask["tokens"]["episode_start"]
