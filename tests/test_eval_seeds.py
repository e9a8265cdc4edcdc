"""``icrl eval RUN --seeds N``: the seed runs of ``icrl train --seeds N`` evaluated on one plan (same
levels, sticky-action seeds and demos), each into its own eval/, and a combined report with the
mean ± CI over seeds; bad input is one line naming it, before anything is loaded or written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from icrl.cli import main
from icrl.collect.config import CollectConfig
from icrl.collect.run import run_collection
from icrl.store.reader import TrajectoryStore

MAZE = "MiniHack-MazeWalk-15x15-v0"


def _train_seeds(tmp):
    """Held-out oracle demos of 2 MazeWalk-15x15 levels (2 each) and 2 tiny runs trained by
    ``icrl train --seeds 2`` on synthetic MazeWalk-9x9 episodes: (demo store, base run dir)."""
    from icrl.data.synthetic import write_synthetic

    demos = tmp / "demos"
    run_collection(CollectConfig(suite="minihack", split="heldout", tasks=[MAZE], levels=2, episodes_per_level=2,
                                 sticky=0.0, workers=0, out=str(demos)))
    train_store = tmp / "train"
    TrajectoryStore.create(train_store).close()
    write_synthetic(train_store, "w", [("nethack", "MiniHack-MazeWalk-9x9-v0", lv, ep, 12 + lv)
                                       for lv in range(4) for ep in range(3)])
    exp = tmp / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny", "run_dir": str(tmp / "runs"),
        "data": {"sources": [{"path": str(train_store)}], "episodes_per_sequence": 2, "context_steps": 32,
                 "batch_size": 8},  # the tests emulate 8 devices, all data-parallel
        "model": {"preset": "1M", "num_layers": 1, "d_model": 32, "num_heads": 2, "max_tokens": 96},
        "train": {"steps": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1},
        "metrics": {"progress": False, "tensorboard": False},
    }))
    assert main(["train", str(exp), "--seeds", "2"]) == 0
    return TrajectoryStore(demos), tmp / "runs" / "tiny"


def _argv(run, demos, *extra):
    return ["eval", str(run), "--demos", str(demos.root), "--tasks", MAZE, "--shots", "0,1", "--levels", "2",
            "--episodes", "2", "--max-steps", "6", "--methods", "icl,hashmap", *extra]


def _over_seeds(per_seed: list[float]) -> str:
    """The over-runs cell, computed here from scratch: mean ± t(0.975, n-1) · sd / sqrt(n) in %."""
    x = np.asarray(per_seed)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return f"{100 * x.mean():.0f}% ± {100 * half:.0f}"


@pytest.mark.slow
def test_eval_seeds_one_plan_for_every_seed_a_report_over_seeds_and_bad_input(tmp_path, capsys):
    demos, base = _train_seeds(tmp_path)
    runs = [base.parent / f"tiny-seed{i}" for i in range(2)]
    assert not base.exists()  # `icrl train --seeds` makes only the seed runs
    assert main(_argv(base, demos, "--seeds", "2")) == 0
    out = capsys.readouterr().out
    results = [json.loads((r / "eval" / "results.json").read_text()) for r in runs]
    metas = [json.loads((r / "eval" / "meta.json").read_text()) for r in runs]
    assert all((r / "report.md").is_file() for r in runs)
    key = lambda r: (r["task"], r["level"], r["method"], r["k"], r["episode"])  # noqa: E731
    assert [key(r) for r in results[0]] == [key(r) for r in results[1]] and len(results[0]) == 2 * 2 * 3
    assert metas[0]["levels"] == metas[1]["levels"] == {MAZE: demos.levels(MAZE)[:2]}
    # Same levels, demos and sticky-action seeds: Hashmap, which has no weights, plays the same episodes.
    hashmap = [[r for r in rows if r["method"] == "hashmap"] for rows in results]
    assert hashmap[0] == hashmap[1]

    report = (base.parent / "tiny-seeds" / "report.md").read_text()
    assert report.startswith("# Few-shot evaluation of tiny over 2 seeds") and report.strip() in out
    assert "| task | k | tiny-seed0 | tiny-seed1 | over runs |" in report
    per_seed = []  # each seed's k=0 success of icl: mean over levels of level means
    for rows in results:
        icl = [r for r in rows if r["method"] == "icl" and r["k"] == 0]
        per_seed.append(np.mean([np.mean([r["success"] for r in icl if r["level"] == lv])
                                 for lv in sorted({r["level"] for r in icl})]))
    row = next(line for line in report.splitlines() if line.startswith(f"| {MAZE} | 0 |"))
    if per_seed[0] == per_seed[1]:  # no spread: the interval has width 0
        assert row.endswith(f"| {100 * per_seed[0]:.0f}% ± 0 |")
    else:
        assert row.endswith(f"| {_over_seeds(per_seed)} |")

    # Bad input: one line naming it, before any model is loaded or anything written.
    before = {p: p.stat().st_mtime_ns for p in base.parent.rglob("*") if p.is_file()}
    for extra, message in ((["--seeds", "3"], f"--seeds 3: {base.parent / 'tiny-seed2'}: no such run directory"),
                           (["--seeds", "0"], "--seeds must be >= 1, got 0")):
        assert main(_argv(base, demos, *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # Seed 1 says it trained with another context layout: refused before any model is loaded.
    layout_file = base.parent / "tiny-seed1" / "layout.json"
    saved = layout_file.read_text()
    try:
        layout_file.write_text(json.dumps({**json.loads(saved), "window": 8}))
        assert main(_argv(base, demos, "--seeds", "2")) == 2
        err = capsys.readouterr().err
        assert f"{base.parent / 'tiny-seed1'}: its context layout differs from" in err
        assert f"window {json.loads(saved)['window']} vs 8" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        layout_file.write_text(saved)
    after = {p: p.stat().st_mtime_ns for p in base.parent.rglob("*") if p.is_file() and p != layout_file}
    assert after == {p: t for p, t in before.items() if p != layout_file}  # nothing else written
    assert not base.exists()


def test_seeds_report_gives_each_seed_and_the_mean_and_ci_over_seeds(tmp_path):
    """``write_seeds_report`` on 3 seed runs' results.json whose success rates differ."""
    from icrl.eval.outputs import write_seeds_report

    runs, per_seed = [], []
    for i, successes in enumerate(([1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0])):  # 2 levels x 2 rollouts
        rows = [{"task": MAZE, "level": j // 2, "k": k, "method": "icl", "episode": j % 2, "return": 0.0,
                 "success": bool(s) if k else False} for k in (0, 1) for j, s in enumerate(successes)]
        run = tmp_path / f"tiny-seed{i}"
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "results.json").write_text(json.dumps(rows))
        runs.append(run)
        per_seed.append(np.mean(successes))  # equal rollouts per level: the mean of level means
    text = write_seeds_report(tmp_path / "tiny", runs, ["icl"])
    assert (tmp_path / "tiny-seeds" / "report.md").read_text() == text + "\n" and not (tmp_path / "tiny").exists()
    lines = text.splitlines()
    assert "| task | k | tiny-seed0 | tiny-seed1 | tiny-seed2 | over runs |" in lines
    rate = next(line for line in lines if line.startswith(f"| {MAZE} | 1 |"))  # the first table: success rate
    assert rate.endswith(f"| {_over_seeds(per_seed)} |") and _over_seeds(per_seed) == "50% ± 62"  # t(0.975, 2) · 0.25 / sqrt(3)
