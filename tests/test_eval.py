"""Few-shot evaluation: the rollout driver, Hashmap as an oracle, common random numbers (sticky
draws per rollout at every k and method), batched rollouts equal to one level at a time, cached vs
recomputed model rollouts, per-level fine-tuning, results.json / report.md / plots, the eval and
report commands, and the checks before any model is loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from icrl.cli import main
from icrl.collect.config import CollectConfig
from icrl.collect.run import run_collection
from icrl.data.layout import ContextLayout
from icrl.data.recall import NO_RECALL
from icrl.store.reader import TrajectoryStore
from icrl.envs import make_vector_env
from icrl.envs.wrappers import StickyVectorEnv
from icrl.eval.evaluate import EvalConfig, Method, evaluate
from icrl.eval.outputs import compare_runs, write_outputs
from icrl.eval.policies import HashmapPolicy, RandomPolicy
from icrl.eval.report import gain, markdown_report, summarize
from icrl.eval.rollout import run_level

MAZE = "MiniHack-MazeWalk-15x15-v0"
# 3 episodes of up to 40 steps in 120, 2 tokens a step: 160 tokens with 3 demos, as max_tokens.
LAYOUT = ContextLayout(episodes=3, window=40, context_steps=120, tokens_per_step=2, positions="rope")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """Oracle demos of 2 held-out levels of MazeWalk-15x15, 3 per level, without sticky actions."""
    out = tmp_path_factory.mktemp("demos") / "store"
    run_collection(CollectConfig(suite="minihack", split="heldout", tasks=[MAZE], levels=2,
                                 episodes_per_level=3, sticky=0.0, workers=0, out=str(out)))
    return TrajectoryStore(out)


def test_hashmap_replays_a_demo_exactly_in_a_deterministic_level(demo_store):
    from icrl.data.recall import recall_keys

    exact = 0
    for level in demo_store.levels(MAZE):
        demo = demo_store.read(demo_store.episodes_of(MAZE, level)[0])
        screens = set(recall_keys(demo.observations, "screen"))
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
    # Cut by --max-steps (through the env's time limit) is a truncation; random play never reaches the exit.
    assert all(r["truncated"] == (r["length"] == 30 and not r["success"]) for r in rows)
    assert any(r["truncated"] for r in rows)
    levels = demo_store.levels(MAZE)
    assert [(r["level"], r["method"], r["k"], r["episode"]) for r in rows] == [  # the per-level protocol's order
        (lv, m, k, i) for lv in levels for m, ks in (("hashmap", (1, 2)), ("random", (0,))) for k in ks
        for i in range(2)]
    report = write_outputs(rows, tmp_path / "run", cfg)
    saved = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert saved == rows
    assert "## MiniHack-MazeWalk-15x15-v0" in report and (tmp_path / "run" / "report.md").read_text().startswith("#")
    assert (tmp_path / "run" / "plots" / f"{MAZE}.png").stat().st_size > 1000


class CyclePolicy(RandomPolicy):
    """Deterministic: legal action t mod n at step t, whatever the demos. Records every row's
    screens, so any difference between two runs is the envs' (their sticky draws)."""

    def __init__(self):
        self.traces: list[list[list[bytes]]] = []  # per start: per row, the screens it met

    def start(self, spec, demos, row_demos, rngs):
        super().start(spec, demos, row_demos, rngs)
        self.t, self.n = 0, len(rngs)
        self.traces.append([[] for _ in range(self.n)])

    def act(self, obs, live):
        from icrl.data.recall import recall_keys

        keys = recall_keys({k: obs[k] for k in ("tty_chars", "tty_cursor")}, "screen")
        for i in np.flatnonzero(live):
            self.traces[-1][i].append(keys[i])
        self.t += 1
        return np.full(self.n, self.legal[self.t % len(self.legal)], np.int32)


def test_rollout_i_of_a_level_meets_the_same_sticky_draws_at_every_k_and_method(demo_store):
    cfg = EvalConfig(demos=str(demo_store.root), shots=[0, 1, 2], levels=2, episodes=3, sticky=0.5, max_steps=40)
    a, b = CyclePolicy(), CyclePolicy()
    rows = evaluate(cfg, [MAZE], {"a": Method(a), "b": Method(b, shots=[1])}, demo_store)
    # One batch per (method, k): rows level-major, 3 rollouts per level; a plays k = 0, 1, 2 and b k = 1.
    traces = [t for policy in (a, b) for t in policy.traces]
    assert len(traces) == 4 and all(len(t) == 2 * 3 for t in traces)
    for row in range(6):
        assert len({tuple(t[row]) for t in traces}) == 1, f"row {row} met other sticky draws at another k or method"
    key = lambda r: (r["level"], r["episode"])  # noqa: E731
    outcome = {}
    for r in rows:
        outcome.setdefault(key(r), set()).add((r["return"], r["length"]))
    assert all(len(v) == 1 for v in outcome.values())
    # ... while the sticky draws differ between the rollouts of a level (else 3 rollouts would be 1).
    assert len({tuple(traces[0][row]) for row in range(3)}) > 1


def test_sticky_vector_env_reseeds_each_row_at_reset():
    """Row r reset with seed s plays exactly as a fresh ``StickyActions(env, p, s)``, whatever it played before."""
    from icrl.envs import make_env
    from icrl.envs.wrappers import StickyVectorEnv

    p, steps, seeds = 0.5, 25, [(7, 0), (7, 1)]

    def play(venv, reset_seeds):
        obs = venv.reset([0, 0], seeds=reset_seeds)
        legal = venv.spec.legal_actions
        screens = [[obs["tty_chars"][i].tobytes()] for i in range(2)]
        for t in range(steps):
            out = venv.step(np.full(2, legal[t % 4], np.int32))
            for i in range(2):
                screens[i].append(out.obs["tty_chars"][i].tobytes())
        return screens

    with StickyVectorEnv(make_vector_env(MAZE, 2), p) as venv:
        first = play(venv, seeds)
        swapped = play(venv, seeds[::-1])  # the generators restart: no carry-over from the first episodes
    assert swapped == first[::-1] and first[0] != first[1]
    env = make_env(MAZE, sticky_p=p, seed=seeds[0])
    screens = [env.reset(0)["tty_chars"].tobytes()]
    done = False
    for t in range(steps):
        if not done:  # an ended env of a batch keeps its last screen
            obs, _, terminated, truncated, _ = env.step(int(env.spec.legal_actions[t % 4]))
            done = terminated or truncated
        screens.append(obs["tty_chars"].tobytes())
    env.close()
    assert screens == first[0]


def test_batched_evaluation_equals_one_level_at_a_time(demo_store):
    """The rows of every level at once (one batch per method and k) are those of one level at a time."""
    from icrl.eval.policies import ExpertPolicy

    cfg = EvalConfig(demos=str(demo_store.root), shots=[0, 1, 2], levels=2, episodes=3, sticky=0.3, max_steps=30)

    def methods():
        return {"hashmap": Method(HashmapPolicy(), shots=[1, 2]), "random": Method(RandomPolicy(), shots=[0]),
                "expert": Method(ExpertPolicy(), shots=[0]),
                "icl": Method(_tiny_model_policy(sample=True), shots=[0, 2])}

    batched = evaluate(cfg, [MAZE], methods(), demo_store)
    one_by_one = evaluate(cfg.model_copy(update={"level_batch": 1}), [MAZE], methods(), demo_store)
    assert len(batched) == 2 * 3 * (2 + 1 + 1 + 2)
    assert batched == one_by_one
    # The policies' own draws matter: random rollouts of one level differ.
    assert len({(r["return"], r["length"]) for r in batched if r["method"] == "random"}) > 1


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
    assert "In-context gain" in text and "| t | 1 (primary) | +0 pp ± 0 | no | +2.00 ± 0.00 |" in text
    table = compare_runs({"runs/a": rows, "runs/b": rows[:8]})
    assert table.splitlines()[2] == "| task | k | a | b | over runs |"


def _tiny_model(dropout: float = 0.0, recall: str = "none"):
    from flax import nnx

    from icrl.model.config import ModelConfig
    from icrl.model.model import ICRLModel

    cfg = ModelConfig(preset="1M", num_layers=2, d_model=32, num_heads=2, max_tokens=160, dropout=dropout,
                      recall=recall)
    return ICRLModel(cfg, rngs=nnx.Rngs(0)), cfg


def _tiny_model_policy(sample: bool = False, use_cache: bool = True, recall: str = "none"):
    import dataclasses

    from icrl.eval.model_policy import ModelPolicy
    from icrl.model.decoding import Decoder

    layout = dataclasses.replace(LAYOUT, recall=recall)
    return ModelPolicy(Decoder(_tiny_model(recall=recall)[0]), layout, use_cache=use_cache, greedy=not sample)


@pytest.mark.parametrize("k, recall", [(1, "none"), (2, "none"), (1, "cell")])
def test_model_policy_cache_and_recompute_take_the_same_actions(demo_store, k, recall):
    """Two levels' demos (of different lengths) in one batch, 2 rollouts each, sampling; with recall,
    each step's recalled action reaches the model both ways."""
    from icrl.eval.rollout import run_rows

    levels = demo_store.levels(MAZE)[:2]
    demos = [[demo_store.read(r) for r in sorted(demo_store.episodes_of(MAZE, lv), key=lambda r: r.episode)[:k]]
             for lv in levels]
    assert len({sum(min(d.length, LAYOUT.window) for d in ds) for ds in demos}) == 2  # unequal context lengths
    row_demos = np.array([0, 0, 1, 1])
    taken, recalled = {}, {}
    for use_cache in (True, False):
        policy = _tiny_model_policy(sample=True, use_cache=use_cache, recall=recall)
        actions, recalls = [], []

        def act(obs, live, act=policy.act, policy=policy, actions=actions, recalls=recalls):
            actions.append(act(obs, live))
            recalls.append(policy._pending_recall)
            return actions[-1]

        policy.act = act
        with StickyVectorEnv(make_vector_env(MAZE, 4), 0.2) as venv:
            run_rows(venv, policy, demos, row_demos, [levels[i] for i in row_demos],
                     [np.random.default_rng(i) for i in range(4)], seeds=[(3, i) for i in range(4)], max_steps=12)
        taken[use_cache] = np.stack(actions)
        recalled[use_cache] = None if recall == "none" else np.stack(recalls)
    assert taken[True].shape == (12, 4)
    if recall != "none":  # rollouts start where their demos started: recalled actions reach the model
        np.testing.assert_array_equal(recalled[True], recalled[False])
        assert (recalled[True][0] != NO_RECALL).all()
    np.testing.assert_array_equal(taken[True], taken[False])
    assert len({tuple(c) for c in taken[True].T}) > 1  # the rows' own keys: not one sample for all


def test_model_policy_split_over_devices_takes_the_same_actions(demo_store):
    """Rollout rows split over 4 of the 8 emulated devices (params replicated, cache by row) act as
    on one device; the cache really is split."""
    from icrl.eval.model_policy import ModelPolicy
    from icrl.eval.rollout import run_rows
    from icrl.model.decoding import Decoder

    levels = demo_store.levels(MAZE)[:2]
    demos = [[demo_store.read(sorted(demo_store.episodes_of(MAZE, lv), key=lambda r: r.episode)[0])] for lv in levels]
    row_demos = np.array([0, 0, 1, 1])
    taken = {}
    for devices in (1, 4):
        policy = ModelPolicy(Decoder(_tiny_model()[0]), LAYOUT, greedy=False, devices=devices)
        actions = []
        act = policy.act
        policy.act = lambda obs, live, act=act: actions.append(act(obs, live)) or actions[-1]
        with StickyVectorEnv(make_vector_env(MAZE, 4), 0.2) as venv:
            run_rows(venv, policy, demos, row_demos, [levels[i] for i in row_demos],
                     [np.random.default_rng(i) for i in range(4)], seeds=[(5, i) for i in range(4)], max_steps=10)
        taken[devices] = np.stack(actions)
        layer = policy.cache.keys[0]
        own = layer.own if hasattr(layer, "own") else layer
        assert len(own.sharding.device_set) == devices
    np.testing.assert_array_equal(taken[1], taken[4])


def test_finetune_rolls_every_level_out_against_its_own_parameters(demo_store):
    """Fine-tuned per level and decoded all levels at once (vmap over the levels' parameters): each
    level's rows get its own parameters' logits, and the rows equal one level at a time."""
    import jax
    import jax.numpy as jnp

    from icrl.eval.finetune import FinetunePolicy, GroupDecoder, param_distance
    from icrl.model.decoding import Decoder

    model, mcfg = _tiny_model()
    cfg = EvalConfig(demos=str(demo_store.root), shots=[1], levels=2, episodes=2, sticky=0.2, max_steps=10)
    policy = FinetunePolicy(model, mcfg, LAYOUT, steps=3, learning_rate=1e-2, greedy=True)
    runs = {batch: evaluate(cfg.model_copy(update={"level_batch": batch}), [MAZE], {"finetune": Method(policy)},
                            demo_store) for batch in (1, None)}  # the last start: both levels
    assert runs[None] == runs[1] and len(runs[None]) == 2 * 2

    per_level = [jax.tree.map(lambda a, g=g: a[g], policy.tuned) for g in range(2)]
    assert param_distance(per_level[0], policy.params) > 1e-3 and param_distance(*per_level) > 1e-3
    with make_vector_env(MAZE, 4) as venv:
        first, second = demo_store.levels(MAZE)[:2]
        obs = {k: jnp.asarray(v) for k, v in venv.reset([first, first, second, second]).items()}
        legal = jnp.asarray(np.broadcast_to(venv.spec.legal_mask, (4, venv.spec.legal_mask.shape[0])))
    args = (obs, jnp.ones(4, bool), jnp.zeros(4, jnp.int32), legal)
    empty = lambda: model.init_cache(4, LAYOUT.tokens(0))  # noqa: E731
    grouped, _ = GroupDecoder(policy.template, policy.tuned, 2, policy.decoder).observe(empty(), *args)
    own = [Decoder(policy.template.build(p)).observe(empty(), *args)[0] for p in per_level]
    for g in range(2):
        rows = slice(2 * g, 2 * g + 2)
        np.testing.assert_allclose(grouped[rows], own[g][rows], atol=1e-5)
        assert not np.allclose(grouped[rows], own[1 - g][rows], atol=1e-5)  # not the other level's parameters


@pytest.mark.slow
def test_eval_command_on_a_tiny_trained_model(demo_store, tmp_path, capsys):
    from icrl.data.synthetic import write_synthetic

    train_store = tmp_path / "train"
    TrajectoryStore.create(train_store)
    seen = demo_store.levels(MAZE)[1]  # a demo level the run also trains on (the check must catch it)
    write_synthetic(train_store, "w", [("nethack", "MiniHack-MazeWalk-9x9-v0", lv, ep, 12 + lv)
                                       for lv in range(4) for ep in range(3)]
                    + [("nethack", MAZE, seen, ep, 12) for ep in range(2)])
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
    argv = ["eval", str(run), "--demos", str(demo_store.root), "--tasks", MAZE, "--shots", "0,1,2", "--levels", "2",
            "--episodes", "2", "--max-steps", "8", "--finetune-steps", "2", "--methods", "icl,finetune,hashmap,random"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{MAZE}: 1 of the 2 evaluation levels" in err and f"levels {seen};" in err and "Traceback" not in err
    assert not (run / "eval").exists()
    assert main(argv + ["--allow-train-levels"]) == 0
    out = capsys.readouterr().out
    assert "warning: k=2: more-demos-than-training" in out  # E=2: training contexts held 1 episode before the query
    rows = json.loads((run / "eval" / "results.json").read_text())
    assert {(r["method"], r["k"]) for r in rows} == {*[(m, k) for m in ("icl", "finetune") for k in (0, 1, 2)],
                                                     ("hashmap", 1), ("hashmap", 2), ("random", 0)}
    assert len(rows) == 9 * 2 * 2 and all(r["length"] <= 8 for r in rows)
    meta = json.loads((run / "eval" / "meta.json").read_text())
    assert meta["primary_k"] == 1 and meta["layout"]["episodes"] == 2 and list(meta["warnings"]) == ["2"]
    assert meta["levels"] == {MAZE: demo_store.levels(MAZE)[:2]}
    assert (run / "report.md").is_file() and (run / "plots" / f"{MAZE}.png").is_file()
    other = tmp_path / "other"
    (other / "eval").mkdir(parents=True)
    (other / "eval" / "results.json").write_text(json.dumps([r for r in rows if r["k"] < 2][:4]))
    capsys.readouterr()
    assert main(["report", str(run), str(other)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert any(line.startswith("| task | k | tiny | other |") for line in table)  # the layout: icrl.eval.outputs


def _run_dir(tmp_path, source, domain: str = "nethack"):
    """A run directory with a config.yaml (no checkpoint): the checks all come before loading one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": "run", "run_dir": str(tmp_path),
        "data": {"sources": [{"path": str(source)}], "episodes_per_sequence": 2, "context_steps": 32, "batch_size": 8},
        "model": {"preset": "1M", "domain": domain, "max_tokens": 96}}))
    return run


def test_eval_refuses_demo_levels_the_run_trained_on(demo_store, tmp_path, capsys):
    run = _run_dir(tmp_path, demo_store.root)  # trained on the demo store itself
    assert main(["eval", str(run), "--demos", str(demo_store.root), "--tasks", MAZE, "--shots", "0,1",
                 "--levels", "2", "--methods", "icl,random"]) == 2
    err = capsys.readouterr().err
    levels = ", ".join(map(str, demo_store.levels(MAZE)))
    assert f"{MAZE}: 2 of the 2 evaluation levels" in err and f"levels {levels};" in err
    assert "--allow-train-levels" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing written


def test_eval_refuses_what_cannot_apply_before_loading_a_model(demo_store, tmp_path, capsys):
    demos = ["--demos", str(demo_store.root)]
    run = _run_dir(tmp_path, tmp_path / "no-store", domain="procgen")
    assert main(["eval", str(run), *demos, "--tasks", MAZE, "--shots", "0,1", "--methods", "icl"]) == 2
    assert "the model reads procgen observations (model.domain), MiniHack-MazeWalk-15x15-v0 is a nethack task" \
        in capsys.readouterr().err
    assert main(["eval", str(tmp_path), *demos, "--tasks", "NetHackChallenge-v0", "--shots", "0", "--primary-k", "0",
                 "--methods", "random,expert"]) == 2
    assert "method 'expert' does not apply to NetHackChallenge-v0 (nethack)" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), *demos, "--tasks", MAZE, "--shots", "0,2", "--methods", "random"]) == 2
    assert "--primary-k 1 is not one of --shots 0,2" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere"), *demos, "--tasks", MAZE, "--methods", "random"]) == 2
    assert "no such run directory" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and sorted(p.name for p in run.iterdir()) == [
        "config.yaml"]


def test_eval_says_when_the_store_has_fewer_levels_than_asked(demo_store, tmp_path, capsys):
    out = tmp_path / "baselines"
    out.mkdir()
    assert main(["eval", str(out), "--demos", str(demo_store.root), "--tasks", MAZE, "--shots", "0,1", "--levels", "5",
                 "--episodes", "1", "--max-steps", "3", "--methods", "random,hashmap"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warning:")]
    assert lines == [f"warning: {MAZE}: the demo store has 2 levels, --levels asked 5; evaluating on 2"]
    assert json.loads((out / "eval" / "meta.json").read_text())["levels"] == {MAZE: demo_store.levels(MAZE)}


def test_eval_and_report_bad_input(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--demos", str(tmp_path / "none"), "--methods", "random"]) == 2
    assert "no such trajectory store" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no eval/results.json" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--demos", "x", "--devices", "9"]) == 2  # 8 emulated devices
    assert capsys.readouterr().err.strip() == "icrl eval: error: --devices 9: this process has 8 local device(s)"
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path), "--demos", "x", "--methods", "icl,magic"])
    assert "unknown method" in capsys.readouterr().err
