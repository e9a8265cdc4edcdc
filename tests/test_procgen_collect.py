"""Collecting Procgen expert data: `icrl collect` with the search expert, and the store it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrl.cli import main
from icrl.collect.levels import attempt_seeds, level_seed
from icrl.envs import make_env
from icrl.envs.actions import PROCGEN_OFFSET
from icrl.store.episode import Episode
from icrl.store.reader import TrajectoryStore

REPO = Path(__file__).resolve().parents[1]


def test_a_collected_procgen_store_round_trips_and_verifies(tmp_path: Path, capsys) -> None:
    out = tmp_path / "store"
    argv = ["collect", "--suite", str(REPO / "envs" / "procgen.yaml"), "--split", "heldout", "--tasks",
            "procgen:jumper", "--levels", "1", "--episodes-per-level", "2", "--sticky", "0.2", "--workers", "0",
            "--keep-failed", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "stored 2 episodes" in capsys.readouterr().out
    assert main(["data", "verify", str(out)]) == 0
    assert "OK: 2 records checked" in capsys.readouterr().out
    level = level_seed("heldout", 0)
    with TrajectoryStore(out) as store:
        episodes: list[Episode] = [store.read(r) for r in sorted(store, key=lambda r: r.episode)]
    assert [(e.task, e.level, e.episode, e.domain) for e in episodes] == [
        ("procgen:jumper", level, 0, "procgen"), ("procgen:jumper", level, 1, "procgen")]
    for ep in episodes:
        assert ep.observations["rgb"].shape == (ep.length, 64, 64, 3) and ep.terminated != ep.truncated
        assert ((ep.actions >= PROCGEN_OFFSET) & (ep.actions < PROCGEN_OFFSET + 15)).all()
        # The stored frames and rewards are what the env shows for the stored actions, replayed
        # with the attempt's sticky-action seed.
        sticky_seed, _ = attempt_seeds(0, ep.task, ep.level, ep.episode, 0)
        env = make_env(ep.task, sticky_p=0.2, seed=sticky_seed)
        obs = env.reset(ep.level)
        for t in range(ep.length):
            assert np.array_equal(obs["rgb"], ep.observations["rgb"][t]), t
            obs, reward, *_ = env.step(int(ep.actions[t]))
            assert reward == ep.rewards[t]
        env.close()
    # Run again: every episode is there, nothing is played.
    assert main(argv) == 0
    assert "0 to play" in capsys.readouterr().out


def test_the_procgen_quickstart_recipes_and_experiment_fit_together() -> None:
    """`make quickstart-procgen`: the 12 train games and the 4 held-out ones on disjoint level seeds,
    and the experiment trains on the train recipe's store, with the demos as its diagnostic."""
    from icrl.collect.config import CollectConfig, resolve
    from icrl.config import load_config
    from icrl.train.config import load_experiment

    train = load_config(CollectConfig, REPO / "datasets" / "quickstart-procgen-train.yaml")
    demos = load_config(CollectConfig, REPO / "datasets" / "quickstart-procgen-demos.yaml")
    rt, rd = resolve(train), resolve(demos)
    assert len(rt.tasks) == 12 and set(rd.tasks) == {"procgen:climber", "procgen:ninja", "procgen:plunder",
                                                      "procgen:jumper"}
    assert set(rt.levels).isdisjoint(rd.levels) and train.episodes_per_level >= 2 and train.keep_failed
    exp = load_experiment(REPO / "experiments" / "quickstart-procgen.yaml")
    assert exp.model.domain == "procgen" and [s.path for s in exp.data.sources] == [train.out]
    assert exp.diagnostic.demos == demos.out
    makefile = (REPO / "Makefile").read_text()
    assert f"--max-steps {exp.data.window}" in makefile.split("quickstart-procgen: setup")[1]  # rollouts = windows
