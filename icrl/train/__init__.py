"""Training: mesh + partition rules, pure train step, loop, checkpoints, distributed start-up.

Modules (each one job): ``config`` (ExperimentConfig and its sections), ``distributed``
(jax.distributed from SLURM / TPU / flags), ``mesh`` (mesh, rule table → shardings, global
batches), ``state`` (TrainState, optimiser, functional model), ``step`` (the pure train step),
``checkpoint`` (Orbax), ``metrics`` (jsonl, TensorBoard, W&B, progress), ``loop`` (``icrl train``,
read top to bottom), ``sweep`` (``icrl sweep`` via submitit), ``bench`` (training throughput),
``commands`` (CLI). Submodules import jax; this ``__init__`` stays light.
"""
