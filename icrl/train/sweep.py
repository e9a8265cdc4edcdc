"""``icrl sweep``: a grid of ``icrl train`` runs launched through submitit (SLURM, local or debug).

Each point of the grid (the product of the ``--grid key=v1,v2`` lists) is one run with its own run
directory ``<run_dir>/<name>-<key>=<value>,...``: the base config plus that point's overrides. Every
run's config is validated before anything is submitted.

A job runs ``train(config, resume=True)``: it starts fresh when its run has no checkpoint and
continues from the newest one otherwise. ``TrainJob`` is a submitit ``Checkpointable``: when SLURM
preempts or times out the job, submitit requeues it with the same arguments, and the requeued job
resumes — losing at most the last checkpoint interval. Multi-node jobs (``--nodes N``) run one
process per node that drives all the node's GPUs; ``icrl train`` reads the SLURM environment to
join them (``jax.distributed``).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import submitit

from icrl.config import parse_override
from icrl.errors import IcrlError
from icrl.train.config import ExperimentConfig, load_experiment


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One point of the grid: its run name and the overrides (base ones first) that make it."""

    name: str
    overrides: tuple[str, ...]


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["train.lr=1e-4,3e-4", "seed=0,1"]`` → [("train.lr", ["1e-4", "3e-4"]), ("seed", ["0", "1"])]."""
    grid = []
    for item in items:
        if "=" not in item:
            raise IcrlError(f"--grid {item!r} is not of the form key=v1,v2,...")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(",")]
        if not key.strip() or not all(vals):
            raise IcrlError(f"--grid {item!r}: empty key or value")
        if key in dict(grid):
            raise IcrlError(f"--grid names {key!r} twice")
        grid.append((key.strip(), vals))
    if not grid:
        raise IcrlError("icrl sweep needs at least one --grid key=v1,v2,...")
    return grid


def _short(key: str, value: str) -> str:
    return f"{key.split('.')[-1]}={value}".replace("/", "-")


def sweep_runs(config_path: str | Path, overrides: list[str], grid: list[tuple[str, list[str]]],
               base: ExperimentConfig) -> list[SweepRun]:
    """The runs of the grid, each validated (ConfigError names the bad point) before any launch."""
    runs = []
    keys = [k for k, _ in grid]
    for values in itertools.product(*(v for _, v in grid)):
        point = [f"{k}={v}" for k, v in zip(keys, values)]
        for text in point:
            parse_override(text)
        name = f"{base.name}-" + ",".join(_short(k, v) for k, v in zip(keys, values))
        run = SweepRun(name=name, overrides=(*overrides, *point, f"name={name}"))
        load_experiment(config_path, list(run.overrides))
        runs.append(run)
    if len({r.name for r in runs}) != len(runs):
        raise IcrlError("two grid points give the same run name; make the swept values distinct")
    return runs


class TrainJob(submitit.helpers.Checkpointable):
    """``icrl train CONFIG --set ... --resume`` as a requeueable submitit job; returns the exit code."""

    def __call__(self, config_path: str, overrides: tuple[str, ...]) -> int:
        from icrl.train.loop import train

        return train(load_experiment(config_path, list(overrides)), resume=True)


def make_executor(kind: str, folder: Path, *, partition: str | None, nodes: int, gpus_per_node: int,
                  cpus_per_task: int | None, timeout_min: int, name: str) -> submitit.Executor:
    """A submitit executor: ``auto`` (SLURM if there, else local), ``slurm``, ``local`` or ``debug``."""
    cluster = None if kind == "auto" else kind
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except (RuntimeError, ValueError) as err:
        raise IcrlError(f"--executor {kind}: {err}") from None
    params: dict[str, Any] = dict(name=name, timeout_min=timeout_min, nodes=nodes, tasks_per_node=1,
                                  gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task)
    if executor.cluster == "slurm":
        if partition:
            params["slurm_partition"] = partition
    elif partition:
        raise IcrlError(f"--slurm-partition given, but the executor is {executor.cluster!r}, not slurm")
    if executor.cluster != "slurm" and nodes != 1:
        raise IcrlError(f"--nodes {nodes} needs the slurm executor (got {executor.cluster!r})")
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def launch(runs: list[SweepRun], config_path: str | Path, base: ExperimentConfig, *, executor: str = "auto",
           partition: str | None = None, nodes: int = 1, gpus_per_node: int = 0, cpus_per_task: int | None = None,
           timeout_min: int = 60 * 24, folder: str | Path | None = None) -> list[submitit.Job]:
    """Submit one TrainJob per run; submitit's logs go to ``folder`` (default <run_dir>/<name>-sweep/)."""
    folder = Path(folder) if folder else Path(base.run_dir) / f"{base.name}-sweep"
    ex = make_executor(executor, folder / "%j", partition=partition, nodes=nodes, gpus_per_node=gpus_per_node,
                       cpus_per_task=cpus_per_task, timeout_min=timeout_min, name=f"icrl-{base.name}")
    config_path = str(Path(config_path).absolute())
    if ex.cluster != "slurm":
        return [ex.submit(TrainJob(), config_path, run.overrides) for run in runs]
    with ex.batch():  # one SLURM job array
        jobs = [ex.submit(TrainJob(), config_path, run.overrides) for run in runs]
    return jobs
