"""Contract tests for every suite task (in the spirit of jumanji's env checks)."""

import numpy as np
import pytest

from icrl.envs import UnknownTaskError, make_env, make_vector_env
from icrl.envs.actions import PAD_ACTION, VOCAB_SIZE, nethack_index
from icrl.envs.suite import load_suite
from icrl.envs.wrappers import StickyActions, sticky

SUITE_TASKS = [t for name in ("minihack", "procgen", "nethack") for t in load_suite(name).tasks()]


def test_suites_list_the_study_tasks():
    minihack, procgen = load_suite("minihack"), load_suite("procgen")
    assert (len(minihack.tasks("train")), len(minihack.tasks("heldout"))) == (12, 5)
    assert (len(procgen.tasks("train")), len(procgen.tasks("heldout"))) == (12, 4)
    assert load_suite("nethack").tasks() == ["NetHackChallenge-v0"]


def random_legal(env, rng):
    return int(rng.choice(env.spec.legal_actions))


def rollout(env, level, actions):
    """Observations, rewards and done flags of an episode driven by ``actions`` (stops at done)."""
    frames, rewards, dones = [env.reset(level)], [], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(int(a))
        frames.append(obs)
        rewards.append(r)
        dones.append(term or trunc)
        if term or trunc:
            break
    return frames, rewards, dones


@pytest.mark.parametrize("task", SUITE_TASKS)
def test_task_contract(task):
    env = make_env(task)
    spec = env.spec
    try:
        # Observation shapes and dtypes match the declared spec, at reset and after steps.
        obs = env.reset(5)
        spec.check_observation(obs)
        rng = np.random.default_rng(0)
        actions = [random_legal(env, rng) for _ in range(12)]
        frames, rewards, _ = rollout(env, 5, actions)
        for f in frames:
            spec.check_observation(f)
        assert all(isinstance(r, float) and np.isfinite(r) for r in rewards)
        # Level pinning: the same level and actions replay the same episode; another level differs.
        again, rewards2, _ = rollout(env, 5, actions)
        assert len(again) == len(frames) and rewards2 == rewards
        for a, b in zip(frames, again):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{task} {key}")
        other = env.reset(6)
        assert any(not np.array_equal(other[k], frames[0][k]) for k in other), f"{task}: levels 5 and 6 look alike"
        # Legal-action mask: over the unified vocabulary, never the padding action.
        mask = spec.legal_mask
        assert mask.shape == (VOCAB_SIZE,) and mask.sum() == spec.num_actions and not mask[PAD_ACTION]
        # Only legal actions are accepted.
        env.reset(5)
        illegal = [PAD_ACTION, int(np.flatnonzero(~mask)[0])]
        for a in illegal:
            with pytest.raises(ValueError, match="not legal"):
                env.step(a)
    finally:
        env.close()


def test_minihack_actions_are_nle_compass_moves():
    from nle.nethack import CompassDirection

    env = make_env("MiniHack-MazeWalk-9x9-v0")
    assert env.spec.legal_actions.tolist() == [nethack_index(a) for a in CompassDirection]
    assert env.native_actions == tuple(CompassDirection)
    env.close()


def test_procgen_time_limit_is_200_steps():
    env = make_env("procgen:maze")  # maze rarely ends by itself under a no-op policy
    env.reset(0)
    noop = 121 + 4  # Procgen's action 4 is "do nothing"
    for t in range(1, 201):
        _, _, term, trunc, _ = env.step(noop)
        if term:
            pytest.skip("maze level 0 ended by itself")
        assert trunc == (t == 200)
    env.close()


def test_sticky_function_repeats_with_probability_p():
    rng, n, p = np.random.default_rng(1), 20_000, 0.2
    repeats = sum(sticky(rng, p, action=1, previous=0) == 0 for _ in range(n))
    # Binomial(n, p): standard deviation sqrt(n p (1-p)) ~ 57; 5 sigma keeps the test honest and stable.
    assert abs(repeats - n * p) < 5 * np.sqrt(n * p * (1 - p))
    assert sticky(rng, 1.0, action=3, previous=None) == 3  # the first action is never replaced


@pytest.mark.parametrize("task", ["MiniHack-MazeWalk-9x9-v0", "procgen:ninja"])
def test_sticky_wrapper_statistics(task):
    p, n = 0.25, 3000
    env = make_env(task, sticky_p=p, seed=7, max_steps=10_000)
    assert isinstance(env.env, StickyActions)
    legal = env.spec.legal_actions
    env.reset(0)
    replaced = changes = 0
    previous = None
    for t in range(n):
        chosen = int(legal[t % 2])  # alternate, so every repeat is visible
        _, _, term, trunc, info = env.step(chosen)
        if previous is not None and chosen != previous:  # a repeat is visible on these steps
            changes += 1
            replaced += info["executed_action"] == previous
            assert info["executed_action"] in (chosen, previous)
        previous = info["executed_action"]
        if term or trunc:
            env.reset(0)
            previous = None
    assert abs(replaced / changes - p) < 5 * np.sqrt(p * (1 - p) / changes)
    env.close()


def test_sticky_probability_out_of_range():
    with pytest.raises(ValueError, match="sticky"):
        make_env("MiniHack-MazeWalk-9x9-v0", sticky_p=1.5)


@pytest.mark.parametrize(
    "task,workers",
    [("MiniHack-MultiRoom-N2-Monster-v0", 0), ("MiniHack-MazeWalk-9x9-v0", 2), ("procgen:coinrun", 0)],
)
def test_batched_equals_one_by_one(task, workers):
    n, steps, p, seed = 3, 40, 0.3, 11
    levels = [3, 4, 3]
    rng = np.random.default_rng(0)
    venv = make_vector_env(task, n, workers=workers, sticky_p=p, seed=seed, max_steps=25)
    actions = rng.choice(venv.spec.legal_actions, size=(steps, n))
    try:
        batched = [venv.reset(levels)]
        outs = [venv.step(a) for a in actions]
        batched += [o.obs for o in outs]
    finally:
        venv.close()
    for i in range(n):
        env = make_env(task, sticky_p=p, seed=(seed, i), max_steps=25)
        frames, rewards, dones = rollout(env, levels[i], actions[:, i])
        env.close()
        for t, frame in enumerate(frames):
            for key in frame:
                np.testing.assert_array_equal(batched[t][key][i], frame[key], err_msg=f"env {i} step {t} {key}")
        np.testing.assert_allclose([o.reward[i] for o in outs[: len(rewards)]], rewards)
        assert [bool(o.done[i]) for o in outs[: len(dones)]] == dones
        if dones and dones[-1]:  # a finished env holds: no reward, done stays set, last frame kept
            after = outs[len(dones):]
            assert all(o.done[i] and o.reward[i] == 0 for o in after)


def test_partial_reset_only_touches_masked_envs():
    venv = make_vector_env("procgen:bigfish", 2)
    first = venv.reset([1, 2])
    for _ in range(5):
        venv.step(np.full(2, 121 + 4))
    moved = venv.step(np.full(2, 121 + 4)).obs
    again = venv.reset([1, 9], mask=np.array([True, False]))
    np.testing.assert_array_equal(again["rgb"][0], first["rgb"][0])
    np.testing.assert_array_equal(again["rgb"][1], moved["rgb"][1])
    venv.close()


def test_unknown_task_lists_close_matches():
    with pytest.raises(UnknownTaskError) as err:
        make_env("MiniHack-MazeWalk-15x15")
    assert "MiniHack-MazeWalk-15x15-v0" in str(err.value)
    with pytest.raises(UnknownTaskError, match="procgen:ninja"):
        make_env("procgen:ninjaa")


def test_memento_squeaky_board_is_not_a_success():
    """Memento ends with MiniHack's goal status on its squeaky board (-1) too; only +1 succeeds."""
    from nle.nethack import CompassDirection

    env = make_env("MiniHack-Memento-Short-F2-v0")
    ends = []
    for level in range(6):
        env.reset(level)
        rng = np.random.default_rng(level)
        for _ in range(400):
            _, reward, term, trunc, info = env.step(int(rng.choice(env.spec.legal_actions)))
            if term or trunc:
                ends.append((reward, info["success"]))
                break
    env.close()
    assert all(success == (reward > 0) for reward, success in ends)
    assert any(reward < 0 for reward, _ in ends), "no random walk ended on the board; the test saw nothing"
    assert CompassDirection.N in env.native_actions
