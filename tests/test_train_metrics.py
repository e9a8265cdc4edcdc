"""Training metrics: real tokens/s, data wait vs compute, MFU against the peak table, and
``icrl train --profile START:STOP`` (a jax.profiler trace in the run directory)."""

from __future__ import annotations

import json
import time

import pytest

from icrl.errors import IcrlError
from icrl.model.config import preset
from icrl.model.info import flops_per_token, train_flops_per_token
from icrl.train.config import load_experiment
from icrl.train.metrics import Throughput, parse_profile, read_jsonl
from icrl.train.mfu import mfu, peak_flops

from test_train_config import icrl_train, make_store, tiny_config, write_config


@pytest.mark.parametrize("kind, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
    ("NVIDIA H100 PCIe", "bfloat16", 756.0),
    ("NVIDIA H100 80GB HBM3", "float32", 494.7),
    ("NVIDIA H200", "bfloat16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "float32", 156.0),
    ("NVIDIA A10", "bfloat16", 125.0),
    ("NVIDIA L4", "bfloat16", 121.0),
    ("TPU v4", "bfloat16", 275.0),
    ("TPU v5 lite", "bfloat16", 197.0),
    ("TPU v5", "bfloat16", 459.0),
    ("TPU v6 lite", "float32", 918.0),
])
def test_peak_table_by_device_kind(kind, dtype, tflops):
    assert peak_flops(kind, dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA A10G", "Some New Chip"])
def test_no_peak_means_no_mfu(kind):
    assert peak_flops(kind, "bfloat16") is None
    assert mfu(1e6, 1e9, peak_flops(kind, "bfloat16"), 8) is None


def test_train_flops_count_the_encoder_and_triple_the_forward():
    cfg = preset("1M", domain="nethack", max_tokens=512)
    forward = flops_per_token(cfg, context=512)
    assert forward["encoder"] > 0
    assert train_flops_per_token(cfg, context=512) == pytest.approx(3 * forward["total"])
    assert train_flops_per_token(cfg, context=512) > 3 * (forward["transformer"] + forward["attention"])


def test_throughput_counts_real_tokens_and_splits_the_step():
    t = Throughput(tokens_per_step=1000, flops_per_token=2e6, peak_flops=1e12, devices=2)
    t.mark()
    waits = []
    for tokens in (600, 200, 400):
        waited = time.perf_counter()
        sum(range(20_000))  # the "data wait" of this step: measured, so it lies inside the interval
        waits.append(time.perf_counter() - waited)
        t.wait(waits[-1])
        t.add(tokens)
    r = t.rates()
    assert r["padding"] == pytest.approx(1 - 1200 / 3000)
    assert r["tokens_per_s"] * r["seconds_per_step"] * 3 == pytest.approx(1200)
    assert r["data_seconds"] == pytest.approx(sum(waits) / 3)
    assert r["data_seconds"] + r["compute_seconds"] == pytest.approx(r["seconds_per_step"])
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * 2e6 / 2e12)
    assert Throughput(10).rates()["mfu"] is None  # no clock started, no steps


@pytest.mark.parametrize("text", ["5:3", "4:4", "-1:3", "abc", "3", "1:2:3", "a:b"])
def test_bad_profile_window_is_named(text):
    with pytest.raises(IcrlError, match=f"--profile '{text}'.*START:STOP"):
        parse_profile(text)


def test_bad_profile_is_one_error_line(tmp_path, capsys):
    from icrl.cli import main

    store = make_store(tmp_path / "store")
    path = write_config(tmp_path / "c.yaml", tiny_config(store, tmp_path / "runs"))
    assert main(["train", str(path), "--profile", "7:2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icrl train: error: --profile '7:2'")
    assert main(["train", str(path), "--profile", "2:9"]) == 2  # train.steps is 8
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--profile 2:9: STOP is past the last step (train.steps=8)" in err[0]
    assert not (tmp_path / "runs" / "tiny").exists()


@pytest.mark.slow
def test_training_logs_real_tokens_and_writes_the_profile(tmp_path):
    store = make_store(tmp_path / "store")
    # Every kept episode has 4 steps (all are longer): 2 x 4 of the row's 12 steps are real.
    cfg = tiny_config(store, tmp_path / "runs", train={"steps": 4, "log_every": 1, "checkpoint_every": 4},
                      data={"max_episode_steps": 4})
    path = write_config(tmp_path / "c.yaml", cfg)
    proc = icrl_train([str(path), "--profile", "1:3"])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    run = tmp_path / "runs" / "tiny"
    records = read_jsonl(run / "metrics.jsonl")
    start = next(r for r in records if r.get("event") == "start")
    model = load_experiment(run / "config.yaml").model
    assert start["flops_per_token"] == pytest.approx(train_flops_per_token(model, context=12 * 2))
    assert start["device_kind"] == "cpu" and start["peak_flops"] is None
    steps = [r for r in records if "loss" in r and r["step"] > 1]
    assert [r["step"] for r in steps] == [2, 3, 4]
    tokens = cfg["data"]["batch_size"] * 12 * 2
    for r in steps:
        assert r["padding"] == pytest.approx(1 - 8 / 12)
        assert r["tokens_per_s"] * r["seconds_per_step"] == pytest.approx(tokens * 8 / 12)
        assert r["data_seconds"] + r["compute_seconds"] == pytest.approx(r["seconds_per_step"])
        assert r["mfu"] is None  # no peak for CPUs
    traces = list((run / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    json.dumps(records)  # every record is plain JSON


def test_best_interleaved_runs_every_call_in_turn_and_keeps_each_ones_best(monkeypatch):
    """A fake clock: call b takes 0 (untimed round), then 3, 1, 2 seconds; a takes 5 each time."""
    from icrl.train import bench

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    order: list[str] = []
    b_seconds = iter([0.0, 3.0, 1.0, 2.0])

    def a():
        order.append("a")
        clock[0] += 5.0
        return 0

    def b():
        order.append("b")
        clock[0] += next(b_seconds)
        return 0

    best = bench.best_interleaved({"a": a, "b": b}, iters=3)
    assert order == ["a", "b"] * 4
    assert best == {"a": 5.0, "b": 1.0}
