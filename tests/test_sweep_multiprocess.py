"""A multi-process job gets submitit's preemption signal (SIGUSR2) on one process only: it is passed
to JAX's preemption notifier (which listens to SIGTERM), so every process reaches the preemption
sync point at the same step and saves that step, as with a SIGTERM."""

from __future__ import annotations

import json
import signal
import time

import pytest

from test_train_config import make_store, tiny_config, write_config
from test_train_multiprocess import STEPS, free_port, spawn, wait


@pytest.mark.slow
def test_sigusr2_on_one_process_makes_all_processes_save_the_same_step(tmp_path):
    from icrl.train.metrics import read_jsonl

    cfg = write_config(tmp_path / "two.yaml", tiny_config(
        make_store(tmp_path / "store"), tmp_path / "runs", name="two", mesh={"data": 2, "fsdp": 2, "tensor": 1},
        train={"steps": STEPS, "checkpoint_every": 100, "keep": 3,
               "compile_cache": str(tmp_path.parent / "xla-cache-usr2")}))
    out = tmp_path / "out"
    out.mkdir()
    port = str(free_port())
    procs = [spawn([str(cfg), str(out), port, str(i), "2"], 2, tmp_path / f"two-{i}.log") for i in range(2)]
    metrics = tmp_path / "runs" / "two" / "metrics.jsonl"
    deadline = time.monotonic() + 1200
    while not any(r.get("step", 0) >= 2 and "loss" in r for r in read_jsonl(metrics)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            (tmp_path / "two-0.log").read_text()[-3000:]
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGUSR2)
    codes = wait(procs, timeout=1200)
    assert codes == [0, 0], {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
    steps = [json.loads((out / f"devices_{i}.json").read_text())["step"] for i in range(2)]
    assert steps[0] == steps[1] and 2 <= steps[0] < STEPS  # both saved the same step, before the end
    assert [r for r in read_jsonl(metrics) if "event" in r][-1] == {"step": steps[0], "event": "preempted"}
