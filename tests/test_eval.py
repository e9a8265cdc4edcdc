"""Few-shot evaluation: the rollout driver, Hashmap as an oracle, cached vs recomputed model
rollouts, results.json / report.md / plots, the eval and report commands, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from icrl.cli import main
from icrl.collect.config import CollectConfig
from icrl.collect.run import run_collection
from icrl.store.reader import TrajectoryStore
from icrl.envs import make_vector_env
from icrl.eval.evaluate import EvalConfig, Method, evaluate
from icrl.eval.outputs import compare_runs, write_outputs
from icrl.eval.policies import HashmapPolicy, RandomPolicy
from icrl.eval.report import gain, markdown_report, summarize
from icrl.eval.rollout import run_level

MAZE = "MiniHack-MazeWalk-15x15-v0"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """Oracle demos of 2 held-out levels of MazeWalk-15x15, 3 per level, without sticky actions."""
    out = tmp_path_factory.mktemp("demos") / "store"
    run_collection(CollectConfig(suite="minihack", split="heldout", tasks=[MAZE], levels=2,
                                 episodes_per_level=3, sticky=0.0, workers=0, out=str(out)))
    return TrajectoryStore(out)


def test_hashmap_replays_a_demo_exactly_in_a_deterministic_level(demo_store):
    from icrl.eval.policies import observation_key

    exact = 0
    for level in demo_store.levels(MAZE):
        demo = demo_store.read(demo_store.episodes_of(MAZE, level)[0])
        screens = {observation_key({k: v[t] for k, v in demo.observations.items()}) for t in range(demo.length)}
        policy = HashmapPolicy()
        with make_vector_env(MAZE, 3, sticky_p=0.0) as venv:
            records = run_level(venv, policy, level, [demo], np.random.default_rng(0))
        assert policy.misses == 0  # every screen it meets is one of the demo's
        for r in records:
            assert r["success"] and not r["truncated"]
            if len(screens) == demo.length:  # no screen twice: the demo itself, step for step
                assert r["length"] == demo.length and r["return"] == pytest.approx(demo.ret)
            else:  # it skips the demo's detours (a screen seen twice keeps its last action)
                assert r["length"] < demo.length and r["return"] >= demo.ret
        exact += len(screens) == demo.length
    assert exact >= 1, "no loop-free demo: the exact replay was not exercised"


def test_evaluate_writes_every_episode(demo_store, tmp_path):
    cfg = EvalConfig(demos=str(demo_store.root), shots=[0, 1, 2], levels=2, episodes=2, sticky=0.2,
                     max_steps=30)
    methods = {"hashmap": Method(HashmapPolicy(), shots=[1, 2]), "random": Method(RandomPolicy(), shots=[0])}
    rows = evaluate(cfg, [MAZE], methods, demo_store)
    assert len(rows) == 2 * 2 * (2 + 1)  # levels x episodes x (hashmap k=1,2 + random k=0)
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(
        ["task", "level", "k", "method", "episode", "sticky", "return", "length", "success", "truncated"]))}
    assert all(r["length"] <= 30 for r in rows)
    report = write_outputs(rows, tmp_path / "run", cfg)
    saved = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert saved == rows
    assert "## MiniHack-MazeWalk-15x15-v0" in report and (tmp_path / "run" / "report.md").read_text().startswith("#")
    assert (tmp_path / "run" / "plots" / f"{MAZE}.png").stat().st_size > 1000


class CyclePolicy(RandomPolicy):
    """Deterministic: legal action t mod n at step t. Any difference between two runs is the envs'."""

    def start(self, spec, demos, num_envs, rng):
        super().start(spec, demos, num_envs, rng)
        self.t = 0

    def act(self, obs, live):
        self.t += 1
        return np.full(self.n, self.legal[self.t % len(self.legal)], np.int32)


def test_same_levels_and_sticky_seeds_for_every_method(demo_store):
    cfg = EvalConfig(demos=str(demo_store.root), shots=[1], levels=2, episodes=3, sticky=0.5, max_steps=40)
    a = evaluate(cfg, [MAZE], {"a": Method(CyclePolicy())}, demo_store)
    b = evaluate(cfg, [MAZE], {"b": Method(CyclePolicy())}, demo_store)
    key = lambda rows: [(r["level"], r["episode"], r["return"], r["length"]) for r in rows]  # noqa: E731
    assert key(a) == key(b)
    # ... while the sticky draws differ between the episodes of a level (else 5 rollouts would be 1).
    assert len({(r["return"], r["length"]) for r in a}) > 1


def test_too_many_shots_is_an_error(demo_store):
    from icrl.errors import IcrlError

    cfg = EvalConfig(demos=str(demo_store.root), shots=[5], levels=1, episodes=1)
    with pytest.raises(IcrlError, match="5 demos asked"):
        evaluate(cfg, [MAZE], {"h": Method(HashmapPolicy())}, demo_store)
    with pytest.raises(IcrlError, match="no episodes of task"):
        evaluate(cfg, ["MiniHack-MazeWalk-9x9-v0"], {"h": Method(HashmapPolicy())}, demo_store)


def test_report_statistics():
    s = summarize([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.half_width == pytest.approx(2.4841, abs=1e-3)  # t(0.975, 2) * 1 / sqrt(3)
    rows = [{"task": "t", "method": "icl", "k": k, "level": lv, "return": float(lv + 2 * k), "success": True}
            for lv in range(4) for k in (0, 1) for _ in range(2)]
    g = gain(rows, "t", "icl", 1)
    assert g.mean == pytest.approx(2.0) and g.half_width == pytest.approx(0.0) and g.n == 4
    text = markdown_report(rows)
    assert "In-context gain" in text and "| t | +2.00" in text
    table = compare_runs({"runs/a": rows, "runs/b": rows[:8]})
    assert table.splitlines()[0] == "| task | k | a | b |"


def test_model_policy_cache_and_recompute_take_the_same_actions(demo_store):
    from flax import nnx

    from icrl.eval.model_policy import ModelPolicy
    from icrl.model.config import ModelConfig
    from icrl.model.decoding import Decoder
    from icrl.model.model import ICRLModel

    cfg = ModelConfig(preset="1M", num_layers=2, d_model=32, num_heads=2, max_tokens=160, dropout=0.0)
    decoder = Decoder(ICRLModel(cfg, rngs=nnx.Rngs(0)))
    level = demo_store.levels(MAZE)[0]
    demos = [demo_store.read(r) for r in demo_store.episodes_of(MAZE, level)[:1]]
    taken = {}
    for use_cache in (True, False):
        policy = ModelPolicy(decoder, cfg, use_cache=use_cache)
        actions = []
        act = policy.act
        policy.act = lambda obs, live, act=act: actions.append(act(obs, live)) or actions[-1]
        with make_vector_env(MAZE, 2, sticky_p=0.2, seed=3) as venv:
            run_level(venv, policy, level, demos, np.random.default_rng(1), max_steps=12)
        taken[use_cache] = np.stack(actions)
    assert taken[True].shape == (12, 2)
    np.testing.assert_array_equal(taken[True], taken[False])


def test_eval_tokens_set_the_evaluation_budget_apart_from_training():
    from icrl.eval.model_policy import ModelPolicy
    from icrl.model.config import ModelConfig

    cfg = ModelConfig(preset="1M", max_tokens=96, eval_tokens=160)
    assert (cfg.eval_budget, cfg.longest_sequence) == (160, 160)
    policy = ModelPolicy(None, cfg)
    assert (policy.demo_steps, policy.max_rollout_steps) == (40, 40)
    assert ModelPolicy(None, ModelConfig(preset="1M", max_tokens=96)).demo_steps == 24  # default: max_tokens
    with pytest.raises(ValueError, match="eval_tokens=160 exceeds max_tokens=96"):
        ModelConfig(preset="1M", positions="learned", max_tokens=96, eval_tokens=160)


@pytest.mark.slow
def test_eval_command_on_a_tiny_trained_model(demo_store, tmp_path, capsys):
    from icrl.data.synthetic import write_synthetic

    train_store = tmp_path / "train"
    TrajectoryStore.create(train_store)
    write_synthetic(train_store, "w", [("nethack", "MiniHack-MazeWalk-9x9-v0", lv, ep, 12 + lv)
                                       for lv in range(4) for ep in range(3)])
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny", "run_dir": str(tmp_path / "runs"),
        "data": {"sources": [{"path": str(train_store)}], "episodes_per_sequence": 2, "context_steps": 32,
                 "batch_size": 8},  # the tests emulate 8 devices, all data-parallel
        "model": {"preset": "1M", "num_layers": 1, "d_model": 32, "num_heads": 2, "max_tokens": 96},
        "train": {"steps": 3, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 1},
        "metrics": {"progress": False, "tensorboard": False},
    }))
    assert main(["train", str(exp)]) == 0
    run = tmp_path / "runs" / "tiny"
    assert main(["eval", str(run), "--demos", str(demo_store.root), "--tasks", MAZE, "--shots", "0,1",
                 "--levels", "1", "--episodes", "2", "--max-steps", "8", "--finetune-steps", "2",
                 "--methods", "icl,finetune,hashmap,random"]) == 0
    rows = json.loads((run / "eval" / "results.json").read_text())
    assert {(r["method"], r["k"]) for r in rows} == {("icl", 0), ("icl", 1), ("finetune", 0), ("finetune", 1),
                                                     ("hashmap", 1), ("random", 0)}
    assert len(rows) == 6 * 2 and all(r["length"] <= 8 for r in rows)
    assert (run / "report.md").is_file() and (run / "plots" / f"{MAZE}.png").is_file()
    other = tmp_path / "other"
    (other / "eval").mkdir(parents=True)
    (other / "eval" / "results.json").write_text(json.dumps(rows[:4]))
    capsys.readouterr()
    assert main(["report", str(run), str(other)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| task | k | tiny | other |" and len(table) == 4  # header, rule, icl at k=0 and 1


def test_eval_and_report_bad_input(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--demos", str(tmp_path / "none"), "--methods", "random"]) == 2
    assert "no such trajectory store" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no eval/results.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path), "--demos", "x", "--methods", "icl,magic"])
    assert "unknown method" in capsys.readouterr().err
