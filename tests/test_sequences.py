"""Bursty sequences and the Grain pipeline: determinism, resumption, host slices, burstiness,
packing rules and bad configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from icrl.config import ConfigError, load_config
from icrl.data.pipeline import SequenceSource, make_loader
from icrl.data.sequence_stats import render_sequence, sequence_stats
from icrl.data.sequences import SequenceConfig, SourceConfig
from icrl.store.reader import TrajectoryStore
from icrl.data.synthetic import nethack_episode, write_synthetic
from icrl.envs.actions import PAD_ACTION
from icrl.errors import IcrlError

TASKS = ("MiniHack-MazeWalk-9x9-v0", "MiniHack-Labyrinth-Small-v0")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """Two tasks x 12 levels x 3 episodes of 4..40 steps."""
    path = tmp_path_factory.mktemp("seq") / "store"
    TrajectoryStore.create(path)
    specs = [("nethack", task, lv, ep, 4 + (lv * 5 + ep * 3) % 37)
             for task in TASKS for lv in range(12) for ep in range(3)]
    write_synthetic(path, "w", specs)
    return path


def config(store_path, **kw) -> SequenceConfig:
    base = dict(sources=[SourceConfig(path=str(store_path))], episodes_per_sequence=4, context_steps=48,
                p_burst=0.6, batch_size=4, seed=3)
    return SequenceConfig(**{**base, **kw})


def batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in x:
            if key == "obs":
                for k in x["obs"]:
                    np.testing.assert_array_equal(x["obs"][k], y["obs"][k])
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_same_seed_same_batches_other_seed_differs(store_path):
    cfg = config(store_path)
    assert_batches_equal(batches(make_loader(cfg), 3), batches(make_loader(cfg), 3))
    other = batches(make_loader(config(store_path, seed=4)), 1)[0]
    assert not np.array_equal(other["slot_level"], batches(make_loader(cfg), 1)[0]["slot_level"])


def test_restored_iterator_continues_like_an_uninterrupted_one(store_path):
    cfg = config(store_path)
    straight = batches(make_loader(cfg), 5)
    it = iter(make_loader(cfg))
    for _ in range(3):
        next(it)
    state = it.get_state()
    resumed = iter(make_loader(cfg))
    resumed.set_state(state)
    assert_batches_equal([next(resumed), next(resumed)], straight[3:])


def test_two_processes_split_each_global_batch(store_path):
    cfg = config(store_path)
    single = batches(make_loader(cfg), 3)
    halves = [batches(make_loader(cfg, process_index=p, process_count=2), 3) for p in range(2)]
    for s, (a, b) in enumerate(zip(*halves)):
        assert not set(a["index"]) & set(b["index"])
        np.testing.assert_array_equal(np.concatenate([a["index"], b["index"]]), single[s]["index"])
        np.testing.assert_array_equal(np.concatenate([a["actions"], b["actions"]]), single[s]["actions"])
    with pytest.raises(IcrlError, match="does not split"):
        make_loader(config(store_path, batch_size=3), process_index=0, process_count=2)


@pytest.mark.parametrize("p_burst", [0.0, 0.6, 1.0])
def test_measured_burstiness_matches_configured(store_path, p_burst):
    source = SequenceSource(config(store_path, p_burst=p_burst))
    stats = sequence_stats(source, 10_000)
    assert abs(stats.burstiness - p_burst) <= 0.02
    assert stats.fallbacks == 0 and stats.episodes_per_sequence == 4


def test_sequences_hold_one_task_and_no_loss_on_padding(store_path):
    source = SequenceSource(config(store_path))
    store = source.stores[0]
    for i in range(40):
        seq = source[i]
        plan = source.plan(i)
        assert {store.index.ref(int(r)).task for r in plan.rows} == {plan.task}
        pad = seq["episode_id"] < 0
        assert not seq["loss_mask"][pad].any() and (seq["actions"][pad] == PAD_ACTION).all()
        assert (seq["obs"]["tty_chars"][pad] == 0).all()
        assert seq["loss_mask"][~pad].all()  # synthetic episodes all have actions
        assert seq["episode_start"].sum() == 4 and seq["legal_mask"].sum() == 8
        starts = np.flatnonzero(seq["episode_start"])
        assert (seq["episode_id"][starts] == np.arange(4)).all()


def test_packed_steps_equal_the_stored_episodes(store_path):
    source = SequenceSource(config(store_path))
    store = source.stores[0]
    seq, plan = source[7], source.plan(7)
    at = 0
    for row, start, n in zip(plan.rows, plan.starts, plan.lengths):
        ep = store.read(store.index.ref(int(row)))
        window = slice(int(start), int(start) + int(n))
        np.testing.assert_array_equal(seq["obs"]["tty_chars"][at:at + n], ep.observations["tty_chars"][window])
        np.testing.assert_array_equal(seq["actions"][at:at + n], ep.actions[window])
        np.testing.assert_array_equal(seq["timestep"][at:at + n], np.arange(start, start + n))
        at += int(n)


def test_long_episodes_are_cut_to_a_window(store_path):
    cfg = config(store_path, context_steps=32, episodes_per_sequence=4)  # window = 8 steps
    source = SequenceSource(cfg)
    stats = sequence_stats(source, 200)
    assert stats.cut_episodes > 0.5 and stats.padding < 0.1
    for i in range(50):
        plan = source.plan(i)
        full = source.catalogs[0].length[plan.rows]
        assert (plan.lengths == np.minimum(full, 8)).all()
        assert ((plan.starts >= 0) & (plan.starts + plan.lengths <= full)).all()


def test_single_mode_has_one_trajectory(store_path):
    source = SequenceSource(config(store_path, mode="single", context_steps=40))
    for i in range(20):
        seq = source[i]
        assert seq["episode_start"].sum() == 1 and set(np.unique(seq["episode_id"])) <= {-1, 0}
    assert "single" in render_sequence(source, 0) or "plain" in render_sequence(source, 0)


def test_observation_only_episodes_carry_no_loss(tmp_path):
    path = tmp_path / "nao"
    store = TrajectoryStore.create(path)
    with store.writer("w") as w:
        for lv in range(4):  # 4 games of 2 pieces
            for piece in range(2):
                ep = nethack_episode(lv, task="nld-nao:Wizard", level=lv, episode=piece, length=6, source="nld-nao")
                w.append(dataclasses.replace(ep, has_actions=False, actions=np.full(6, PAD_ACTION, np.int32)))
    source = SequenceSource(SequenceConfig(sources=[SourceConfig(path=str(path))], episodes_per_sequence=2,
                                           context_steps=12, p_burst=0.0))
    seq = source[0]
    # one game's two pieces fill the sequence; only the game's start is marked; nothing is a target
    assert (seq["episode_id"] >= 0).all() and seq["episode_start"].sum() == 1 and not seq["loss_mask"].any()


def test_bad_configs_fail_before_anything_runs(store_path, tmp_path):
    with pytest.raises(IcrlError, match="need at least 13 distinct levels"):
        SequenceSource(config(store_path, episodes_per_sequence=13))
    with pytest.raises(IcrlError, match=str(tmp_path / "missing")):
        SequenceSource(config(tmp_path / "missing"))
    with pytest.raises(IcrlError, match="no episodes of task"):
        SequenceSource(config(store_path).model_copy(
            update={"sources": [SourceConfig(path=str(store_path), tasks=["MiniHack-Nope-v0"])]}))
    with pytest.raises(IcrlError, match="sources is empty"):
        SequenceSource(SequenceConfig())
    cfg_file = tmp_path / "seq.yaml"
    cfg_file.write_text("context_steps: 3\nepisodes_per_sequence: 4\n")
    with pytest.raises(ConfigError, match="too short"):
        load_config(SequenceConfig, cfg_file)
    cfg_file.write_text("sources: [{path: x, weight: 0}]\n")
    with pytest.raises(ConfigError, match="sources.0.weight"):
        load_config(SequenceConfig, cfg_file)


def test_sources_mix_by_weight(store_path, tmp_path):
    other = tmp_path / "other"
    TrajectoryStore.create(other)
    write_synthetic(other, "w", [("nethack", TASKS[0], lv, 0, 10) for lv in range(6)])
    cfg = config(store_path, sources=[SourceConfig(path=str(store_path), weight=3.0),
                                      SourceConfig(path=str(other), weight=1.0)], p_burst=0.0)
    source = SequenceSource(cfg)
    share = np.mean([source.plan(i).source == 1 for i in range(4000)])
    assert abs(share - 0.25) < 0.03


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(store_path):
    cfg = config(store_path)
    assert_batches_equal(batches(make_loader(cfg), 3),
                         batches(make_loader(cfg.model_copy(update={"worker_count": 1})), 3))


def test_data_sequences_command(store_path, tmp_path, capsys):
    import yaml

    from icrl.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"data": {"sources": [{"path": str(store_path)}], "episodes_per_sequence": 3,
                                            "context_steps": 40, "p_burst": 0.6}}))
    assert main(["data", "sequences", str(exp), "--show", "2", "--stats", "3000"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[1].startswith("#0") and lines[2].startswith("#1")
    measured = float(lines[-1].split()[2])
    assert lines[-1].startswith("burstiness: measured") and lines[-1].endswith("configured 0.6")
    assert abs(measured - 0.6) < 0.03
    # With recall: the fraction of targets that recall an action, and how often it is the target.
    assert main(["data", "sequences", str(exp), "--set", "data.recall=cell", "--stats", "40"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("recall (cell), over 40 rows:")
    hit, agree = (float(w.rstrip("%")) for w in last.split() if w.endswith("%"))
    # Bursty rows walk one room twice (hits), first episodes recall nothing; the synthetic walks
    # are random, so a recalled action is the target about 1 time in 8, not always.
    assert 0 < hit < 100 and 0 < agree < 50
    assert main(["data", "sequences", str(exp), "--set", "data.p_burst=2"]) == 2
    assert "p_burst" in capsys.readouterr().err
    exp.write_text("model: {}\n")
    assert main(["data", "sequences", str(exp)]) == 2
    assert "no `data:` section" in capsys.readouterr().err


def test_the_stream_does_not_depend_on_how_the_store_was_written(tmp_path):
    """The same episodes, written by two writers in another order (as a parallel collection does),
    give the same sequences: sampling reads episodes by (task, level, episode), not index row."""
    specs = [("nethack", TASKS[0], lv, ep, 4 + (lv * 5 + ep * 3) % 37) for lv in range(10) for ep in range(3)]
    one, two = tmp_path / "one", tmp_path / "two"
    for path in (one, two):
        TrajectoryStore.create(path)
    write_synthetic(one, "w", specs)
    write_synthetic(two, "b", specs[1::2])
    write_synthetic(two, "a", specs[0::2][::-1])
    assert [r.level for r in TrajectoryStore(one)] != [r.level for r in TrajectoryStore(two)]
    a, b = (batches(make_loader(config(p, episodes_per_sequence=3)), 3) for p in (one, two))
    assert_batches_equal(a, b)
