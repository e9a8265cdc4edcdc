"""icrl sweep on this machine, end to end with real submitit jobs: every job trains, is evaluated
and reported, the sweep directory lists them; a second run skips what is done, and a sweep killed
mid-job resumes that job from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icrl.collect.config import CollectConfig
from icrl.collect.run import run_collection
from icrl.data.synthetic import write_synthetic
from icrl.store.reader import TrajectoryStore
from icrl.train.metrics import read_jsonl

from test_sweep_preemption import events, wait_for
from test_train_resume import checkpoint_steps, env

MAZE = "MiniHack-MazeWalk-15x15-v0"


def sweep_cmd(path: Path) -> list[str]:
    return [sys.executable, "-m", "icrl.cli", "sweep", str(path)]


def experiment(tmp: Path, store: Path, steps: int) -> Path:
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "run_dir": str(tmp / "runs"),
        "data": {"sources": [{"path": str(store)}], "episodes_per_sequence": 2, "context_steps": 32, "batch_size": 4},
        "model": {"preset": "1M", "num_layers": 1, "d_model": 32, "num_heads": 2, "max_tokens": 96},
        "train": {"steps": steps, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 1, "keep": 20,
                  "compile_cache": str(tmp.parent / "xla-cache-sweep")},
        "metrics": {"progress": False, "tensorboard": False}}))
    return path


def train_store(path: Path) -> Path:
    TrajectoryStore.create(path)
    write_synthetic(path, "w", [("nethack", "MiniHack-MazeWalk-9x9-v0", lv, ep, 12 + lv)
                                for lv in range(4) for ep in range(3)])
    return path


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two pinned slots need 2 CPUs")
def test_a_local_sweep_trains_evaluates_reports_and_skips_what_is_done(tmp_path):
    demos = tmp_path / "demos"
    run_collection(CollectConfig(suite="minihack", split="heldout", tasks=[MAZE], levels=2, episodes_per_level=2,
                                 sticky=0.0, workers=0, out=str(demos)))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "e2e", "experiment": str(experiment(tmp_path, train_store(tmp_path / "train"), 3)),
        "sweep_dir": str(tmp_path / "sweep"), "grid": {"data.p_burst": [0.0, 1.0]},
        "eval": {"demos": str(demos), "tasks": [MAZE], "shots": [0, 1], "levels": 2, "episodes": 2, "max_steps": 8},
        "resources": {"executor": "local", "parallel": 2, "accelerator": "cpu", "pin_cpus": True}}))
    out = subprocess.run(sweep_cmd(sweep), env=env(1), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    root = tmp_path / "sweep"
    names = ["p_burst=0.0", "p_burst=1.0"]
    for name in names:
        state = json.loads((root / "jobs" / name / "state.json").read_text())
        assert (state["state"], state["attempts"], state["step"]) == ("done", 1, 3)
        assert state["devices"].startswith("1 cpu")
        assert yaml.safe_load((root / "jobs" / name / "config.yaml").read_text())["data"]["p_burst"] == \
            float(name.split("=")[1])  # the resolved config of each job is kept
        run = root / "runs" / name
        rows = json.loads((run / "eval" / "results.json").read_text())
        assert {(r["method"], r["k"]) for r in rows} == {("icl", 0), ("icl", 1)} and len(rows) == 8
        assert (run / "report.md").is_file()  # the job's own report
    # pinned: the two slots ran on disjoint shares of the launcher's CPUs, together all of them
    ran_on = [json.loads((root / "runs" / n / "devices.json").read_text())[-1]["cpus"] for n in names]
    assert not set(ran_on[0]) & set(ran_on[1]) and sorted(ran_on[0] + ran_on[1]) == sorted(os.sched_getaffinity(0))
    table = (root / "jobs.md").read_text()
    assert all(f"| {n} | done | 1 | 3 |" in table for n in names)
    report = (root / "report.md").read_text()
    assert "# Sweep e2e: `icl` 1-shot success vs `data.p_burst`" in report and (root / "report.png").is_file()
    assert "| 0.0 | 1 |" in report and "| 1.0 | 1 |" in report

    results = {n: (root / "runs" / n / "eval" / "results.json").stat().st_mtime_ns for n in names}
    again = subprocess.run(sweep_cmd(sweep), env=env(1), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [line for line in again.stdout.splitlines() if "skipped" in line] == [f"{n}: done, skipped" for n in names]
    assert "started" not in again.stdout
    assert {n: (root / "runs" / n / "eval" / "results.json").stat().st_mtime_ns for n in names} == results


@pytest.mark.slow
def test_a_killed_sweep_resumes_the_interrupted_job_and_skips_the_finished_one(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "kill", "experiment": str(experiment(tmp_path, train_store(tmp_path / "train"), 40)),
        "sweep_dir": str(tmp_path / "sweep"),
        "grid": {"length": {"short": {"train.steps": 4}, "long": {}}},
        "resources": {"executor": "local", "accelerator": "cpu"}}, sort_keys=False))
    root = tmp_path / "sweep"
    short, long = root / "runs" / "length=short", root / "runs" / "length=long"
    log = tmp_path / "first.log"
    # The launcher, submitit's controllers and the jobs in one process group, killed together.
    proc = subprocess.Popen(sweep_cmd(sweep), env=env(1), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: checkpoint_steps(long), proc, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = checkpoint_steps(long)[-1]
    assert killed_at < 40, "the job ended before it could be killed"
    assert json.loads((root / "jobs" / "length=long" / "state.json").read_text())["state"] == "training"
    finished = short.joinpath("metrics.jsonl").read_text()

    out = subprocess.run(sweep_cmd(sweep), env=env(1), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "length=short: done, skipped" in lines
    assert any(line.startswith("length=long: was training") and line.endswith("resuming") for line in lines)
    assert short.joinpath("metrics.jsonl").read_text() == finished  # untouched
    resumed = [e for e in events(long) if e["event"] in ("resume", "done")]
    assert resumed == [{"step": killed_at, "event": "resume", **{k: resumed[0][k] for k in
                                                                  ("processes", "devices", "mesh", "flops_per_token",
                                                                   "device_kind", "peak_flops")}},
                       {"step": 40, "event": "done", "seconds": resumed[1]["seconds"]}]
    steps = [r["step"] for r in read_jsonl(long / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 41))  # every step once
    state = json.loads((root / "jobs" / "length=long" / "state.json").read_text())
    assert (state["state"], state["attempts"]) == ("done", 2)
