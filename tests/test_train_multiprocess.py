"""Two local processes (2 CPU devices each, gloo collectives) train one model together on a
(data 2, fsdp 2) mesh: data parallel across the processes, parameters sharded inside each. They
must hold identical replicas of every parameter shard, and match one process driving 4 devices.
A SIGTERM to one of them (a preemption notice) makes both save the same step and exit 0; one
process then resumes that checkpoint (saved by two) and ends where the one-process run ended.

Run as a script, this file is the worker: ``python test_train_multiprocess.py CONFIG OUT [PORT ID N]``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_train_config import REPO, make_store, tiny_config, write_config  # noqa: E402

STEPS = 16


def worker(config: str, out: str, port: str | None = None, pid: str | None = None, n: str | None = None) -> int:
    """Train (joining the others when given a port), then dump this process's parameter shards."""
    import jax

    from icrl.train.checkpoint import Checkpointer, abstract_with_shardings
    from icrl.train.config import load_experiment
    from icrl.train.loop import train
    from icrl.train.mesh import build_mesh, param_shardings, replicated
    from icrl.train.state import ModelTemplate, init_state, make_optimizer, state_shardings

    overrides = []
    if port is not None:
        overrides = ["distributed.mode=explicit", f"distributed.coordinator_address=127.0.0.1:{port}",
                     f"distributed.num_processes={n}", f"distributed.process_id={pid}"]
    cfg = load_experiment(config, overrides)
    code = train(cfg, resume=os.environ.get("ICRL_TEST_RESUME") == "1")
    if code:
        return code
    # Read the final checkpoint back onto the same mesh: each process gets the shards it holds.
    mesh = build_mesh(cfg.mesh)
    template, tx = ModelTemplate(cfg.model), make_optimizer(cfg.train)
    abstract = jax.eval_shape(lambda s: init_state(template, tx, s), np.int32(0))
    params_sh, _ = param_shardings(template.abstract_params, cfg.mesh.rules, mesh)
    target = abstract_with_shardings(abstract, state_shardings(abstract, params_sh, tx, replicated(mesh)))
    checkpoints = Checkpointer(cfg.path / "checkpoints", keep=cfg.train.keep)
    step = checkpoints.latest_step()
    state = checkpoints.restore(step, target)
    checkpoints.close()
    shards = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        for shard in leaf.addressable_shards:
            index = [list(sl.indices(n)[:2]) for sl, n in zip(shard.index, leaf.shape)]
            shards[f"{jax.tree_util.keystr(path)}@{json.dumps(index)}"] = np.asarray(shard.data)
    np.savez(Path(out) / f"process_{jax.process_index()}.npz", **shards)
    (Path(out) / f"devices_{jax.process_index()}.json").write_text(
        json.dumps({"step": step, "devices": [d.id for d in jax.local_devices()]}))
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], devices: int, log: Path, resume: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    env["ICRL_TEST_RESUME"] = "1" if resume else "0"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def wait(procs: list[subprocess.Popen], timeout: float = 400) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_two_processes_train_together_and_agree_with_one(tmp_path):
    from icrl.train.metrics import read_jsonl

    store = make_store(tmp_path / "store")
    cache = str(tmp_path / "xla-cache")
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir(), one.mkdir()
    common = dict(mesh={"data": 2, "fsdp": 2, "tensor": 1},
                  train={"steps": STEPS, "checkpoint_every": 1, "keep": STEPS, "compile_cache": cache})
    cfg2 = write_config(tmp_path / "two.yaml", tiny_config(store, tmp_path / "runs", name="two", **common))
    cfg1 = write_config(tmp_path / "one.yaml", tiny_config(store, tmp_path / "runs", name="one", **common))
    port = str(free_port())
    procs = [spawn([str(cfg2), str(two), port, str(i), "2"], 2, tmp_path / f"two-{i}.log") for i in range(2)]
    procs.append(spawn([str(cfg1), str(one)], 4, tmp_path / "one.log"))
    # After a few steps together, preempt process 1 only.
    metrics2 = tmp_path / "runs" / "two" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not any(r.get("step", 0) >= 3 and "loss" in r for r in read_jsonl(metrics2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs[:2]), \
            (tmp_path / "two-0.log").read_text()[-3000:]
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGTERM)
    codes = wait(procs)
    logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
    assert codes == [0, 0, 0], logs
    assert "2 process(es) (explicit), 4 cpu devices, mesh data=2xfsdp=2xtensor=1" in (tmp_path / "two-0.log").read_text()

    info = [json.loads((two / f"devices_{i}.json").read_text()) for i in range(2)]
    assert info[0]["devices"] != info[1]["devices"]
    step = info[0]["step"]
    assert info[1]["step"] == step and 3 <= step < STEPS  # both stopped at the same step, before the end
    events = [r for r in read_jsonl(metrics2) if "event" in r]
    assert events[-1] == {"step": step, "event": "preempted"}

    p0, p1 = np.load(two / "process_0.npz"), np.load(two / "process_1.npz")
    # Each process holds a full replica (data axis across processes), split over its two devices.
    assert set(p0.files) == set(p1.files)
    for key in p0.files:
        np.testing.assert_array_equal(p0[key], p1[key], err_msg=f"replicas differ: {key}")
    assert not np.allclose(p0[p0.files[0]], 0)

    # The same training as one process driving the same mesh of 4 devices, step for step.
    ref = load_params(tmp_path / "runs" / "one", step)
    for key in p0.files:
        path, index = key.split("@")
        full = ref[path.replace("'", "")]
        part = full[tuple(slice(a, b) for a, b in json.loads(index))]
        np.testing.assert_allclose(p0[key], part, rtol=1e-5, atol=1e-6, err_msg=f"vs one process: {key}")
    steps2 = [r for r in read_jsonl(metrics2) if "loss" in r]
    steps1 = [r for r in read_jsonl(tmp_path / "runs" / "one" / "metrics.jsonl") if "loss" in r][:step]
    assert [r["step"] for r in steps2] == list(range(1, step + 1))
    np.testing.assert_allclose([r["loss"] for r in steps2], [r["loss"] for r in steps1], rtol=1e-5)
    assert [r["first_sequence"] for r in steps2] == [r["first_sequence"] for r in steps1]

    # One process resumes the checkpoint two processes saved (their data positions are
    # process_<i>-of-2.json) on the same 4-device mesh, and ends where the one-process run ended.
    data_files = sorted(p.name for p in (tmp_path / "runs" / "two" / "checkpoints" / str(step) / "data").iterdir()
                        if p.suffix == ".json")
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    assert wait([spawn([str(cfg2), str(resumed)], 4, tmp_path / "resumed.log", resume=True)]) == [0], \
        (tmp_path / "resumed.log").read_text()[-3000:]
    assert json.loads((resumed / "devices_0.json").read_text())["step"] == STEPS
    final, ref = load_params(tmp_path / "runs" / "two", STEPS), load_params(tmp_path / "runs" / "one", STEPS)
    for key, value in ref.items():
        np.testing.assert_allclose(final[key], value, rtol=1e-5, atol=1e-6, err_msg=f"resumed vs one process: {key}")
    later = [r for r in read_jsonl(metrics2) if "loss" in r and r["step"] > step]
    assert [r["first_sequence"] for r in later] == [r["first_sequence"] for r in
                                                    read_jsonl(tmp_path / "runs" / "one" / "metrics.jsonl")
                                                    if "loss" in r and r["step"] > step]


def load_params(run: Path, step: int) -> dict:
    """keystr(path) without quotes (Orbax stores list indices as strings) -> a checkpoint's parameter."""
    import jax
    import orbax.checkpoint as ocp

    params = ocp.StandardCheckpointer().restore(run / "checkpoints" / str(step) / "state")["params"]
    return {jax.tree_util.keystr(p).replace("'", ""): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


if __name__ == "__main__":
    sys.exit(worker(*sys.argv[1:]))
