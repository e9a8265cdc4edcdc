"""icrl sweep: grid → validated runs, requeue semantics, and a real (debug-executor) sweep."""

from __future__ import annotations

import subprocess
import sys

import pytest

from icrl.config import ConfigError
from icrl.errors import IcrlError
from icrl.train.config import load_experiment
from icrl.train.metrics import read_jsonl
from icrl.train.sweep import TrainJob, parse_grid, sweep_runs

from test_train_config import make_store, tiny_config, write_config
from test_train_resume import env


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-sweep")
    cfg = tiny_config(make_store(tmp / "store"), tmp / "runs",
                      train={"steps": 2, "checkpoint_every": 2,
                             "compile_cache": str(tmp_path_factory.getbasetemp() / "xla-cache")})
    return write_config(tmp / "tiny.yaml", cfg)


def test_grid_gives_one_validated_run_per_point(config):
    grid = parse_grid(["train.lr=1e-4,3e-4", "seed=0,1"])
    assert grid == [("train.lr", ["1e-4", "3e-4"]), ("seed", ["0", "1"])]
    runs = sweep_runs(config, ["train.steps=5"], grid, load_experiment(config))
    assert [r.name for r in runs] == ["tiny-lr=1e-4,seed=0", "tiny-lr=1e-4,seed=1",
                                      "tiny-lr=3e-4,seed=0", "tiny-lr=3e-4,seed=1"]
    cfg = load_experiment(config, list(runs[3].overrides))
    assert (cfg.name, cfg.train.lr, cfg.seed, cfg.train.steps) == ("tiny-lr=3e-4,seed=1", 3e-4, 1, 5)
    with pytest.raises(ConfigError, match=r"train.lr = 'fast'"):
        sweep_runs(config, [], parse_grid(["train.lr=1e-4,fast"]), load_experiment(config))
    for bad in (["lr"], ["train.lr="], ["seed=1", "seed=2"], []):
        with pytest.raises(IcrlError):
            parse_grid(bad)


def test_a_preempted_job_is_requeued_with_the_same_arguments():
    job = TrainJob()
    resubmission = job.checkpoint("exp.yaml", ("name=a",))
    assert resubmission.function is job and resubmission.args == ("exp.yaml", ("name=a",))


def test_dry_run_prints_the_runs(config, capsys):
    from icrl.cli import main

    assert main(["sweep", str(config), "--grid", "seed=0,1", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == ["tiny-seed=0: seed=0 name=tiny-seed=0",
                                                   "tiny-seed=1: seed=1 name=tiny-seed=1"]


@pytest.mark.slow
def test_debug_sweep_trains_every_point(config):
    cmd = [sys.executable, "-m", "icrl.cli", "sweep", str(config), "--grid", "seed=0,1", "--executor", "debug"]
    out = subprocess.run(cmd, env=env(1), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = config.parent / "runs"
    losses = []
    for seed in (0, 1):
        records = read_jsonl(runs / f"tiny-seed={seed}" / "metrics.jsonl")
        assert records[-1]["event"] == "done" and records[-1]["step"] == 2
        losses.append(records[1]["loss"])
        assert (runs / f"tiny-seed={seed}" / "checkpoints" / "2").is_dir()
    assert losses[0] != losses[1]  # different seeds, different initialisations
    assert "tiny-seed=1: exit code 0" in out.stdout
