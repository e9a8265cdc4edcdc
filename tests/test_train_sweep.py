"""icrl sweep: sweep files → validated jobs, the ablation files, GPU sweeps refused without GPUs,
and the preemption handler that defers submitit's until the checkpoint is saved."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from icrl.cli import main
from icrl.config import ConfigError
from icrl.errors import IcrlError
from icrl.sweep.launch import gpus_per_node, plan, run_sweep, slot_cpus
from icrl.sweep.spec import ResourcesSpec, job_config, load_sweep, parse_grid, points
from icrl.train.loop import Preemption

from test_train_config import REPO, make_store, tiny_config, write_config


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train-sweep")
    return write_config(tmp / "tiny.yaml", tiny_config(make_store(tmp / "store"), tmp / "runs"))


def sweep_file(path: Path, experiment: Path, **fields) -> Path:
    data = {"name": "s", "experiment": str(experiment), "sweep_dir": str(path.parent / "sweep"),
            "grid": {"data.p_burst": [0.0, 0.6, 1.0], "seed": {"0": {"seed": 0, "data.seed": 0},
                                                                "1": {"seed": 1, "data.seed": 1}}}}
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_grid_gives_one_resolved_job_per_point(experiment, tmp_path):
    path = sweep_file(tmp_path / "s.yaml", experiment, overrides={"train.steps": 5, "train.lr": 3e-4})
    spec = load_sweep(path)
    pts = points(spec, str(path))
    assert [p.name for p in pts] == [f"p_burst={b},seed={s}" for b in ("0.0", "0.6", "1.0") for s in (0, 1)]
    cfg = job_config(spec, str(path), pts[3], tmp_path / "sweep", ["train.steps=7"])
    # the file's overrides, then --set, then the point; named and placed by the sweep
    assert (cfg.name, cfg.data.p_burst, cfg.seed, cfg.data.seed, cfg.train.steps, cfg.train.lr) == \
        ("p_burst=0.6,seed=1", 0.6, 1, 1, 7, 3e-4)
    assert cfg.path == tmp_path / "sweep" / "runs" / "p_burst=0.6,seed=1"


def test_exclude_leaves_points_out_of_the_product(experiment, tmp_path):
    # replicates where the contrast is: seed 1 only at the ends of the p_burst axis
    path = sweep_file(tmp_path / "s.yaml", experiment, exclude=[{"data.p_burst": 0.6, "seed": "1"}])
    assert [p.name for p in points(load_sweep(path), str(path))] == \
        ["p_burst=0.0,seed=0", "p_burst=0.0,seed=1", "p_burst=0.6,seed=0", "p_burst=1.0,seed=0", "p_burst=1.0,seed=1"]
    path = sweep_file(tmp_path / "s.yaml", experiment, exclude=[{"seed": 1}, {"data.p_burst": 0.0}])
    assert [p.name for p in points(load_sweep(path), str(path))] == ["p_burst=0.6,seed=0", "p_burst=1.0,seed=0"]
    path = sweep_file(tmp_path / "s.yaml", experiment, exclude=[{"seed": 0}, {"seed": 1}])
    with pytest.raises(ConfigError, match="leaves no point of the grid"):
        points(load_sweep(path), str(path))


@pytest.mark.parametrize("fields, message", [
    ({"grid": {}}, "grid: the grid needs at least one axis"),
    ({"exclude": [{"model.preset": "1M"}]}, "exclude[0]: 'model.preset' is not a grid axis"),
    ({"exclude": [{"data.p_burst": 0.5}]}, "exclude[0]: data.p_burst=0.5 is not one of the axis's values (0.0, 0.6, 1.0)"),
    ({"exclude": [{}]}, "exclude[0] is empty"),
    ({"grid": {"data.sources": [[{"path": "a"}], [{"path": "b"}]]}}, "needs a label"),
    ({"grid": {"seed": [0, 0]}}, "repeats a value"),
    ({"grid": {"size": {"small model": {"model.preset": "1M"}}}}, "must be a plain name"),
    ({"report": {"x": "train.lr"}}, "report.x='train.lr' is not a grid axis"),
    ({"eval": {"demos": "d", "shots": [0, 2]}}, "primary_k=1 is not one of shots"),
    ({"eval": {"demos": "d", "methods": ["icl", "oracle"]}}, "unknown method(s) ['oracle']"),
    ({"resources": {"executor": "pbs"}}, "resources.executor = 'pbs'"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_a_bad_sweep_file_is_one_clear_error(experiment, tmp_path, fields, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_sweep(sweep_file(tmp_path / "s.yaml", experiment, **fields))
    assert message in str(err.value) and str(tmp_path / "s.yaml") in str(err.value)


def test_a_bad_value_names_the_job_and_its_grid_point(experiment, tmp_path, capsys):
    path = sweep_file(tmp_path / "s.yaml", experiment, grid={"data.p_burst": [0.5, 2.0]})
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.p_burst = 2.0" in err and "grid.data.p_burst = 2.0" in err
    for bad in (["lr"], ["train.lr="], ["seed=1", "seed=2"], []):
        with pytest.raises(IcrlError):
            parse_grid(bad)


def test_dry_run_and_grid_flags(experiment, capsys):
    assert main(["sweep", str(experiment), "--grid", "seed=0,1", "--grid", "train.lr=1e-4,3e-4", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["seed=0,lr=0.0001: seed=0 train.lr=0.0001", "seed=0,lr=0.0003: seed=0 train.lr=0.0003",
                       "seed=1,lr=0.0001: seed=1 train.lr=0.0001", "seed=1,lr=0.0003: seed=1 train.lr=0.0003"]
    assert not (experiment.parent / "runs" / "sweeps").exists()  # a dry run writes nothing


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_every_ablation_file_plans_without_flags(path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # their paths are relative to the repository
    assert run_sweep(path, dry_run=True) == 0
    out = capsys.readouterr().out.splitlines()
    spec = load_sweep(path)
    assert len(out) == 1 + len(points(spec, str(path))) and spec.eval is not None
    if path.name.endswith("-cpu.yaml"):
        assert spec.resources.executor == "local" and "accelerator cpu" in out[0]
    else:
        assert spec.resources.executor == "slurm" and "accelerator gpu" in out[0] and " x 8 GPUs" in out[0]


def test_pinned_slots_split_the_cpus_and_too_many_slots_are_refused(experiment, tmp_path, capsys):
    cpus = sorted(os.sched_getaffinity(0))
    assert slot_cpus(1, True) == [cpus] and slot_cpus(3, False) == [None, None, None]
    if len(cpus) >= 2:
        two = slot_cpus(2, True)
        assert two[0] + two[1] == cpus and two[0] and two[1]
    path = sweep_file(tmp_path / "s.yaml", experiment, resources={"executor": "local", "pin_cpus": True})
    assert main(["sweep", str(path), "--parallel", str(len(cpus) + 1)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{len(cpus) + 1} jobs at a time need at least {len(cpus) + 1} CPUs" in err
    assert not (tmp_path / "sweep").exists()  # refused before anything is written


def test_a_gpu_sweep_is_refused_where_there_are_no_gpus(experiment, tmp_path, capsys):
    path = sweep_file(tmp_path / "s.yaml", experiment, resources={"accelerator": "gpu", "gpus_per_node": 1})
    assert main(["sweep", str(path), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("icrl sweep: error: resources.accelerator=gpu, but JAX finds no GPU on this machine: refusing "
                   "to run a GPU sweep on CPU (--executor slurm to run it on a cluster, or --accelerator cpu)")
    assert not (tmp_path / "sweep").exists()  # nothing planned, nothing submitted
    # A job that lands on a node without GPUs refuses too, before it trains.
    from icrl.sweep.job import check_accelerator

    with pytest.raises(IcrlError, match="asks for GPUs .* finds only cpu devices .* refusing to train on CPU"):
        check_accelerator("gpu", "p_burst=1.0")


def test_gpus_per_node_come_from_the_mesh(experiment, tmp_path):
    cfg = job_config(load_sweep(sweep_file(tmp_path / "s.yaml", experiment)), "s.yaml",
                     points(load_sweep(tmp_path / "s.yaml"), "s.yaml")[0], tmp_path, ["mesh.data=4", "mesh.fsdp=2"])
    assert gpus_per_node(ResourcesSpec(executor="slurm", accelerator="gpu"), cfg, "gpu") == 8
    assert gpus_per_node(ResourcesSpec(executor="slurm", accelerator="gpu", nodes=2), cfg, "gpu") == 4
    with pytest.raises(IcrlError, match="holds 8 devices but the resources give 1 node"):
        gpus_per_node(ResourcesSpec(executor="slurm", accelerator="gpu", gpus_per_node=4), cfg, "gpu")
    free = cfg.model_copy(update={"mesh": cfg.mesh.model_copy(update={"data": -1})})
    with pytest.raises(IcrlError, match="has an axis of -1"):
        gpus_per_node(ResourcesSpec(executor="slurm", accelerator="gpu"), free, "gpu")
    spec = load_sweep(tmp_path / "s.yaml")
    slurm = ResourcesSpec(executor="slurm")  # auto on SLURM is a GPU sweep: never 0 GPUs by default
    assert {j.gpus_per_node for j in plan(spec, "s.yaml", tmp_path, ["mesh.data=8"], slurm)} == {8}
    with pytest.raises(IcrlError, match="gpus_per_node=0 would train on CPU"):
        gpus_per_node(ResourcesSpec(executor="slurm", accelerator="gpu", gpus_per_node=0), cfg, "gpu")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_preemption_defers_the_previous_handler_until_closed(sig):
    seen = []
    previous = signal.signal(sig, lambda s, f: seen.append(s))
    try:
        preemption = Preemption(multiprocess=False)
        assert not preemption.reached(1)
        os.kill(os.getpid(), sig)
        assert preemption.reached(2) and preemption.signum == sig and seen == []  # not handed on yet
        preemption.close()
        os.kill(os.getpid(), sig)
        assert seen == [sig]  # the previous handler is back
    finally:
        signal.signal(sig, previous)
