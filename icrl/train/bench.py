"""Training throughput: tokens/s of the jitted train step of a preset on a pipeline's batches.

Used by ``benchmarks/pipeline_throughput.py`` to compare the input pipeline with training. The
step is the one ``icrl train`` runs (same state, shardings, donation), on a data-parallel mesh over
the local devices that divide the batch; bf16 compute on GPU/TPU, fp32 on CPU. Batches are loaded
and put on the devices before the clock starts, and the first (compiling) step is not timed.
"""

from __future__ import annotations

import math
import time

from icrl.data.sequences import SequenceConfig


def train_step_rate(seq_cfg: SequenceConfig, preset: str, steps: int) -> float:
    """Tokens/s (padding included) of ``steps`` training steps of model ``preset`` on batches of
    ``seq_cfg`` (global batch ``seq_cfg.batch_size``), compilation excluded."""
    import jax
    import numpy as np

    from icrl.data.pipeline import SequenceSource, make_loader
    from icrl.model.config import preset as model_preset
    from icrl.train.config import MeshConfig, TrainConfig
    from icrl.train.mesh import batch_sharding, build_mesh, gathered, global_batch, param_shardings, replicated
    from icrl.train.state import ModelTemplate, init_state, learning_rate, make_optimizer, state_shardings
    from icrl.train.step import device_batch, make_train_step

    source = SequenceSource(seq_cfg)
    accelerator = jax.default_backend() != "cpu"
    model_cfg = model_preset(
        preset, domain=source.domain, reward_tokens=seq_cfg.reward_tokens,
        max_tokens=max(2048, seq_cfg.context_steps * (3 if seq_cfg.reward_tokens else 2)),
        dtype="bfloat16" if accelerator else "float32")
    devices = jax.local_devices()
    devices = devices[: math.gcd(len(devices), seq_cfg.batch_size)]
    mesh_cfg = MeshConfig(data=len(devices))
    mesh = build_mesh(mesh_cfg, devices)
    train_cfg = TrainConfig(steps=steps + 1)
    template = ModelTemplate(model_cfg)
    tx = make_optimizer(train_cfg)
    abstract = jax.eval_shape(lambda s: init_state(template, tx, s), np.int32(0))
    params_sh, _ = param_shardings(template.abstract_params, mesh_cfg.rules, mesh)
    shardings = state_shardings(abstract, params_sh, tx, replicated(mesh))
    state = jax.jit(lambda s: init_state(template, tx, s), out_shardings=shardings)(np.int32(0))
    batch_sh = batch_sharding(mesh, mesh_cfg.batch_axes)
    step = jax.jit(make_train_step(template, tx, learning_rate(train_cfg), micro_sharding=batch_sh,
                                   compute_shardings=gathered(params_sh)),
                   in_shardings=(shardings, batch_sh), out_shardings=(shardings, replicated(mesh)),
                   donate_argnums=0)
    it = iter(make_loader(seq_cfg, source=source))
    batches = [global_batch(device_batch(next(it)), batch_sh, seq_cfg.batch_size) for _ in range(min(steps, 4))]
    state, metrics = step(state, batches[0])  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    tokens = steps * seq_cfg.batch_size * seq_cfg.context_steps * model_cfg.tokens_per_step
    return tokens / seconds
