"""Preemption through submitit, for real: a sweep job on submitit's local executor gets SIGUSR2
(submitit's preemption signal) mid-run, then SIGTERM (SLURM's) after its requeue. Each time it
saves a checkpoint, submitit requeues it (its controller runs it again), and it resumes; it must
end with exactly the parameters of the same job run without interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from icrl.train.metrics import read_jsonl

from test_train_config import make_store, tiny_config, write_config
from test_train_resume import env, load_state, step_records

STEPS = 40


def events(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if "event" in r]


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended ({proc.returncode}) first:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


@pytest.mark.slow
def test_a_signalled_job_is_requeued_by_submitit_and_ends_as_if_uninterrupted(tmp_path):
    cfg = tiny_config(make_store(tmp_path / "store"), tmp_path / "runs",
                      train={"steps": STEPS, "checkpoint_every": 4, "keep": 20,
                             "compile_cache": str(tmp_path.parent / "xla-cache-sweep")})
    experiment = write_config(tmp_path / "tiny.yaml", cfg)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "preempt", "experiment": str(experiment), "sweep_dir": str(tmp_path / "sweep"),
        "grid": {"run": {"straight": {}, "cut": {}}},  # two identical jobs, one after the other
        "resources": {"executor": "local", "parallel": 1, "accelerator": "cpu"}}, sort_keys=False))
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen([sys.executable, "-m", "icrl.cli", "sweep", str(sweep)], env=env(1),
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    cut, jdir = tmp_path / "sweep" / "runs" / "run=cut", tmp_path / "sweep" / "jobs" / "run=cut"

    def job_pid() -> int:
        return json.loads((jdir / "state.json").read_text())["pid"]

    try:
        wait_for(lambda: step_records(cut), proc, log)  # mid-run: it has trained a step
        os.kill(job_pid(), signal.SIGUSR2)
        wait_for(lambda: [e["event"] for e in events(cut)].count("resume") == 1, proc, log)
        os.kill(job_pid(), signal.SIGTERM)  # the requeued job, while it restores and compiles
        assert proc.wait(timeout=1200) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    names = [e["event"] for e in events(cut)]
    assert names == ["start", "preempted", "resume", "preempted", "resume", "done"], events(cut)
    first, second = (e["step"] for e in events(cut) if e["event"] == "preempted")
    assert 1 <= first < second < STEPS
    state = json.loads((jdir / "state.json").read_text())
    assert (state["state"], state["attempts"], state["step"]) == ("done", 3, STEPS)
    # the requeues were submitit's: its controller ran the pickled job again (exit code 144)
    stderr = next((tmp_path / "sweep" / "submitit").glob(f"{state['job_id']}/*_0_log.err")).read_text()
    assert stderr.count(f"Requeued job {state['job_id']}") == 2
    assert json.loads((cut / "devices.json").read_text())[-1]["attempt"] == 3
    # the same parameters, optimizer state and step as the uninterrupted job, bit for bit
    s, r = load_state(tmp_path / "sweep" / "runs" / "run=straight", STEPS), load_state(cut, STEPS)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(s)[0], jax.tree.leaves(r), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    assert [r["loss"] for r in step_records(cut)] == [r["loss"] for r in step_records(tmp_path / "sweep" / "runs" /
                                                                                        "run=straight")]
