"""Evaluation on Procgen tasks: R&P, the search expert as a method, and the checks before any rollout."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from icrl.cli import main
from icrl.collect.config import CollectConfig
from icrl.collect.run import run_collection
from icrl.collect.units import PlaySettings, play_attempt
from icrl.envs import make_env, make_vector_env
from icrl.eval.evaluate import EvalConfig, Method, evaluate
from icrl.eval.methods import METHODS, check_methods, default_methods
from icrl.eval.policies import ExpertPolicy, HashmapPolicy, RandomPolicy, RetrievePlayPolicy
from icrl.eval.rollout import run_rows
from icrl.store.reader import TrajectoryStore

JUMPER = "procgen:jumper"


@pytest.fixture(scope="module")
def procgen_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("procgen") / "demos"
    run_collection(CollectConfig(suite="procgen", split="heldout", tasks=[JUMPER], levels=2, episodes_per_level=2,
                                 sticky=0.2, keep_failed=True, workers=0, out=str(out)))
    store = TrajectoryStore(out)
    yield store
    store.close()


class Recording(RetrievePlayPolicy):
    """R&P that keeps the actions it took, row by row."""

    def start(self, spec, demos, row_demos, rngs):
        super().start(spec, demos, row_demos, rngs)
        self.taken = [[] for _ in rngs]

    def record(self, actions, rewards, done):
        for i, a in enumerate(actions):
            if not self.done_before[i]:
                self.taken[i].append(int(a))
        self.done_before = done.copy()

    def act(self, obs, live):
        self.done_before = ~live
        return super().act(obs, live)


@pytest.mark.parametrize(("task", "level"), [("procgen:coinrun", 4), ("MiniHack-MazeWalk-9x9-v0", 4)])
def test_rnp_with_one_demo_replays_it_on_a_deterministic_level(task, level):
    from icrl.experts import REQUIRED_KEYS

    env = make_env(task, extra_keys=REQUIRED_KEYS if task.startswith("MiniHack") else ())
    settings = PlaySettings(store="", sticky=0.0, max_steps=200, seed=0, max_attempts=1, keep_failed=True,
                            source="oracle")
    demo, solved = play_attempt(env, task, level, 0, 0, settings)
    env.close()
    assert solved and len(set(demo.actions.tolist())) > 1  # a demo worth replaying: it changes actions
    policy = Recording()
    with make_vector_env(task, 2) as venv:  # sticky 0: the level plays the same way for the same actions
        records = run_rows(venv, policy, [[demo]], np.zeros(2, np.int64), [level, level],
                           [np.random.default_rng(i) for i in range(2)])
    for r, taken in zip(records, policy.taken):
        assert r["return"] == demo.ret and r["length"] == demo.length and r["success"]
        assert taken == demo.actions.tolist()


def test_every_baseline_plays_a_procgen_task(procgen_demos):
    cfg = EvalConfig(suite="procgen", tasks=[JUMPER], demos=str(procgen_demos.root), shots=[0, 1], levels=2,
                     episodes=2, sticky=0.2)
    methods = {"hashmap": Method(HashmapPolicy(), shots=[1]), "rnp": Method(RetrievePlayPolicy(), shots=[1]),
               "random": Method(RandomPolicy(), shots=[0]), "expert": Method(ExpertPolicy(), shots=[0])}
    rows = evaluate(cfg, [JUMPER], methods, procgen_demos)
    assert len(rows) == 4 * 2 * 2
    expert = [r for r in rows if r["method"] == "expert"]
    assert all(r["success"] and r["return"] == 10.0 for r in expert)  # jumper levels are easy for it
    assert {r["method"] for r in rows} == set(methods)


def _run_dir(tmp_path, domain: str):
    run = tmp_path / f"run-{domain}"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": "run", "run_dir": str(tmp_path),
        "data": {"sources": [{"path": str(tmp_path / "no-store")}], "episodes_per_sequence": 2, "context_steps": 32,
                 "batch_size": 8},
        "model": {"preset": "1M", "domain": domain, "max_tokens": 96}}))
    return run


def test_a_minihack_model_on_a_procgen_task_is_refused_before_any_rollout(procgen_demos, tmp_path, capsys):
    run = _run_dir(tmp_path, "nethack")
    argv = ["eval", str(run), "--demos", str(procgen_demos.root), "--tasks", "procgen:ninja", "--shots", "0,1"]
    assert main(argv) == 2  # the default methods, the model's among them
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"icrl eval: error: {run} (run): the model reads nethack observations (model.domain), "
        "procgen:ninja is a procgen task"]
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing written
    procgen = ["procgen:ninja", "procgen:climber"]
    check_methods({}, default_methods(procgen), procgen)  # every other default method applies
    assert set(METHODS) - set(default_methods(procgen)) == {"hashmap-cell"}  # the one that reads the tty cursor


@pytest.mark.slow
def test_eval_runs_every_default_method_on_a_tiny_procgen_model(procgen_demos, tmp_path, capsys):
    import json

    from icrl.data.synthetic import write_synthetic

    train_store = tmp_path / "train"
    TrajectoryStore.create(train_store)
    write_synthetic(train_store, "w", [("procgen", "procgen:coinrun", lv, ep, 10) for lv in range(3) for ep in range(2)])
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny", "run_dir": str(tmp_path / "runs"),
        "data": {"sources": [{"path": str(train_store)}], "episodes_per_sequence": 2, "context_steps": 16,
                 "batch_size": 8},
        "model": {"preset": "1M", "domain": "procgen", "num_layers": 1, "d_model": 32, "num_heads": 2,
                  "max_tokens": 96, "dtype": "float32"},
        "train": {"steps": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1},
        "metrics": {"progress": False, "tensorboard": False},
    }))
    assert main(["train", str(exp)]) == 0
    run = tmp_path / "runs" / "tiny"
    bc = ["--bc0", str(run)]  # BC needs a single-trajectory run: refused, with its name, before any rollout
    argv = ["eval", str(run), "--demos", str(procgen_demos.root), "--tasks", JUMPER, "--shots", "0,1", "--levels",
            "2", "--episodes", "1", "--max-steps", "6", "--finetune-steps", "1"]
    capsys.readouterr()
    assert main(argv + bc) == 2
    assert "BC baselines are single-trajectory runs" in capsys.readouterr().err
    assert main(argv) == 0
    rows = json.loads((run / "eval" / "results.json").read_text())
    assert {(r["method"], r["k"]) for r in rows} == {
        ("icl", 0), ("icl", 1), ("finetune", 0), ("finetune", 1), ("hashmap", 1), ("rnp", 1), ("random", 0),
        ("expert", 0)}
    assert len(rows) == 8 * 2 and all(r["length"] <= 6 for r in rows)
    assert (run / "report.md").is_file()
