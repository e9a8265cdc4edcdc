"""The in-context diagnostic, on a toy task that only the context can solve.

Every level shows the same screen at every step, and its expert repeats one action, the level's
own (``legal[level % 8]``). Nothing in an observation says which level it is: a model can predict
the query's action only by reading the same level's episode in its context. So after bursty
training the same-level loss must fall far below the other-level loss; a model that ignored its
context would have both at ~ln 8.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from icrl.cli import main
from icrl.data.layout import ContextLayout
from icrl.envs.registry import task_legal_actions
from icrl.eval.diagnostic import diagnostic_batches
from icrl.store.episode import OBS_SPECS, Episode
from icrl.store.reader import TrajectoryStore
from icrl.store.writer import ShardWriter

TASK = "MiniHack-MazeWalk-9x9-v0"


def toy_episode(level: int, episode: int, length: int = 8) -> Episode:
    legal = task_legal_actions(TASK)
    obs = {k: np.zeros((length, *shape), dtype) for k, (shape, dtype) in OBS_SPECS["nethack"].items()}
    obs["tty_chars"][:] = ord(".")
    rewards = np.zeros(length, np.float32)
    rewards[-1] = 1.0
    return Episode(domain="nethack", task=TASK, level=level, source="oracle", observations=obs,
                   actions=np.full(length, legal[level % len(legal)], np.int32), rewards=rewards,
                   terminated=True, truncated=False, episode=episode)


def toy_store(path, levels, episodes=3):
    TrajectoryStore.create(path)
    with ShardWriter(path, "toy") as w:
        for lv in levels:
            for ep in range(episodes):
                w.append(toy_episode(lv, ep))
    return path


def test_diagnostic_rows_put_only_the_query_in_the_loss(tmp_path):
    store = TrajectoryStore(toy_store(tmp_path / "demos", range(100, 104)))
    layout = ContextLayout(episodes=3, window=8, context_steps=24, tokens_per_step=2, positions="rope")
    b = diagnostic_batches(store, layout)
    assert b["same"]["actions"].shape == b["other"]["actions"].shape == (4, 24)
    for kind in ("same", "other"):
        counted = b[kind]["loss_mask"].sum(axis=1)
        np.testing.assert_array_equal(counted, 8)  # the query's 8 steps, nothing from the context
        np.testing.assert_array_equal(b[kind]["loss_mask"][:, 16:], True)
    # same-level contexts show the query's action; other-level ones another level's
    assert (b["same"]["actions"][:, :16] == b["same"]["actions"][:, 16:17]).all()
    assert not (b["other"]["actions"][:, :8] == b["other"]["actions"][:, 16:17]).any()


@pytest.mark.slow
def test_a_model_trained_on_bursty_contexts_uses_them(tmp_path, capsys):
    train = toy_store(tmp_path / "train", range(0, 32))
    demos = toy_store(tmp_path / "demos", range(1000, 1016))
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "toy", "run_dir": str(tmp_path / "runs"),
        "data": {"sources": [{"path": str(train)}], "episodes_per_sequence": 2, "context_steps": 16,
                 "p_burst": 1.0, "batch_size": 8},
        "model": {"preset": "1M", "num_layers": 2, "d_model": 32, "num_heads": 2, "max_tokens": 32,
                  "dropout": 0.0},
        "train": {"steps": 100, "lr": 3e-3, "warmup_steps": 10, "checkpoint_every": 100, "log_every": 50},
        "diagnostic": {"demos": str(demos), "every": 50},
        "metrics": {"progress": False, "tensorboard": False},
    }))
    assert main(["train", str(exp)]) == 0
    records = [json.loads(line) for line in (tmp_path / "runs" / "toy" / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in records if "diag_gap" in r]
    assert [r["step"] for r in diag] == [50, 100]
    last = diag[-1]
    assert last["diag_other_loss"] > 1.5  # another level's action says nothing: ~ln 8
    assert last["diag_same_loss"] < 0.5 * last["diag_other_loss"]
    assert last["diag_gap"] > diag[0]["diag_gap"] - 0.05
    # the same figures for the checkpoint, from the command line, with no rollout
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "toy"), "--demos", str(demos), "--diagnostic"]) == 0
    out = capsys.readouterr().out
    assert "step 100 on 16 held-out queries" in out and f"gap {last['diag_gap']:+.4f}" in out
