"""icrl train: config schema, and bad input rejected with a clear error before any compilation.

Also the helpers the other ``test_train_*`` modules share: a small synthetic MiniHack store, a tiny
experiment config, and running ``icrl train`` in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icrl.config import ConfigError
from icrl.store.reader import TrajectoryStore
from icrl.data.synthetic import write_synthetic
from icrl.train.config import ExperimentConfig, forbidden_changes, load_experiment

REPO = Path(__file__).resolve().parents[1]
TASK = "MiniHack-MazeWalk-9x9-v0"

# Far below the 1M preset: compile time dominates these tests on CPU.
TINY_MODEL = dict(preset="1M", num_layers=1, d_model=16, num_heads=2, char_dim=2, color_dim=2, crop_channels=2,
                  map_channels=2, tty_features=4, tty_hidden=8, max_tokens=24, max_timestep=16, dropout=0.1)


def make_store(path: Path, levels: int = 6, episodes: int = 2) -> Path:
    """A synthetic MiniHack store: ``levels`` x ``episodes`` episodes of 5..20 steps."""
    TrajectoryStore.create(path)
    specs = [("nethack", TASK, lv, ep, 5 + (lv * 5 + ep * 3) % 16) for lv in range(levels) for ep in range(episodes)]
    write_synthetic(path, "w", specs)
    return path


def tiny_config(store: Path, run_dir: Path, **sections) -> dict:
    """A complete experiment config (dict) on ``store``; ``sections`` update its sections."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "run_dir": str(run_dir),
        "data": {"sources": [{"path": str(store)}], "episodes_per_sequence": 2, "context_steps": 12,
                 "batch_size": 4, "p_burst": 1.0, "seed": 1},
        "model": dict(TINY_MODEL),
        "train": {"steps": 8, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 1},
        "mesh": {"data": -1},
        "metrics": {"progress": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_env(devices: int) -> dict:
    """Environment of an ``icrl train`` subprocess with ``devices`` emulated CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def icrl_train(args: list[str], devices: int = 2, **popen) -> subprocess.Popen:
    """Start ``icrl train ARGS`` in a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "icrl.cli", "train", *args], env=train_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("train-config") / "store")


# -- schema --------------------------------------------------------------------------------------


def test_defaults_follow_the_study_and_round_trip(tmp_path, store):
    cfg = ExperimentConfig.model_validate(tiny_config(store, tmp_path))
    defaults = ExperimentConfig()
    assert (defaults.train.lr, defaults.train.final_lr, defaults.train.schedule) == (1e-4, 1e-6, "cosine")
    assert defaults.model.dropout == 0.2 and defaults.model.param_dtype == "float32"
    assert (defaults.mesh.data, defaults.mesh.fsdp, defaults.mesh.tensor) == (-1, 1, 1)
    path = write_config(tmp_path / "c.yaml", cfg.model_dump(mode="json"))
    assert load_experiment(path) == cfg
    assert load_experiment(path, ["train.lr=3e-4", "mesh.rules=[[embed, tensor]]"]).train.lr == 3e-4


@pytest.mark.parametrize("override, message", [
    ("mesh.rules=[[embed, model]]", r"unknown mesh axis 'model'"),
    ("mesh.rules=[[embedding, fsdp]]", r"unknown logical axis 'embedding'"),
    ("mesh.rules=[[embed, fsdp], [embed, tensor]]", r"'embed' has a rule already"),
    ("mesh.batch_axes=[data, pipeline]", r"batch axis 'pipeline' is no mesh axis"),
    ("mesh.data=0", r"mesh.data = 0"),
    ("mesh.fsdp=-1", r"at most one mesh axis may be -1"),
    ("train.grad_accum=3", r"batch_size=4 does not split into train.grad_accum=3"),
    ("data.context_steps=13", r"26 tokens, more than model.max_tokens=24"),
    ("model.reward_tokens=true", r"reward_tokens"),
    ("train.schedule=linear", r"train.schedule = 'linear'"),
    ("name=a/b", r"plain directory name"),
    ("distributed.mode=explicit", r"explicit mode needs coordinator_address, num_processes, process_id"),
    ("train.stpes=3", r"unknown key 'train.stpes'"),
])
def test_bad_config_values_are_named(tmp_path, store, override, message):
    path = write_config(tmp_path / "c.yaml", tiny_config(store, tmp_path))
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path, [override])
    assert str(path) in str(err.value)


def test_resume_may_change_only_operational_fields(tmp_path, store):
    old = ExperimentConfig.model_validate(tiny_config(store, tmp_path)).model_dump(mode="json")
    new = ExperimentConfig.model_validate(tiny_config(
        store, tmp_path, train={"steps": 20, "checkpoint_every": 2}, mesh={"data": 1, "fsdp": -1})).model_dump(mode="json")
    assert forbidden_changes(old, new) == []
    bad = ExperimentConfig.model_validate(tiny_config(store, tmp_path, train={"lr": 0.5}, seed=3)).model_dump(mode="json")
    assert forbidden_changes(old, bad) == ["seed", "train.lr"]


# -- bad input through the CLI: exit 2, a clear message, nothing compiled or written ------------------


@pytest.fixture
def compiles():
    """Count XLA compilations from here on (jax.monitoring records one event per backend compile)."""
    import jax

    events: list[str] = []
    state = {"on": True}

    def listener(event: str, duration: float, **kwargs) -> None:
        if state["on"] and "backend_compile" in event:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    state["on"] = False


@pytest.mark.parametrize("overrides, message", [
    (["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=1"], r"mesh data=2 x fsdp=2 x tensor=1 has 4 devices, but 8 devices"),
    (["mesh.data=-1", "mesh.tensor=3"], r"need a multiple of 3 devices, but 8"),
    (["mesh.data=4", "mesh.fsdp=2", "data.batch_size=6"], r"batch_size=6 .* do not split over the batch axes "
                                                           r"data=4 x fsdp=2 \(8 shards\)"),
    (["mesh.data=8", "data.batch_size=16", "train.grad_accum=4"], r"make data.batch_size a multiple of 32"),
    (["data.sources=[{path: /nonexistent/store}]"], r"data.sources\[0\] \(/nonexistent/store\)"),
])
def test_bad_input_fails_before_compiling(tmp_path, store, capsys, compiles, overrides, message):
    from icrl.cli import main

    path = write_config(tmp_path / "c.yaml", tiny_config(store, tmp_path / "runs", mesh={"data": 8},
                                                         data={"batch_size": 8}))
    code = main(["train", str(path), *sum((["--set", o] for o in overrides), [])])
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert compiles == []
    assert not (tmp_path / "runs" / "tiny" / "config.yaml").exists()


def test_existing_run_needs_resume(tmp_path, store, capsys):
    from icrl.cli import main

    path = write_config(tmp_path / "c.yaml", tiny_config(store, tmp_path / "runs"))
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert main(["train", str(path)]) == 2
    assert "already exists: pass --resume" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'  # nothing lost


def test_wandb_asked_for_but_missing_is_bad_input(tmp_path, store, capsys, compiles):
    import importlib.util

    from icrl.cli import main

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    path = write_config(tmp_path / "c.yaml", tiny_config(store, tmp_path / "runs", mesh={"data": 8},
                                                         data={"batch_size": 8}))
    assert main(["train", str(path), "--set", "metrics.wandb=true"]) == 2
    assert "wandb package is not installed" in capsys.readouterr().err
    assert compiles == []


def test_schedule_warms_up_then_cosines_to_the_final_rate():
    from icrl.train.config import TrainConfig
    from icrl.train.state import learning_rate

    lr = learning_rate(TrainConfig(steps=100, lr=1e-4, final_lr=1e-6, warmup_steps=10))
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(5e-5)
    assert float(lr(10)) == pytest.approx(1e-4) and float(lr(100)) == pytest.approx(1e-6)
    assert float(lr(55)) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2, rel=1e-4)
    study = learning_rate(TrainConfig(steps=100))  # the study: 1e-4 cosine to 1e-6, no warm-up
    assert float(study(0)) == pytest.approx(1e-4) and float(study(100)) == pytest.approx(1e-6)
    assert float(learning_rate(TrainConfig(steps=10, schedule="constant", lr=3e-4))(7)) == pytest.approx(3e-4)


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
      "SLURM_LOCALID": "0"}, "slurm"),
    ({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
      "SLURM_LOCALID": "0"}, None),  # a one-task job is one process
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}, None),  # sbatch shell, not an srun step
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "ompi"),
    ({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "a"}, None),
])
def test_cluster_detection(env, expected):
    import importlib.util

    from icrl.train.distributed import detect_cluster

    if expected is None and importlib.util.find_spec("libtpu") is not None:
        pytest.skip("libtpu is installed: a TPU VM is assumed")
    assert detect_cluster(env) == expected


def test_one_process_without_a_cluster_or_coordinator():
    from icrl.train.config import DistributedConfig
    from icrl.train.distributed import initialize

    assert initialize(DistributedConfig(mode="off")).process_count == 1
    if os.environ.get("SLURM_NTASKS", "1") == "1" and os.environ.get("OMPI_COMM_WORLD_SIZE", "1") == "1":
        info = initialize(DistributedConfig())
        assert (info.how, info.process_index, info.process_count) == ("single", 0, 1)


def test_seeds_train_one_run_per_seed_with_shifted_seeds(tmp_path, store):
    from icrl.cli import build_parser
    from icrl.train.commands import _config

    path = write_config(tmp_path / "c.yaml", tiny_config(store, tmp_path))
    args = build_parser().parse_args(["train", str(path), "--seeds", "3", "--set", "seed=5", "--name", "qs"])
    runs = [_config(args, i) for i in range(3)]
    assert [c.name for c in runs] == ["qs-seed0", "qs-seed1", "qs-seed2"]
    assert [c.seed for c in runs] == [5, 6, 7]
    assert [c.data.seed for c in runs] == [runs[0].data.seed + i for i in range(3)]
    assert runs[0].model == runs[2].model and runs[0].train == runs[2].train  # only the seeds differ
