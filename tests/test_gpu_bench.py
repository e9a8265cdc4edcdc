"""``benchmarks/gpu.sh --cpu``: the accelerator benchmark runs end to end on the CPU with small
presets and prints every figure it promises (values are not checked: they are timings)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from test_train_config import REPO


@pytest.mark.slow
def test_gpu_benchmark_prints_every_figure_on_cpu():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([str(REPO / "benchmarks" / "gpu.sh"), "--cpu", "--iters", "1"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    number = r"[\d,]+\.\d+"
    for pattern in (
        rf"matmul peak \(1024×1024 float32\): {number} [GT]FLOP/s",
        rf"train +1M .*batch 2×256 tokens, {number} ms/step, [\d,]+ tokens/s, {number} [GT]FLOP/s; "
        rf"MFU: no table peak for 'cpu'; {number}% of the matmul peak; compile {number} s",
        rf"attention xla: causal forward \+ backward, batch 1, 2048 tokens, .*: {number} ms \(compile {number} s\)",
        r"attention cudnn: not available \(needs a GPU\)",
        rf"decode 1M nethack context +256: cached +{number} ms/step, full recomputation +{number} ms/step",
        rf"compile times: 1M train step {number} s; attention xla {number} s; decode \(compile and run\) {number} s",
    ):
        assert re.search(pattern, text), f"{pattern!r} not in:\n{text}"
    assert "skipped" not in text
