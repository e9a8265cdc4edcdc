"""The experiment config that ``icrl train`` reads: data, model, optimiser, mesh, distributed, metrics.

One YAML file per experiment (``experiments/*.yaml``), overridable from the command line with
``--set train.lr=3e-4``. Sections::

    name: tiny                 # the run lives in <run_dir>/<name>/
    seed: 0                    # parameter initialisation and dropout
    run_dir: runs
    data:    SequenceConfig    # icrl.data.sequences (bursty sequences, global batch size)
    model:   ModelConfig       # icrl.model.config (preset + overrides; dtype = compute dtype)
    train:   TrainConfig       # steps, AdamW + schedule, gradient accumulation, checkpoints, logging
    mesh:    MeshConfig        # device mesh (data, fsdp, tensor) and logical-axis rules
    distributed: DistributedConfig   # jax.distributed: auto (SLURM / TPU / Open MPI), explicit, off
    metrics: MetricsConfig     # TensorBoard, Weights & Biases, progress line

Mixed precision is the model's business: ``model.dtype: bfloat16`` computes in bf16 while
``model.param_dtype: float32`` keeps fp32 master weights (gradients and optimizer state follow the
parameters, so they are fp32 too).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from icrl.config import ConfigBase, load_config
from icrl.data.sequences import SequenceConfig
from icrl.eval.diagnostic import DiagnosticConfig
from icrl.model.axes import LOGICAL_AXES
from icrl.model.config import ModelConfig

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis, for parameters and activations. Matrices are split over `fsdp` along
# the residual stream (ZeRO-3 style) and over `tensor` along heads / MLP units (Megatron style);
# the stacked blocks' `layers` axis and every other logical axis (encoders, vocabulary, small
# tables) are replicated. Activations (icrl.model.axes.ACTIVATION_AXES) split their batch over
# mesh.batch_axes and their heads / MLP units over `tensor`, as the weights that make them.
# Dimensions a mesh axis does not divide are replicated too (``icrl.train.mesh``), so one table
# serves every mesh.
DEFAULT_RULES: list[tuple[str, str | list[str] | None]] = [
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", None),
    ("layers", None),
    ("sequence", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,-]*$")  # a plain directory name


class TrainConfig(ConfigBase):
    """Optimisation, checkpointing and logging of one run."""

    steps: int = Field(1000, ge=1, description="optimizer steps of the whole run (the schedule's length)")
    lr: float = Field(1e-4, gt=0.0, description="peak learning rate (study: 1e-4)")
    final_lr: float = Field(1e-6, ge=0.0, description="learning rate at the end of the cosine (study: 1e-6)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="cosine from lr to final_lr, or constant lr")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to lr over this many steps")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW decoupled weight decay, on matrices (ndim >= 2) only")
    b1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam beta1")
    b2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam beta2")
    eps: float = Field(1e-8, gt=0.0, description="Adam epsilon")
    grad_clip: float | None = Field(1.0, gt=0.0, description="clip gradients to this global norm (None: no clipping)")
    grad_accum: int = Field(1, ge=1, description="microbatches per step: data.batch_size is split into this many")
    checkpoint_every: int = Field(500, ge=1, description="save a checkpoint every this many steps (and at the end)")
    keep: int = Field(3, ge=1, description="checkpoints kept on disk (the newest)")
    async_checkpoint: bool = Field(True, description="write checkpoints in the background while training continues")
    log_every: int = Field(10, ge=1, description="write metrics every this many steps")
    compile_cache: str | None = Field(
        None, description="persistent XLA compilation cache directory, shared by runs and resumes (None: off)")

    @model_validator(mode="after")
    def _schedule(self) -> TrainConfig:
        if self.warmup_steps >= self.steps and self.schedule == "cosine":
            raise ValueError(f"warmup_steps={self.warmup_steps} leaves no cosine steps of steps={self.steps}")
        if self.final_lr > self.lr:
            raise ValueError(f"final_lr={self.final_lr} is above lr={self.lr}")
        return self


Rule = tuple[str, str | list[str] | None]


class MeshConfig(ConfigBase):
    """Device mesh ``(data, fsdp, tensor)`` and how logical parameter axes map onto it."""

    data: int = Field(-1, description="data-parallel axis size (-1: the devices the other axes leave)")
    fsdp: int = Field(1, description="fully-sharded data-parallel axis size (parameters split, batch split)")
    tensor: int = Field(1, description="tensor-parallel axis size (heads / MLP units split)")
    batch_axes: list[str] = Field(["data", "fsdp"], description="mesh axes the batch dimension is split over")
    rules: list[Rule] = Field(
        default_factory=lambda: list(DEFAULT_RULES),
        description="[logical axis, mesh axis | [mesh axes] | null] pairs; unnamed logical axes are replicated",
    )

    @field_validator("data", "fsdp", "tensor")
    @classmethod
    def _size(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError(f"mesh axis size must be >= 1 or -1 (take the remaining devices), got {v}")
        return v

    @field_validator("batch_axes")
    @classmethod
    def _batch_axes(cls, axes: list[str]) -> list[str]:
        for a in axes:
            if a not in MESH_AXES:
                raise ValueError(f"batch axis {a!r} is no mesh axis; mesh axes: {', '.join(MESH_AXES)}")
        if len(set(axes)) != len(axes):
            raise ValueError(f"batch_axes {axes} repeat an axis")
        return axes

    @field_validator("rules")
    @classmethod
    def _rules(cls, rules: list[Rule]) -> list[Rule]:
        seen = set()
        for i, (logical, target) in enumerate(rules):
            if logical not in LOGICAL_AXES:
                raise ValueError(f"rules[{i}] names unknown logical axis {logical!r}; "
                                 f"logical axes: {', '.join(LOGICAL_AXES)}")
            if logical in seen:
                raise ValueError(f"rules[{i}]: logical axis {logical!r} has a rule already")
            if logical == "batch":
                raise ValueError(f"rules[{i}]: the batch axis of activations follows mesh.batch_axes; set that instead")
            seen.add(logical)
            for axis in [] if target is None else [target] if isinstance(target, str) else target:
                if axis not in MESH_AXES:
                    raise ValueError(f"rules[{i}] ({logical!r} -> {target!r}) names unknown mesh axis {axis!r}; "
                                     f"mesh axes: {', '.join(MESH_AXES)}")
        return rules

    @model_validator(mode="after")
    def _one_free_axis(self) -> MeshConfig:
        if [self.data, self.fsdp, self.tensor].count(-1) > 1:
            raise ValueError("at most one mesh axis may be -1")
        return self

    def sizes(self) -> dict[str, int]:
        """Configured sizes by axis name (-1 not yet resolved)."""
        return {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}


class DistributedConfig(ConfigBase):
    """How the processes of a multi-host run find each other (``jax.distributed.initialize``)."""

    mode: Literal["auto", "explicit", "off"] = Field(
        "auto", description="auto: SLURM / TPU pod / Open MPI if detected, else one process; "
                            "explicit: the fields below; off: one process")
    coordinator_address: str | None = Field(None, description="host:port of process 0 (explicit mode)")
    num_processes: int | None = Field(None, ge=1, description="number of processes (explicit mode)")
    process_id: int | None = Field(None, ge=0, description="this process's id in [0, num_processes) (explicit mode)")
    local_device_ids: list[int] | None = Field(None, description="devices this process uses (None: all visible)")
    initialization_timeout: int = Field(300, ge=1, description="seconds to wait for every process to join")
    cpu_collectives: Literal["gloo", "mpi"] = Field("gloo", description="cross-process collectives on CPU")

    @model_validator(mode="after")
    def _explicit(self) -> DistributedConfig:
        if self.mode == "explicit":
            missing = [k for k in ("coordinator_address", "num_processes", "process_id") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"explicit mode needs {', '.join(missing)}")
            if self.process_id >= self.num_processes:
                raise ValueError(f"process_id={self.process_id} is not below num_processes={self.num_processes}")
        return self


class MetricsConfig(ConfigBase):
    """Where metrics go besides ``metrics.jsonl`` (always written)."""

    tensorboard: bool = Field(True, description="write TensorBoard event files to <run>/tb/")
    wandb: bool = Field(False, description="log to Weights & Biases (needs the wandb package)")
    wandb_project: str = Field("icrl", description="W&B project")
    wandb_entity: str | None = Field(None, description="W&B entity (None: your default)")
    progress: bool = Field(True, description="a live progress line (step, loss, tokens/s, ETA) on stderr")


class ExperimentConfig(ConfigBase):
    """Everything one ``icrl train`` run needs; saved resolved as ``<run>/config.yaml``."""

    name: str = Field("run", description="run name: the run directory is <run_dir>/<name>")
    seed: int = Field(0, description="seed of parameter initialisation and dropout")
    run_dir: str = Field("runs", description="root folder of run directories")
    data: SequenceConfig = Field(default_factory=SequenceConfig, description="training sequences (icrl.data)")
    model: ModelConfig = Field(default_factory=ModelConfig, description="model preset and overrides (icrl.model)")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation and checkpoints")
    mesh: MeshConfig = Field(default_factory=MeshConfig, description="device mesh and sharding rules")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig, description="multi-host setup")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="metrics sinks")
    diagnostic: DiagnosticConfig = Field(default_factory=DiagnosticConfig,
                                         description="in-context diagnostic logged while training (icrl.eval)")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"run name {name!r} must be a plain directory name (letters, digits, ._+=,-)")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.data.reward_tokens != self.model.reward_tokens:
            raise ValueError(f"data.reward_tokens={self.data.reward_tokens} and model.reward_tokens="
                             f"{self.model.reward_tokens} must agree")
        if self.data.recall != self.model.recall:
            raise ValueError(f"data.recall={self.data.recall!r} and model.recall={self.model.recall!r} must agree")
        if self.model.recall == "cell" and self.model.domain != "nethack":
            raise ValueError(f"model.recall='cell' needs the tty cursor (domain nethack), not {self.model.domain!r}; "
                             "use 'screen'")
        tokens = self.data.context_steps * self.model.tokens_per_step
        if tokens > self.model.max_tokens:
            raise ValueError(f"data.context_steps={self.data.context_steps} makes {tokens} tokens, more than "
                             f"model.max_tokens={self.model.max_tokens}")
        if self.data.batch_size % self.train.grad_accum:
            raise ValueError(f"data.batch_size={self.data.batch_size} does not split into "
                             f"train.grad_accum={self.train.grad_accum} microbatches")
        return self

    @property
    def path(self) -> Path:
        """The run directory."""
        return Path(self.run_dir) / self.name


# Fields a resumed run may change: where and how often things are written, the device layout
# (checkpoints are restored onto any mesh), and train.steps (to extend a run: the cosine is then
# stretched to the new length from the resumed step on, so that run is not bit-identical to one
# configured with the new length from the start).
RESUMABLE_CHANGES: tuple[str, ...] = (
    "run_dir", "train.steps", "train.checkpoint_every", "train.keep", "train.async_checkpoint",
    "train.log_every", "train.compile_cache", "mesh", "distributed", "metrics", "diagnostic", "data.worker_count",
)


def load_experiment(path: str | Path, overrides: list[str] = (),
                    values: dict[str, tuple[str, object]] | None = None) -> ExperimentConfig:
    """Read an experiment YAML plus ``key.sub=value`` overrides and typed flag ``values`` (see
    ``icrl.config.load_config``); ConfigError names file, key, value."""
    return load_config(ExperimentConfig, path, overrides, values)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``model_dump(mode="json")``)."""
    out = []
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, dotted + ".")
        elif a != b:
            out.append(dotted)
    return out


def forbidden_changes(old: dict, new: dict) -> list[str]:
    """Keys that differ and may not change when a run resumes (see ``RESUMABLE_CHANGES``)."""
    return [k for k in config_differences(old, new)
            if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)]
