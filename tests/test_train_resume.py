"""icrl train end to end (subprocesses, 2 emulated CPU devices, params sharded over fsdp):
exact resume after SIGKILL, SIGTERM saves and exits 0, a non-finite loss stops the run and keeps the
last good checkpoint; the run directory's contents."""

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

from icrl.train.metrics import read_jsonl

from test_train_config import REPO, make_store, tiny_config, write_config

STEPS = 16


def train_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "icrl.cli", "train", str(config), *args]


def env(devices: int = 2) -> dict:
    e = dict(os.environ)
    # LLVM optimisations are most of the compile time of a tiny model; every run here uses the
    # same flags, so the comparisons are between identically compiled programs.
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    e["JAX_PLATFORMS"] = "cpu"
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def checkpoint_steps(run: Path) -> list[int]:
    """Steps of the complete checkpoints (Orbax renames a finished one to its bare step number)."""
    d = run / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists())


def wait_until(predicate, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) first:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


def load_state(run: Path, step: int) -> dict:
    import orbax.checkpoint as ocp

    restored = ocp.StandardCheckpointer().restore(run / "checkpoints" / str(step) / "state")
    return jax.tree.map(np.asarray, restored)


def step_records(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r and "event" not in r]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-resume")
    store = make_store(tmp / "store")
    cfg = tiny_config(store, tmp / "runs", mesh={"data": 1, "fsdp": -1},
                      train={"steps": STEPS, "checkpoint_every": 4, "keep": 20,
                             "compile_cache": str(tmp_path_factory.getbasetemp() / "xla-cache")})
    return tmp, write_config(tmp / "tiny.yaml", cfg)


@pytest.mark.slow
def test_resume_after_sigkill_and_sigterm_repeats_the_uninterrupted_run_exactly(setup, capsys):
    tmp, config = setup
    runs = tmp / "runs"
    straight, cut = runs / "straight", runs / "cut"

    # An uninterrupted run, and beside it one killed with SIGKILL once its first checkpoint is on disk
    # (started once the first has compiled, so it finds the programs in the compilation cache).
    a = start(train_cmd(config, "--name", "straight"), tmp / "straight.log")
    wait_until(lambda: step_records(straight), a, tmp / "straight.log")
    b = start(train_cmd(config, "--name", "cut"), tmp / "cut-1.log")
    wait_until(lambda: checkpoint_steps(cut), b, tmp / "cut-1.log")
    b.send_signal(signal.SIGKILL)
    assert b.wait() == -signal.SIGKILL
    killed_at = checkpoint_steps(cut)[-1]
    assert killed_at < STEPS, "the run ended before it could be killed"

    # Resume; a SIGTERM once it has restored makes it finish that step, save it and exit 0.
    c = start(train_cmd(config, "--name", "cut", "--resume"), tmp / "cut-2.log")
    wait_until(lambda: any(r.get("event") == "resume" for r in read_jsonl(cut / "metrics.jsonl")), c,
               tmp / "cut-2.log")
    c.send_signal(signal.SIGTERM)
    assert finish(c, tmp / "cut-2.log") == 0, (tmp / "cut-2.log").read_text()
    events = [r for r in read_jsonl(cut / "metrics.jsonl") if "event" in r]
    resumed_at = events[-2]["step"]
    assert events[-2]["event"] == "resume" and resumed_at == killed_at
    assert events[-1] == {"step": resumed_at + 1, "event": "preempted"}
    assert checkpoint_steps(cut)[-1] == resumed_at + 1

    # Resume again to the end.
    d = start(train_cmd(config, "--name", "cut", "--resume"), tmp / "cut-3.log")
    assert finish(d, tmp / "cut-3.log") == 0, (tmp / "cut-3.log").read_text()
    assert finish(a, tmp / "straight.log") == 0, (tmp / "straight.log").read_text()

    # Same parameters, optimizer state, step and RNG, bit for bit (CPU: same programs, same inputs).
    s, r = load_state(straight, STEPS), load_state(cut, STEPS)
    assert int(s["step"]) == int(r["step"]) == STEPS
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(s)[0], jax.tree.leaves(r), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    assert not np.array_equal(s["params"]["head"]["kernel"], load_state(cut, killed_at)["params"]["head"]["kernel"])

    # Evaluation reads the parameters alone (no optimizer state): the same arrays.
    from flax import nnx

    from icrl.eval.load import load_trained

    model, _, loaded = load_trained(cut)
    assert loaded == STEPS
    evaluated = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(s["params"])[0], jax.tree.leaves(evaluated),
                            strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))

    # Same data order and losses, every step logged once despite the kill.
    rs, rc = step_records(straight), step_records(cut)
    assert [r["step"] for r in rs] == [r["step"] for r in rc] == list(range(1, STEPS + 1))
    assert [r["first_sequence"] for r in rs] == [r["first_sequence"] for r in rc] == [4 * i for i in range(STEPS)]
    assert [r["loss"] for r in rs] == [r["loss"] for r in rc]
    assert rs[-1]["loss"] < rs[0]["loss"]  # it learns

    # The run directory: resolved config, metrics, TensorBoard events, checkpoints.
    assert (cut / "config.yaml").read_text().startswith("name: cut\n")
    assert list((cut / "tb").glob("events.out.tfevents.*"))
    assert {"state", "data", "config"} <= {p.name for p in (cut / "checkpoints" / str(STEPS)).iterdir()}
    saved = json.loads((cut / "checkpoints" / str(STEPS) / "config" / "metadata").read_text())
    assert saved["name"] == "cut" and saved["train"]["steps"] == STEPS

    # A resume with a changed config (other than where/how often things are written, or the mesh)
    # is refused before anything is compiled.
    from icrl.cli import main

    code = main(["train", str(config), "--name", "cut", "--resume", "--set", "train.lr=0.5",
                 "--set", "mesh.fsdp=1", "--set", "mesh.tensor=-1"])  # this process has 8 devices
    assert code == 2 and f"differs from checkpoint {STEPS}'s in train.lr;" in capsys.readouterr().err


@pytest.mark.slow
def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(setup):
    tmp, config = setup
    run = tmp / "runs" / "blowup"
    log = tmp / "blowup.log"
    p = start(train_cmd(config, "--name", "blowup", "--set", "train.lr=1e15", "--set", "train.grad_clip=null",
                        "--set", "train.warmup_steps=0", "--set", "train.checkpoint_every=1"), log)
    assert finish(p, log) == 1, log.read_text()
    text = log.read_text()
    assert "non-finite training at step" in text and "Stopped without saving" in text, text
    event = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("event") == "nonfinite"][-1]
    steps = checkpoint_steps(run)
    assert steps and event["last_good_checkpoint"] == steps[-1] < event["step"]
    for step in steps:
        state = load_state(run, step)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
