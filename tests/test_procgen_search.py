"""The Procgen search expert (icrl.experts.procgen_search) on real Procgen games."""

from __future__ import annotations

import numpy as np
import pytest

from icrl.envs import make_env
from icrl.envs.procgen import procgen_core
from icrl.errors import IcrlError
from icrl.experts import make_expert
from icrl.experts.procgen_search import (ProcgenSearchExpert, SearchSettings, _place, game_settings, plan_statistics,
                                         play_episode)
from icrl.experts.procgen_sim import GAME_ACTIONS, ProcgenSimulator, agent_position, frame_cells, position_cells

SMALL = SearchSettings(budget=12_000)


def play(task: str, level: int, sticky: float, seed: int, settings: SearchSettings = SMALL):
    """One episode of the search expert: (native actions [T], return, success, expert stats)."""
    env = make_env(task, sticky_p=sticky, seed=seed)
    game = procgen_core(env)
    expert = ProcgenSearchExpert(task.split(":")[1], np.random.default_rng(seed), settings=settings)
    actions, ret, success = play_episode(expert, env, game, level)
    env.close()
    return actions, ret, success, expert.stats


def test_a_restored_state_plays_out_the_same_way():
    sim = ProcgenSimulator("plunder", 3)  # enemies move at random: the generator is in the state
    env = make_env("procgen:plunder")
    env.reset(7)
    state = procgen_core(env).get_state()
    sim.load([state] * 3)
    actions = np.random.default_rng(0).choice(GAME_ACTIONS["plunder"], size=40)
    for a in actions:
        sim.step(np.full(3, a))
    after = sim.states()
    assert after[0] == after[1] == after[2]
    sim.load([state] * 3)
    sim.step(np.array([1, 7, 7]))
    assert sim.states()[0] != sim.states()[1]
    env.close()
    sim.close()


@pytest.mark.parametrize("settings", [SMALL, game_settings("coinrun", budget=12_000)], ids=["defaults", "coinrun's"])
def test_the_planner_is_deterministic_for_a_level_and_seed(settings):
    a, ret_a, ok_a, stats_a = play("procgen:coinrun", 3, 0.2, seed=5, settings=settings)
    b, ret_b, ok_b, stats_b = play("procgen:coinrun", 3, 0.2, seed=5, settings=settings)
    assert np.array_equal(a, b) and ret_a == ret_b and ok_a == ok_b and stats_a == stats_b
    assert stats_a["searched"] <= settings.budget + 2 * 200  # the budget, and at most one replay past it
    assert set(a.tolist()) <= set(GAME_ACTIONS["coinrun"])


def test_coinruns_search_favours_far_cells_and_reads_their_places():
    assert game_settings("coinrun").far_bonus > 0 and SearchSettings().far_bonus == 0
    env = make_env("procgen:coinrun")
    env.reset(0)
    state = procgen_core(env).get_state()
    env.close()
    x, y = agent_position(state)
    cell = position_cells([state], np.array([3.0]))[0]
    assert _place(cell) == (x // 1.0, y // 1.0)
    assert _place(b"f" + frame_cells(np.zeros((1, 64, 64, 3), np.uint8))[0]) is None


def test_it_completes_levels_under_sticky_actions_with_few_action_changes():
    for task, level in (("procgen:coinrun", 0), ("procgen:jumper", 1)):
        actions, ret, success, stats = play(task, level, 0.2, seed=0)
        assert success and ret == 10.0, (task, level, ret, stats)
        assert plan_statistics(actions)["change_rate"] < 0.2  # macro-actions: runs of one action


def test_make_expert_gives_the_search_expert_for_procgen_tasks():
    expert = make_expert("procgen:ninja", (), np.random.default_rng(0), max_steps=50)
    assert isinstance(expert, ProcgenSearchExpert) and expert.max_steps == 50
    with pytest.raises(IcrlError, match="no expert for task 'procgen:nosuchgame'"):
        make_expert("procgen:nosuchgame")


def test_frame_cells_and_plan_statistics():
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    frames[1, :8, :8] = 255  # one grid square lit: another cell
    frames[2, 0, 0] = 255  # one pixel: the same cell as the dark frame
    cells = frame_cells(frames)
    assert cells[0] == cells[2] != cells[1] and len(cells[0]) == 64
    stats = plan_statistics(np.array([7, 7, 7, 5]))
    assert stats["change_rate"] == pytest.approx(1 / 3)
    assert stats["entropy_bits"] == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    assert plan_statistics(np.array([], np.int64)) == {"change_rate": 0.0, "entropy_bits": 0.0}
