"""Load a trained model from a run directory (``icrl train``'s checkpoints) onto one device."""

from __future__ import annotations

from pathlib import Path

import jax

from icrl.errors import IcrlError


def load_trained(run_dir: str | Path, step: int | None = None):
    """(model, experiment config, step) of a run's checkpoint (the latest when ``step`` is None).

    Only the parameters are read (``Checkpointer.restore_params``: not the optimizer state), in
    the shapes the run's resolved config gives; they land on the first local device.
    """
    from icrl.train.checkpoint import Checkpointer, abstract_with_shardings
    from icrl.train.config import load_experiment
    from icrl.train.state import ModelTemplate, init_state, make_optimizer

    run = Path(run_dir)
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise IcrlError(f"{run}: not a run directory (no config.yaml)")
    cfg = load_experiment(config_path)
    if not (run / "checkpoints").is_dir():  # checked first: opening a Checkpointer must create nothing
        raise IcrlError(f"{run}: no checkpoint in {run / 'checkpoints'} (the folder does not exist)")
    ckpt = Checkpointer(run / "checkpoints", read_only=True)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise IcrlError(f"{run}: no checkpoint in {run / 'checkpoints'}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise IcrlError(f"{run}: no checkpoint of step {step}; steps: {steps}")
        template = ModelTemplate(cfg.model)
        abstract = jax.eval_shape(lambda: init_state(template, make_optimizer(cfg.train), 0)).params
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        params = ckpt.restore_params(step, abstract_with_shardings(abstract, jax.tree.map(lambda _: device, abstract)))
    finally:
        ckpt.close()
    model = template.build(params)
    model.eval()
    return model, cfg, step
