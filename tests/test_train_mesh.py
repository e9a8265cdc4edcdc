"""Sharding: mesh sizes, the rule table → PartitionSpecs, data slices, and the acceptance check that
a (data 2, fsdp 2, tensor 2) mesh computes the same loss and gradients as one device."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from icrl.data.pipeline import make_loader
from icrl.errors import IcrlError
from icrl.train.config import ExperimentConfig, MeshConfig
from icrl.train.mesh import (activation_sharding, batch_sharding, build_mesh, data_slice, gathered, global_batch,
                             logical_spec, mesh_shape, param_shardings, replicated)
from icrl.train.state import ModelTemplate, init_state, learning_rate, make_optimizer, state_shardings
from icrl.train.step import device_batch, loss_and_grads, make_train_step

from test_train_config import make_store, tiny_config

MESH_8 = MeshConfig(data=2, fsdp=2, tensor=2)


def test_mesh_sizes_resolve_against_the_device_count():
    assert mesh_shape(MeshConfig(), 8) == (8, 1, 1)
    assert mesh_shape(MeshConfig(data=-1, tensor=2), 8) == (4, 1, 2)
    assert mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
    with pytest.raises(IcrlError, match="has 4 devices, but 8 devices are available"):
        mesh_shape(MeshConfig(data=2, fsdp=2), 8)
    mesh = build_mesh(MESH_8)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_rules_give_partition_specs_and_replicate_what_does_not_divide():
    mesh = build_mesh(MESH_8)
    rules = dict(MESH_8.rules) | {"vocab": "tensor", "kv": "tensor", "positions": ["data", "fsdp"]}
    assert logical_spec(("embed", "mlp"), (16, 64), rules, mesh) == (P("fsdp", "tensor"), [])
    spec, notes = logical_spec(("embed", "vocab"), (16, 137), rules, mesh)  # VOCAB_SIZE is odd
    assert spec == P("fsdp") and "not divisible by tensor=2: replicated" in notes[0]
    spec, notes = logical_spec(("embed", "heads", "kv"), (16, 2, 8), rules, mesh)  # tensor used once
    assert spec == P("fsdp", "tensor") and "already used" in notes[0]
    assert logical_spec(("positions", "embed"), (24, 16), rules, mesh)[0] == P(("data", "fsdp"))
    one = build_mesh(MeshConfig(data=1), jax.devices()[:1])
    assert logical_spec(("embed", "mlp"), (16, 64), rules, one) == (P(), [])  # size-1 axes vanish


def test_one_process_holds_the_whole_batch():
    assert data_slice(build_mesh(MESH_8), ["data", "fsdp"]) == (0, 1)


def test_fsdp_parameters_are_gathered_for_compute():
    mesh = build_mesh(MESH_8)
    stored = {"a": jax.sharding.NamedSharding(mesh, P("fsdp", "tensor")),
              "b": jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), None))}
    used = gathered(stored)
    assert used["a"].spec == P(None, "tensor") and used["b"].spec == P("data", None)


# XLA's LLVM optimisations cost most of the compile time of these tiny models and change nothing
# being compared here (both sides of each comparison are compiled alike).
FAST = {"xla_backend_optimization_level": 0}


def ACTS(mesh):  # noqa: N802 — the activation constraints of the (2, 2, 2) mesh's default rules
    return activation_sharding(mesh, MESH_8.rules, MESH_8.batch_axes)


def shardings_on(mesh, template, tx, rules=MESH_8.rules):
    abstract = jax.eval_shape(lambda s: init_state(template, tx, s), np.int32(0))
    params_sh, _ = param_shardings(template.abstract_params, rules, mesh)
    return state_shardings(abstract, params_sh, tx, replicated(mesh))


def make_setup(tmp) -> dict:
    """Config, one global batch of 8 sequences, model template, optimiser, the two meshes with their
    state shardings, and the step-0 state created sharded on the (2, 2, 2) mesh and copied to one device."""
    cfg = ExperimentConfig.model_validate(tiny_config(make_store(tmp / "store"), tmp, data={"batch_size": 8}))
    batch = device_batch(next(iter(make_loader(cfg.data))))
    template = ModelTemplate(cfg.model)
    tx = make_optimizer(cfg.train)
    one, mesh = build_mesh(MeshConfig(data=1), jax.devices()[:1]), build_mesh(MESH_8)
    sh1, sh8 = shardings_on(one, template, tx), shardings_on(mesh, template, tx)
    state8 = jax.jit(lambda s: init_state(template, tx, s), out_shardings=sh8, compiler_options=FAST)(np.int32(0))
    state1 = jax.device_put(state8, sh1)
    return dict(cfg=cfg, batch=batch, template=template, tx=tx, one=one, mesh=mesh, sh1=sh1, sh8=sh8,
                state1=state1, state8=state8)


def assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
    paths_a = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y in zip(paths_a, jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def check_created_sharded(setup):
    """Parameters (and their Adam moments) are created split as the rules say."""
    wi = setup["state8"].params["transformer"]["blocks"]["mlp"]["wi"]["kernel"]  # [layers 1, embed 16, mlp 64]
    assert wi.sharding.spec == P(None, "fsdp", "tensor")  # the stacked layers axis is not split
    assert {s.data.shape for s in wi.addressable_shards} == {(1, 8, 32)} and len(wi.addressable_shards) == 8
    mu = setup["state8"].opt_state[1][0].mu["transformer"]["blocks"]["mlp"]["wi"]["kernel"]
    assert mu.sharding.spec == P(None, "fsdp", "tensor")  # Adam moments follow their parameter
    assert setup["state8"].step.sharding.spec == P()


def check_loss_and_gradients(setup):
    """Loss and gradients on the mesh equal the single-device ones (dropout on, same key)."""
    template, one, mesh = setup["template"], setup["one"], setup["mesh"]
    key = jax.random.key(7)  # dropout on, the same masks on both sides
    b1 = global_batch(setup["batch"], batch_sharding(one, ["data", "fsdp"]), 8)
    b8 = global_batch(setup["batch"], batch_sharding(mesh, ["data", "fsdp"]), 8)
    assert b8["actions"].sharding.spec == P(("data", "fsdp"))
    lg1 = lambda params, b: loss_and_grads(template, params, b, key)  # noqa: E731
    lg8 = lambda params, b: loss_and_grads(  # noqa: E731
        template, params, b, key, compute_shardings=gathered(setup["sh8"].params), activations=ACTS(mesh))

    loss1, acc1, grads1 = jax.jit(lg1, compiler_options=FAST)(setup["state1"].params, b1)
    f8 = jax.jit(lg8, in_shardings=(setup["sh8"].params, batch_sharding(mesh, ["data", "fsdp"])),
                 out_shardings=(replicated(mesh), replicated(mesh), setup["sh8"].params), compiler_options=FAST)
    loss8, acc8, grads8 = f8(setup["state8"].params, b8)
    assert np.isfinite(float(loss1)) and float(loss1) > 0
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-6)
    np.testing.assert_allclose(float(acc8), float(acc1), rtol=1e-6)
    assert_trees_close(grads1, grads8)
    assert grads8["transformer"]["blocks"]["mlp"]["wi"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    # The comparison can fail: a different batch gives different gradients.
    other = jax.tree.map(lambda x: np.roll(np.asarray(x), 1, axis=0), setup["batch"])
    _, _, grads_other = f8(setup["state8"].params, global_batch(other, batch_sharding(mesh, ["data", "fsdp"]), 8))
    with pytest.raises(AssertionError):
        assert_trees_close(grads1, grads_other)


def check_accumulated_step(setup):
    """A full step (AdamW update) on the mesh with 2 microbatches equals one device without them.

    Dropout is off here: with accumulation each microbatch draws its own masks, so only the
    deterministic loss is the same function of the batch."""
    template, tx, one, mesh = setup["template"], setup["tx"], setup["one"], setup["mesh"]
    schedule = learning_rate(setup["cfg"].train)
    sh8, bs8 = setup["sh8"], batch_sharding(mesh, ["data", "fsdp"])
    step1 = jax.jit(make_train_step(template, tx, schedule, dropout=False), compiler_options=FAST)
    step8 = jax.jit(make_train_step(template, tx, schedule, grad_accum=2, micro_sharding=bs8,
                                    compute_shardings=gathered(sh8.params), dropout=False,
                                    activations=ACTS(mesh)),
                    in_shardings=(sh8, bs8), out_shardings=(sh8, replicated(mesh)), donate_argnums=0,
                    compiler_options=FAST)
    new1, m1 = step1(setup["state1"], global_batch(setup["batch"], batch_sharding(one, ["data", "fsdp"]), 8))
    state8 = jax.tree.map(lambda x: x.copy(), setup["state8"])  # the step donates its input
    new8, m8 = step8(state8, global_batch(setup["batch"], bs8, 8))
    for k in ("loss", "accuracy", "grad_norm", "actions"):
        np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=2e-5, err_msg=k)
    assert int(new8.step) == int(new1.step) == 1
    assert_trees_close(new1.params, new8.params, rtol=1e-5, atol=1e-6)
    assert_trees_close(new1.opt_state, new8.opt_state, rtol=1e-4, atol=1e-8)


@pytest.mark.slow
def test_sharded_training_equals_single_device(tmp_path):
    """The acceptance check, on 8 emulated CPU devices as a (data 2, fsdp 2, tensor 2) mesh: one
    set-up (the compiles dominate) shared by the three checks."""
    setup = make_setup(tmp_path)
    check_created_sharded(setup)
    check_loss_and_gradients(setup)
    check_accumulated_step(setup)
