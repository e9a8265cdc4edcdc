"""A sweep file: one experiment, the overrides its jobs share, the grid, their evaluation, the report.

    name: burstiness-cpu
    experiment: experiments/quickstart.yaml      # paths are relative to the working directory
    overrides: {train.steps: 200}                 # every job (typed YAML values)
    grid:                                         # the jobs are the product of the axes
      data.p_burst: [0.0, 0.6, 1.0]               # a config key and its values
      seed:                                       # or labelled points, each setting several keys
        "0": {seed: 0, data.seed: 0}
        "1": {seed: 1, data.seed: 1}
    exclude:                                      # points left out of the product (optional)
      - {data.p_burst: 0.6, seed: "1"}            # each entry drops the points matching all of it
    eval: {demos: data/quickstart/minihack-heldout-demos, shots: [0, 1], levels: 8}
    report: {x: data.p_burst, seeds: seed, metrics: [success, return]}
    resources: {executor: local, parallel: 1, pin_cpus: false, accelerator: auto}

A job is named after its point, ``p_burst=0.6,seed=1``; its run directory is
``<sweep_dir>/runs/<job>/``. ``icrl sweep CONFIG --grid key=v1,v2`` on a plain experiment config
makes the same kind of sweep without a file (training only).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from icrl.config import ConfigBase, ConfigError, parse_override, read_yaml, validate
from icrl.errors import IcrlError
from icrl.eval.methods import METHODS
from icrl.train.config import ExperimentConfig, load_experiment

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # a piece of a directory name


class EvalSpec(ConfigBase):
    """``icrl eval`` of each job's final checkpoint, with these flags (``icrl eval --help``)."""

    demos: str = Field(description="trajectory store with the held-out demos")
    suite: str = Field("minihack", description="task suite")
    split: str = Field("heldout", description="split of the suite")
    tasks: list[str] | None = Field(None, description="tasks instead of the split's")
    shots: list[int] = Field([0, 1], description="numbers of demos k (0 is needed for in-context gains)")
    levels: int = Field(20, ge=1, description="levels per task")
    episodes: int = Field(5, ge=1, description="rollouts per level and k")
    sticky: float = Field(0.2, ge=0.0, le=1.0, description="sticky-action probability")
    max_steps: int | None = Field(None, ge=1, description="step limit per episode (None: the env's)")
    methods: list[str] = Field(["icl"], description=f"subset of {', '.join(METHODS)}")
    greedy: bool = Field(False, description="arg-max actions instead of sampling")
    primary_k: int = Field(1, ge=0, description="the k declared as the headline result")
    seed: int = Field(0, description="seed of sticky actions and sampling (the same for every job)")
    level_batch: int | None = Field(None, ge=1, description="levels rolled out together")
    allow_train_levels: bool = Field(False, description="evaluate even on levels the training stores hold")

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; methods: {', '.join(METHODS)}")
        return methods

    @model_validator(mode="after")
    def _primary(self) -> EvalSpec:
        if self.primary_k not in self.shots:
            raise ValueError(f"primary_k={self.primary_k} is not one of shots {self.shots}")
        return self

    def argv(self, run: str | Path) -> list[str]:
        """``icrl eval`` arguments evaluating ``run``."""
        out = ["eval", str(run), "--demos", self.demos, "--suite", self.suite, "--split", self.split,
               "--shots", ",".join(map(str, self.shots)), "--levels", str(self.levels),
               "--episodes", str(self.episodes), "--sticky", str(self.sticky),
               "--methods", ",".join(self.methods), "--primary-k", str(self.primary_k), "--seed", str(self.seed)]
        if self.tasks:
            out += ["--tasks", *self.tasks]
        if self.max_steps is not None:
            out += ["--max-steps", str(self.max_steps)]
        if self.level_batch is not None:
            out += ["--level-batch", str(self.level_batch)]
        out += ["--greedy"] * self.greedy + ["--allow-train-levels"] * self.allow_train_levels
        return out


class ReportSpec(ConfigBase):
    """The table and plot across the grid (``icrl report SWEEP_DIR``)."""

    x: str | None = Field(None, description="grid axis along the x axis (None: the first that is not `seeds`)")
    seeds: str | None = Field("seed", description="grid axis of replicates: means and 95% CIs are over it")
    metrics: list[Literal["success", "return"]] = Field(
        ["success", "return"], min_length=1, description="metrics tabled; the first is the headline and the plot's")
    k: int | None = Field(None, ge=0, description="demos in context of the headline (None: eval.primary_k)")
    method: str = Field("icl", description="evaluated method the report compares")


class ResourcesSpec(ConfigBase):
    """Where the jobs run; ``icrl sweep`` flags override each field."""

    executor: Literal["local", "slurm"] = Field("local", description="local: this machine; slurm: SLURM")
    parallel: int = Field(1, ge=1, description="local executor: jobs running at a time")
    pin_cpus: bool = Field(False, description="local executor: each of the `parallel` slots runs on its own "
                                              "share of the launcher's CPUs (sched_setaffinity)")
    accelerator: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="gpu: GPUs required (a job that would run on CPU is refused); cpu: CPU only; "
                            "auto: gpu on SLURM, on this machine whatever JAX finds")
    nodes: int = Field(1, ge=1, description="nodes per job (one process per node drives its GPUs)")
    gpus_per_node: int | None = Field(None, ge=0, description="None: the mesh's devices / nodes (gpu)")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per task")
    timeout_min: int = Field(24 * 60, ge=1, description="time limit per job (SLURM: then requeued)")
    partition: str | None = Field(None, description="SLURM partition")
    slurm: dict[str, Any] = Field(default_factory=dict,
                                  description="more submitit SLURM parameters, e.g. {account: a, qos: q}")


Axis = list[Any] | dict[str, dict[str, Any]]


class SweepSpec(ConfigBase):
    """A whole sweep file."""

    name: str = Field(description="sweep name: its directory is <experiment run_dir>/sweeps/<name>")
    experiment: str = Field(description="experiment YAML every job starts from")
    sweep_dir: str | None = Field(None, description="the sweep's directory (None: <run_dir>/sweeps/<name>)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, for every job")
    grid: dict[str, Axis] = Field(description="axis -> values (a config key) or label -> {key: value}")
    exclude: list[dict[str, Any]] = Field(
        default_factory=list, description="points left out of the grid's product: each entry, axis -> value "
                                          "(or label), drops every point that has all of them")
    eval: EvalSpec | None = Field(None, description="evaluation after training (None: training only)")
    report: ReportSpec = Field(default_factory=ReportSpec, description="the grid's report")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="executor and hardware")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _LABEL.match(name):
            raise ValueError(f"sweep name {name!r} must be a plain directory name (letters, digits, ._+-)")
        return name

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, Axis]) -> dict[str, Axis]:
        if not grid:
            raise ValueError("the grid needs at least one axis")
        for axis, values in grid.items():
            if not values:
                raise ValueError(f"axis {axis!r} has no values")
            if isinstance(values, dict):
                for label in values:
                    if not _LABEL.match(str(label)):
                        raise ValueError(f"axis {axis!r}: label {label!r} must be a plain name (letters, digits, ._+-)")
            elif any(isinstance(v, (list, dict)) for v in values):
                raise ValueError(f"axis {axis!r}: a list or mapping value needs a label: write the axis as "
                                 f"label: {{key: value}} points")
            elif len({_label(v) for v in values}) != len(values):
                raise ValueError(f"axis {axis!r} repeats a value")
        return grid

    @model_validator(mode="after")
    def _exclusions(self) -> SweepSpec:
        for i, rule in enumerate(self.exclude):
            if not rule:
                raise ValueError(f"exclude[{i}] is empty (it would drop every point)")
            for axis, value in rule.items():
                if axis not in self.grid:
                    raise ValueError(f"exclude[{i}]: {axis!r} is not a grid axis ({', '.join(self.grid)})")
                labels = axis_labels(self.grid[axis])
                if _label(value) not in labels:
                    raise ValueError(f"exclude[{i}]: {axis}={value!r} is not one of the axis's values ({', '.join(labels)})")
        return self

    @model_validator(mode="after")
    def _report_axes(self) -> SweepSpec:
        for field in ("x", "seeds"):
            axis = getattr(self.report, field)
            if axis is not None and axis not in self.grid and not (field == "seeds" and axis == "seed"):
                raise ValueError(f"report.{field}={axis!r} is not a grid axis ({', '.join(self.grid)})")
        return self


def _label(value: Any) -> str:
    """A scalar grid value as job names spell it: YAML's spelling (0.6, true, null), '/' made '-'."""
    text = {True: "true", False: "false"}[value] if isinstance(value, bool) else "null" if value is None else str(value)
    return text.replace("/", "-").replace(" ", "")


def axis_labels(values: Axis) -> list[str]:
    """An axis's labels as job names spell them."""
    return [str(lb) for lb in values] if isinstance(values, dict) else [_label(v) for v in values]


def axis_key(axis: str) -> str:
    """The short name of an axis in job names: the last part of a dotted key."""
    return axis.split(".")[-1]


@dataclasses.dataclass(frozen=True)
class Point:
    """One job of the grid: its name, each axis's label, and the config values it sets."""

    name: str
    labels: dict[str, str]
    values: dict[str, tuple[str, Any]]  # dotted key -> (where it comes from, value)


def points(spec: SweepSpec, source: str) -> list[Point]:
    """Every point of the grid not excluded, in order (the last axis varies fastest)."""
    axes = []
    for axis, values in spec.grid.items():
        if isinstance(values, dict):
            axes.append([(axis, str(lb), {k: (f"{source}: grid.{axis}.{lb}.{k}", v) for k, v in (sets or {}).items()})
                         for lb, sets in values.items()])
        else:
            axes.append([(axis, _label(v), {axis: (f"{source}: grid.{axis} = {v!r}", v)}) for v in values])
    out = []
    for combo in itertools.product(*axes):
        labels = {axis: label for axis, label, _ in combo}
        if any(all(labels[axis] == _label(v) for axis, v in rule.items()) for rule in spec.exclude):
            continue
        values: dict[str, tuple[str, Any]] = {}
        for _, _, sets in combo:
            values.update(sets)
        name = ",".join(f"{axis_key(a)}={lb}" for a, lb in labels.items())
        out.append(Point(name=name, labels=labels, values=values))
    if not out:
        raise ConfigError(f"{source}: `exclude` leaves no point of the grid")
    if len({p.name for p in out}) != len(out):
        raise ConfigError(f"{source}: two grid points have the same name; give the axes distinct last key parts")
    return out


def load_sweep(path: str | Path) -> SweepSpec:
    """A sweep file; ConfigError names the file, key and value at fault."""
    return validate(SweepSpec, read_yaml(path), str(path))


def is_sweep_file(path: str | Path) -> bool:
    """Is this YAML a sweep file (has ``experiment`` and ``grid``) rather than an experiment config?"""
    data = read_yaml(path)
    return "experiment" in data and "grid" in data


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["train.lr=1e-4,3e-4", "seed=0,1"]`` -> {"train.lr": [1e-4, 3e-4], "seed": [0, 1]} (YAML values)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise IcrlError(f"--grid {item!r} is not of the form key=v1,v2,...")
        key, values = (part.strip() for part in item.split("=", 1))
        texts = [v.strip() for v in values.split(",")]
        if not key or not all(texts):
            raise IcrlError(f"--grid {item!r}: empty key or value")
        if key in grid:
            raise IcrlError(f"--grid names {key!r} twice")
        grid[key] = [parse_override(f"{key}={t}")[1] for t in texts]
    if not grid:
        raise IcrlError("icrl sweep CONFIG needs at least one --grid key=v1,v2,... (or a sweep file)")
    return grid


def spec_from_grid(config: str | Path, grid: dict[str, list[Any]]) -> SweepSpec:
    """The sweep of ``icrl sweep CONFIG --grid ...``: training only, named after the experiment."""
    base = load_experiment(config)
    return validate(SweepSpec, {"name": base.name, "experiment": str(config), "grid": grid,
                                "report": {"seeds": "seed" if "seed" in grid else None}}, f"{config} --grid")


def job_config(spec: SweepSpec, source: str, point: Point, sweep_dir: Path,
               cli_overrides: list[str]) -> ExperimentConfig:
    """The resolved experiment of one job: the experiment file, then the sweep's overrides, then
    the command line's ``--set``, then the point's values; named after the point, in the sweep."""
    values: dict[str, tuple[str, Any]] = {k: (f"{source}: overrides.{k}", v) for k, v in spec.overrides.items()}
    for text in cli_overrides:
        key, value = parse_override(text)
        values[".".join(key)] = (f"--set {text}", value)
    values.update(point.values)
    values["name"] = (f"{source}: job name", point.name)
    values["run_dir"] = (f"{source}: sweep directory", str(sweep_dir / "runs"))
    return load_experiment(spec.experiment, [], values)


def default_sweep_dir(spec: SweepSpec) -> Path:
    """``sweep_dir`` or <the experiment's run_dir>/sweeps/<name>."""
    if spec.sweep_dir:
        return Path(spec.sweep_dir)
    return Path(load_experiment(spec.experiment).run_dir) / "sweeps" / spec.name
