"""Training throughput: the jitted step ``icrl train`` runs (same state, shardings, donation), timed.

Used by ``benchmarks/pipeline_throughput.py`` (training on a pipeline's batches) and
``benchmarks/gpu_bench.py`` (MFU on synthetic batches). The mesh is data-parallel over the given
devices (default: the local devices that divide the batch). Batches are put on the devices before
the clock starts; the first (compiling) step is timed apart.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

from icrl.data.sequences import SequenceConfig
from icrl.model.config import ModelConfig


@dataclasses.dataclass
class TrainStep:
    """A sharded train state and its jitted step; ``run(batch)`` advances the state."""

    state: Any
    step: Any  # jitted (state, batch) -> (state, metrics), donating the state
    batch_sharding: Any
    rows: int

    def put(self, batch: dict) -> dict:
        """A host batch (numpy [rows, ...]; the model's keys and ``loss_mask``) on the devices."""
        from icrl.train.mesh import global_batch
        from icrl.train.step import device_batch

        return global_batch(device_batch(batch), self.batch_sharding, self.rows)

    def run(self, batch: dict) -> Any:
        self.state, metrics = self.step(self.state, batch)
        return metrics

    def compile(self, batch: dict) -> tuple[float, Any]:
        """(seconds, XLA's memory analysis or None) of compiling the step for ``batch``'s shapes;
        later steps run the compiled program (so batches must keep those shapes)."""
        start = time.perf_counter()
        compiled = self.step.lower(self.state, batch).compile()
        seconds = time.perf_counter() - start
        self.step = compiled  # calling the jitted function would compile it once more
        try:
            memory = compiled.memory_analysis()
        except Exception:  # not every backend reports it
            memory = None
        return seconds, memory


def make_train_step(model_cfg: ModelConfig, rows: int, devices: list | None = None, steps: int = 1000) -> TrainStep:
    """The train state of ``model_cfg`` (fresh parameters) and its jitted step on batches of ``rows``."""
    import jax
    import numpy as np

    from icrl.train.config import MeshConfig, TrainConfig
    from icrl.train.mesh import batch_sharding, build_mesh, gathered, param_shardings, replicated
    from icrl.train.state import ModelTemplate, init_state, learning_rate, make_optimizer, state_shardings
    from icrl.train.step import make_train_step as train_step_fn

    devices = devices or jax.local_devices()
    devices = devices[: math.gcd(len(devices), rows)]
    mesh_cfg = MeshConfig(data=len(devices))
    mesh = build_mesh(mesh_cfg, devices)
    train_cfg = TrainConfig(steps=steps)
    template = ModelTemplate(model_cfg)
    tx = make_optimizer(train_cfg)
    abstract = jax.eval_shape(lambda s: init_state(template, tx, s), np.int32(0))
    params_sh, _ = param_shardings(template.abstract_params, mesh_cfg.rules, mesh)
    shardings = state_shardings(abstract, params_sh, tx, replicated(mesh))
    state = jax.jit(lambda s: init_state(template, tx, s), out_shardings=shardings)(np.int32(0))
    batch_sh = batch_sharding(mesh, mesh_cfg.batch_axes)
    step = jax.jit(train_step_fn(template, tx, learning_rate(train_cfg), micro_sharding=batch_sh,
                                 compute_shardings=gathered(params_sh)),
                   in_shardings=(shardings, batch_sh), out_shardings=(shardings, replicated(mesh)),
                   donate_argnums=0)
    return TrainStep(state, step, batch_sh, rows)


def best_interleaved(calls: dict[str, Callable[[], Any]], iters: int) -> dict[str, float]:
    """Best seconds of each call over ``iters`` rounds that run every call once in turn (A, B, A,
    B, ...), after one untimed round (compilation, warm-up). A machine whose speed drifts within
    minutes (this project's CPU) then slows every call alike, and their ratio holds."""
    import jax

    for call in calls.values():
        jax.block_until_ready(call())
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(iters):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def time_steps(train: TrainStep, batches: list[dict], steps: int) -> float:
    """Seconds per step over ``steps`` steps cycling through ``batches`` (already on the devices),
    after one untimed step (compilation, warm-up)."""
    import jax

    jax.block_until_ready(train.run(batches[0]))
    start = time.perf_counter()
    for i in range(steps):
        metrics = train.run(batches[i % len(batches)])
    jax.block_until_ready((train.state, metrics))
    return (time.perf_counter() - start) / steps


def train_step_rate(seq_cfg: SequenceConfig, preset: str, steps: int) -> float:
    """Tokens/s (padding included) of ``steps`` training steps of model ``preset`` on batches of
    ``seq_cfg`` (global batch ``seq_cfg.batch_size``), compilation excluded; bf16 compute on
    GPU/TPU, fp32 on CPU."""
    import jax

    from icrl.data.pipeline import SequenceSource, make_loader
    from icrl.model.config import preset as model_preset

    source = SequenceSource(seq_cfg)
    accelerator = jax.default_backend() != "cpu"
    model_cfg = model_preset(
        preset, domain=source.domain, reward_tokens=seq_cfg.reward_tokens,
        max_tokens=max(2048, seq_cfg.context_steps * (3 if seq_cfg.reward_tokens else 2)),
        dtype="bfloat16" if accelerator else "float32")
    train = make_train_step(model_cfg, seq_cfg.batch_size, steps=steps + 1)
    with iter(make_loader(seq_cfg, source=source)) as it:
        batches = [train.put(next(it)) for _ in range(min(steps, 4))]
    seconds = time_steps(train, batches, steps)
    return seq_cfg.batch_size * seq_cfg.context_steps * model_cfg.tokens_per_step / seconds
