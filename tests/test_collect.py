"""``icrl collect`` and ``icrl play``: level seeds, recipes, workers, resume, failures, play (kills of a
run or a worker: tests/test_faults.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icrl.cli import main
from icrl.config import load_config
from icrl.collect.config import CollectConfig, resolve
from icrl.collect.levels import LEVELS_PER_SPLIT, attempt_seeds, level_seed, split_levels
from icrl.collect.run import run_collection
from icrl.store.episode import OBS_SPECS, episode_equal
from icrl.store.reader import TrajectoryStore
from icrl.store.verify import verify_store
from icrl.errors import IcrlError

REPO = Path(__file__).resolve().parents[1]
MAZE, MONSTER = "MiniHack-MazeWalk-9x9-v0", "MiniHack-MultiRoom-N2-Monster-v0"


def small(out: Path, **kw: object) -> CollectConfig:
    base = dict(suite="minihack", split="train", tasks=[MAZE, MONSTER], levels=3, episodes_per_level=2,
                sticky=0.2, workers=0, out=str(out))
    return CollectConfig(**{**base, **kw})


def stored_keys(path: Path) -> list[tuple[str, int, int]]:
    return sorted((r.task, r.level, r.episode) for r in TrajectoryStore(path))


# ------------------------------------------------------------------------------ seeds and recipes


def test_train_and_heldout_level_seeds_never_overlap() -> None:
    train = split_levels("train", LEVELS_PER_SPLIT)  # the whole block a split can ever use
    heldout = split_levels("heldout", LEVELS_PER_SPLIT)
    assert train.stop <= heldout.start and heldout.stop <= 2**31  # disjoint, and int32 for Procgen
    assert level_seed("train", 5) == 5 and level_seed("heldout", 5) == LEVELS_PER_SPLIT + 5
    assert list(split_levels("heldout", 3, first=2)) == [level_seed("heldout", i) for i in (2, 3, 4)]
    with pytest.raises(IcrlError, match="outside"):
        split_levels("train", 2, first=LEVELS_PER_SPLIT - 1)  # would run into the held-out block
    with pytest.raises(IcrlError, match="no level seeds for split 'valid'"):
        level_seed("valid", 0)


def test_attempt_seeds_are_stable_and_distinct() -> None:
    a = attempt_seeds(0, MAZE, 3, 1, 0)
    assert a == attempt_seeds(0, MAZE, 3, 1, 0)
    others = {attempt_seeds(0, MAZE, 3, 1, 1), attempt_seeds(0, MAZE, 3, 2, 0), attempt_seeds(1, MAZE, 3, 1, 0),
              attempt_seeds(0, MONSTER, 3, 1, 0)}
    assert a not in others and len(others) == 4 and a[0] != a[1]


def test_shipped_recipes_resolve() -> None:
    train = load_config(CollectConfig, REPO / "datasets" / "minihack-train.yaml")
    demos = load_config(CollectConfig, REPO / "datasets" / "minihack-heldout-demos.yaml")
    rt, rd = resolve(train), resolve(demos)
    assert len(rt.tasks) == 12 and len(rt.levels) * len(rt.tasks) >= 100_000 and rt.sticky == 0.2
    assert len(rd.tasks) == 5 and len(rd.levels) == 20 and demos.episodes_per_level >= 7
    assert set(rt.levels).isdisjoint(rd.levels) and not set(rt.tasks) & set(rd.tasks)


@pytest.mark.parametrize(("text", "message"), [
    ("suite: minihack\nout: x\nlevelz: 3\n", "unknown key 'levelz'"),
    ("suite: minihack\nout: x\nlevels: 0\n", "levels = 0"),
    ("suite: minihack\nout: x\ntasks: [MiniHack-MazeWalk-15x15-v0]\n", "not in split 'train'"),
    ("suite: minihack\nlevels: 2\n", "out: no output store given"),
    ("suite: minihack\nout: x\nsplit: valid\n", "no split 'valid'"),
    ("suite: nosuch\nout: x\n", "no suite file 'nosuch'"),
    ("suite: nethack\nout: x\n", "no expert for task 'NetHackChallenge-v0'"),
])
def test_bad_recipes_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    assert main(["collect", "--recipe", str(recipe), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "x").exists()  # nothing written before the input was checked


def test_flags_override_the_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"suite: minihack\nsplit: train\ntasks: [{MONSTER}]\nlevels: 50\nsticky: 0.2\n"
                      f"out: {tmp_path / 'never'}\n")
    out = tmp_path / "s"
    argv = ["collect", "--recipe", str(recipe), "--set", "levels=2", "--tasks", MAZE, "--episodes-per-level", "1",
            "--workers", "0", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert stored_keys(out) == [(MAZE, 0, 0), (MAZE, 1, 0)]
    assert "stored 2 episodes" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- collection


def test_two_workers_store_each_episode_once_and_resume_gives_the_same_data(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    report = run_collection(small(a, workers=2))
    assert report.complete and report.workers == 2 and report.planned == 12
    assert report.stored + len(report.gave_up) == 12 and report.attempts == report.stored + report.dropped
    keys = stored_keys(a)
    assert len(keys) == len(set(keys)) == report.stored
    assert verify_store(a).ok
    store = TrajectoryStore(a)
    for ref in store:
        ep = store.read(ref)
        assert ep.source == "oracle" and ep.success and ep.level in range(3)
        assert set(ep.observations) == set(OBS_SPECS["nethack"])  # glyphs etc. are not stored
        assert ep.observations["tty_chars"].shape == (ep.length, 24, 80)

    # Re-running skips everything stored (given-up episodes would be tried again).
    again = run_collection(small(a))
    assert again.already_stored == report.stored and again.planned == len(report.gave_up)

    # A run interrupted after 2 levels and resumed in-process stores exactly the same episodes.
    part = run_collection(small(b, levels=2))
    rest = run_collection(small(b))
    assert rest.already_stored == part.stored and stored_keys(b) == keys
    sa, sb = TrajectoryStore(a), TrajectoryStore(b)
    for task, level, e in keys:
        [ra] = [r for r in sa.episodes_of(task, level) if r.episode == e]
        [rb] = [r for r in sb.episodes_of(task, level) if r.episode == e]
        assert episode_equal(sa.read(ra), sb.read(rb))


def test_failed_episodes_are_dropped_or_kept(tmp_path: Path) -> None:
    # 4 steps are too few to solve most 9x9 mazes: many attempts fail.
    cfg = dict(tasks=[MAZE], levels=4, episodes_per_level=2, max_steps=4, max_attempts=2)
    drop = run_collection(small(tmp_path / "drop", **cfg))
    assert drop.dropped > 0 and drop.attempts == drop.stored + drop.dropped
    assert drop.stored + len(drop.gave_up) == 8 and drop.complete
    assert all(r.success for r in TrajectoryStore(tmp_path / "drop"))
    # Given-up episodes are tried again on a re-run (same seeds: same outcome).
    again = run_collection(small(tmp_path / "drop", **cfg))
    assert again.planned == len(drop.gave_up) and sorted(again.gave_up) == sorted(drop.gave_up)

    keep = run_collection(small(tmp_path / "keep", keep_failed=True, **cfg))
    assert keep.stored == 8 and keep.attempts == 8 and keep.dropped == 0 and not keep.gave_up
    refs = list(TrajectoryStore(tmp_path / "keep"))
    assert sum(not r.success for r in refs) == 8 - keep.successes > 0
    assert all(r.truncated for r in refs if not r.success)


# A worker or the whole run killed (SIGKILL, SIGTERM): tests/test_faults.py.


# --------------------------------------------------------------------------------------- play


def test_key_to_action_maps_vi_keys_and_arrows_to_compass_moves() -> None:
    from nle.nethack.actions import CompassDirection as Dir

    from icrl.collect.play import key_to_action

    moves = tuple(Dir)  # MiniHack navigation: the 8 compass moves, in NLE's order
    assert [moves[key_to_action(k, moves)] for k in "kjhlyubn"] == [
        Dir.N, Dir.S, Dir.W, Dir.E, Dir.NW, Dir.NE, Dir.SW, Dir.SE]
    arrows = ["KEY_UP", "KEY_DOWN", "KEY_LEFT", "KEY_RIGHT", "KEY_HOME", "KEY_PPAGE", "KEY_END", "KEY_NPAGE"]
    assert [moves[key_to_action(k, moves)] for k in arrows] == [
        Dir.N, Dir.S, Dir.W, Dir.E, Dir.NW, Dir.NE, Dir.SW, Dir.SE]
    cardinal = (Dir.N, Dir.E, Dir.S, Dir.W)  # a task without diagonal moves
    assert key_to_action("y", cardinal) is None and key_to_action("h", cardinal) == 3
    assert key_to_action("q", moves) is None and key_to_action("\x1b", moves) is None
    assert key_to_action("x", moves) is None and key_to_action("KEY_F1", moves) is None
    assert key_to_action("s", (*moves, ord("s"))) == 8  # a task's own key does its own action


def scripted(keys: list[str]):
    it = iter(keys)
    return lambda: next(it)


def test_play_stores_a_scripted_episode_as_a_human_demo(tmp_path: Path) -> None:
    from nle.nethack.actions import CompassDirection as Dir

    from icrl.collect.play import play_level
    from icrl.envs import make_env

    out = tmp_path / "human"
    screens: list[str] = []
    show = lambda obs, status: screens.append(status)  # noqa: E731
    keys = ["x", "KEY_LEFT", "h", "j", "k", "l"]  # "x" does nothing; then 5 moves hit the step limit
    outcome = play_level(MAZE, 0, out, scripted(keys), show, max_steps=5, keep_failed=True)
    assert outcome.saved and outcome.level == level_seed("heldout", 0)
    assert any("does nothing" in s for s in screens)
    [ref] = TrajectoryStore(out).refs
    ep = TrajectoryStore(out).read(ref)
    legal = make_env(MAZE).spec.legal_actions
    native = [int(a) for a in make_env(MAZE).native_actions]
    expected = [int(legal[native.index(int(d))]) for d in (Dir.W, Dir.W, Dir.S, Dir.N, Dir.E)]
    assert ep.source == "human" and ep.length == 5 and ep.actions.tolist() == expected
    assert ep.truncated and ep.level == level_seed("heldout", 0) and ep.episode == 0

    # q quits without saving; a failed episode is not saved without keep_failed.
    assert not play_level(MAZE, 0, out, scripted(["h", "q"]), show).saved
    assert not play_level(MAZE, 0, out, scripted(["h"] * 5), show, max_steps=5).saved
    assert len(TrajectoryStore(out)) == 1
    # The next saved demo of the level gets the next episode number.
    play_level(MAZE, 0, out, scripted(["l"] * 5), show, max_steps=5, keep_failed=True)
    assert stored_keys(out) == [(MAZE, level_seed("heldout", 0), 0), (MAZE, level_seed("heldout", 0), 1)]
    assert verify_store(out).ok


def test_play_episode_records_a_solved_level_from_keypresses() -> None:
    from icrl.collect.play import play_episode
    from icrl.envs import make_env
    from icrl.experts import REQUIRED_KEYS, make_expert

    # A "player" who presses the key of the oracle's move: the keys are plain vi-keys.
    env = make_env(MAZE, extra_keys=REQUIRED_KEYS)
    native = env.native_actions
    expert = make_expert(MAZE, native, np.random.default_rng(0))
    last: dict = {}
    show = lambda obs, status: last.update(obs=obs)  # noqa: E731
    read_key = lambda: chr(int(native[expert.act(last["obs"])]))  # noqa: E731
    ep, success = play_episode(env, MAZE, 7, 0, read_key, show)
    assert success and ep.success and ep.terminated and ep.source == "human" and ep.level == 7
    assert set(ep.observations) == set(OBS_SPECS["nethack"])
    assert np.isin(ep.actions, env.spec.legal_actions).all()


def test_play_needs_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["play", MAZE, "--out", str(tmp_path / "s")]) == 2  # pytest's stdin is not a tty
    assert "needs an interactive terminal" in capsys.readouterr().err
