"""Activation sharding constraints hold in the compiled program, on 8 emulated CPU devices.

The model names its activation axes (``icrl.model.axes.constrain``); the rule table maps them to
mesh axes. Read back from the compiled (SPMD-partitioned) HLO, whose shapes are per device: with
the default rules the MLP hidden units and the attention heads are split over ``tensor`` and the
rows over ``data`` × ``fsdp`` (no device holds a whole hidden layer or all heads); mapping
``act_mlp`` / ``act_heads`` to nothing instead makes the program gather whole ones, so the layout
follows the table, not XLA's own propagation.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx

from icrl.model.config import preset
from icrl.model.example import example_batch
from icrl.train.config import MeshConfig
from icrl.train.mesh import activation_sharding, batch_sharding, build_mesh, gathered, param_shardings
from icrl.train.state import ModelTemplate
from icrl.train.step import loss_and_grads

MESH = MeshConfig(data=2, fsdp=2, tensor=2)
# d_model 48, 2 heads of 24, MLP 192: per-device widths that no other tensor of the model has.
MODEL = dict(num_layers=2, d_model=48, num_heads=2, char_dim=2, color_dim=2, crop_channels=2, map_channels=2,
             tty_features=4, tty_hidden=8, max_tokens=24, max_timestep=16, dropout=0.0)
ROWS, STEPS = 8, 6  # 12 tokens per row; 8 rows over data × fsdp = 4: 2 rows per device


def compiled_text(rules) -> str:
    mesh = build_mesh(MESH)
    template = ModelTemplate(preset("1M", **MODEL))
    params_sh, _ = param_shardings(template.abstract_params, rules, mesh)
    batch_sh = batch_sharding(mesh, MESH.batch_axes)
    batch = example_batch("nethack", ROWS, STEPS)
    batch.pop("rewards")
    batch["loss_mask"] = np.ones((ROWS, STEPS), bool)
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), nnx.to_pure_dict(template.abstract_params))
    acts = activation_sharding(mesh, rules, MESH.batch_axes)
    fn = jax.jit(lambda p, b: loss_and_grads(template, p, b, None, compute_shardings=gathered(params_sh),
                                             activations=acts)[2],
                 in_shardings=(params_sh, batch_sh), out_shardings=params_sh,
                 compiler_options={"xla_backend_optimization_level": 0})
    return fn.lower(params, batch).compile().as_text()


def shapes(text: str, *dims: int) -> int:
    """How many f32 arrays of exactly these per-device dims the compiled program names."""
    return len(re.findall(r"f32\[" + ",".join(map(str, dims)) + r"\]", text))


def test_tensor_parallel_layers_shard_their_activations():
    split = compiled_text(MESH.rules)
    # MLP hidden [B, L, 192] → [2, 12, 96] per device; q / k / v [B, L, 2, 24] → [2, 12, 1, 24].
    assert shapes(split, 2, 12, 96) > 0 and shapes(split, 2, 12, 192) == 0
    assert shapes(split, 2, 12, 1, 24) > 0 and shapes(split, 2, 12, 2, 24) == 0
    # The residual stream [B, L, 48] is split by rows only.
    assert shapes(split, 2, 12, 48) > 0

    # Activation rules that keep hidden units and heads whole: the weights are still split, so
    # their products come out split and are gathered to whole ones, which the program now holds.
    whole = compiled_text([(k, None) if k in ("act_mlp", "act_heads") else (k, v) for k, v in MESH.rules])
    assert shapes(whole, 2, 12, 192) > 0
    assert shapes(whole, 2, 12, 2, 24) > 0


def test_the_batch_axis_of_activations_follows_batch_axes():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="follows mesh.batch_axes"):
        MeshConfig(rules=[("batch", "data")])
    mesh = build_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    spec_for = activation_sharding(mesh, MESH.rules, ["data"])
    assert tuple(spec_for(("batch", "sequence", "act_mlp"), (8, 12, 192)).spec) == ("data", None, "tensor")
    assert tuple(spec_for(("batch", "act_heads"), (8, 3)).spec) == ("data",)  # 3 heads: not split
