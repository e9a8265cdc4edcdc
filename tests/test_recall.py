"""Recall (icrl.data.recall): what each step recalls from the earlier episodes of its context, the same
in packed training rows and evaluation, the configs that must agree, and the cell-keyed Hashmap."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from icrl.data.layout import ContextLayout, Part, demo_recall, pack_parts
from icrl.data.recall import NO_RECALL, RecallTable, recall_keys
from icrl.envs.actions import PAD_ACTION
from icrl.errors import IcrlError
from icrl.store.episode import Episode


def walk(cells: list[tuple[int, int]], actions: list[int], level: int = 0, episode: int = 0,
         has_actions: bool = True) -> Episode:
    """A tty episode whose cursor visits ``cells`` taking ``actions`` (blank screens, '@' at the cursor)."""
    n = len(cells)
    chars = np.full((n, 24, 80), ord(" "), np.uint8)
    for t, (r, c) in enumerate(cells):
        chars[t, r, c] = ord("@")
    obs = {"tty_chars": chars, "tty_colors": np.zeros((n, 24, 80), np.uint8),
           "tty_cursor": np.array(cells, np.uint8).reshape(n, 2)}
    return Episode(domain="nethack", task="MiniHack-MazeWalk-9x9-v0", level=level, source="oracle", observations=obs,
                   actions=np.array(actions, np.int32), rewards=np.zeros(n, np.float32), terminated=True,
                   truncated=False, has_actions=has_actions, episode=episode)


def test_a_step_recalls_the_last_action_earlier_episodes_of_its_own_context_took_there():
    a = walk([(5, 5), (5, 6), (5, 5), (6, 6)], [1, 2, 3, 4])
    b = walk([(5, 5), (6, 6), (7, 7)], [5, 6, 7])
    c = walk([(5, 6), (7, 7), (5, 5)], [0, 0, 0])
    parts = [Part(a, 0, 4, group=0), Part(b, 0, 3, group=0), Part(c, 0, 3, group=1)]
    row = pack_parts(parts, "nethack", 12, "cell")
    # a: nothing before it, though it revisits (5, 5): its own steps are never recalled.
    # b: (5, 5) -> a's last action there (3, not 1); (6, 6) -> 4; (7, 7) unseen.
    # c: another segment (group 1): nothing, although a and b walked its cells.
    want = [NO_RECALL] * 4 + [3, 4, NO_RECALL] + [NO_RECALL] * 3 + [NO_RECALL] * 2
    assert row["recall"].tolist() == want
    assert "recall" not in pack_parts(parts, "nethack", 12)  # no recall: no such key


def test_screen_recall_needs_the_whole_observation_to_match():
    a = walk([(5, 5), (5, 6)], [1, 2])
    b = walk([(5, 5), (5, 6)], [3, 4])
    b.observations["tty_chars"][1, 0, 0] = ord("x")  # a message: the screen differs, the cell does not
    row = pack_parts([Part(a, 0, 2), Part(b, 0, 2)], "nethack", 4, "screen")
    assert row["recall"].tolist() == [NO_RECALL, NO_RECALL, 1, NO_RECALL]
    assert pack_parts([Part(a, 0, 2), Part(b, 0, 2)], "nethack", 4, "cell")["recall"].tolist()[2:] == [1, 2]


def test_episodes_without_actions_teach_nothing_and_windows_bound_what_is_recalled():
    silent = walk([(5, 5), (6, 6)], [PAD_ACTION, PAD_ACTION], has_actions=False)
    long_demo = walk([(1, 1), (2, 2), (3, 3), (4, 4)], [1, 2, 3, 4])
    layout = ContextLayout(episodes=3, window=2, context_steps=6, tokens_per_step=2, positions="rope", recall="cell")
    table = demo_recall([silent, long_demo], layout, "nethack")
    # Only the demo's first window (2 steps) is in the context; the silent episode has no actions.
    assert table.lookup(table.keys(walk([(5, 5), (1, 1), (2, 2), (3, 3)], [0] * 4).observations)).tolist() == \
        [NO_RECALL, 1, 2, NO_RECALL]
    assert demo_recall([], layout, "nethack").lookup([0]).tolist() == [NO_RECALL]
    plain = ContextLayout(episodes=3, window=2, context_steps=6, tokens_per_step=2, positions="rope")
    assert demo_recall([long_demo], plain, "nethack") is None


def test_recall_keys_reject_what_they_cannot_key():
    with pytest.raises(ValueError, match="'cell' needs tty"):
        recall_keys({"rgb": np.zeros((2, 64, 64, 3), np.uint8)}, "cell")
    with pytest.raises(ValueError, match="no recall table for mode 'none'"):
        RecallTable("none")


def test_recall_settings_must_agree_and_fit_the_domain():
    from pydantic import ValidationError

    from icrl.train.config import ExperimentConfig

    base = {"name": "r", "data": {"sources": [{"path": "x"}]}}
    with pytest.raises(ValidationError, match="data.recall='cell' and model.recall='none' must agree"):
        ExperimentConfig.model_validate({**base, "data": {**base["data"], "recall": "cell"}})
    with pytest.raises(ValidationError, match="needs the tty cursor"):
        ExperimentConfig.model_validate({**base, "data": {**base["data"], "recall": "cell"},
                                         "model": {"recall": "cell", "domain": "procgen"}})
    ok = ExperimentConfig.model_validate({**base, "data": {**base["data"], "recall": "screen"},
                                          "model": {"recall": "screen"}})
    assert ok.model.recall == ok.data.recall == "screen"


def test_hashmap_cell_follows_the_demo_where_the_screen_differs_and_refuses_rgb():
    from icrl.eval.methods import check_methods
    from icrl.eval.policies import HashmapCellPolicy, HashmapPolicy

    demo = walk([(5, 5), (5, 6)], [1, 2])
    now = walk([(5, 6)], [0])
    now.observations["tty_chars"][0, 0, 0] = ord("x")  # a message the demo never showed
    obs = {k: v[:1] for k, v in now.observations.items()}

    class Spec:
        legal_actions = np.array([7], np.int32)

    picked = {}
    for policy in (HashmapPolicy(), HashmapCellPolicy()):
        policy.start(Spec, [[demo]], np.array([0]), [np.random.default_rng(0)])
        picked[policy.name] = int(policy.act(obs, np.array([True]))[0])
    assert picked == {"hashmap": 7, "hashmap-cell": 2}  # the screen misses (random: 7), the cell hits
    with pytest.raises(IcrlError, match="'hashmap-cell' does not apply to procgen:ninja"):
        check_methods({}, ["hashmap-cell"], ["procgen:ninja"])


def frames(values: list[int], actions: list[int], episode: int = 0) -> Episode:
    """A Procgen episode of flat frames, frame t filled with ``values[t]``."""
    n = len(values)
    rgb = np.stack([np.full((64, 64, 3), v, np.uint8) for v in values])
    return Episode(domain="procgen", task="procgen:jumper", level=0, source="oracle", observations={"rgb": rgb},
                   actions=np.array(actions, np.int32), rewards=np.zeros(n, np.float32), terminated=True,
                   truncated=False, has_actions=True, episode=episode)


def test_nearest_recall_takes_the_closest_earlier_frame_ties_to_the_last_and_matches_rnp():
    from icrl.eval.policies import RetrievePlayPolicy

    demo = frames([10, 50, 10, 200], [1, 2, 3, 4])
    query = frames([12, 49, 160, 0], [0, 0, 0, 0], episode=1)
    row = pack_parts([Part(demo, 0, 4), Part(query, 0, 4)], "procgen", 8, "nearest")
    # 12 -> frames 10 (steps 0 and 2: a tie, the last wins: 3); 49 -> 50 (2); 160 -> 200 (4); 0 -> 10 (3).
    assert row["recall"].tolist() == [NO_RECALL] * 4 + [3, 2, 4, 3]
    layout = ContextLayout(episodes=2, window=4, context_steps=8, tokens_per_step=2, positions="rope",
                           recall="nearest")
    table = demo_recall([demo], layout, "procgen")  # what a rollout after the demo looks up
    keys = table.keys(query.observations)
    assert [table.get(k, NO_RECALL) for k in keys] == [3, 2, 4, 3]
    assert RecallTable("nearest").get(keys[0], NO_RECALL) == NO_RECALL  # nothing added: no recall
    # R&P compares the same features: at step 1 (no earlier match to follow) it picks the same actions.
    rnp = RetrievePlayPolicy()
    rnp.start(SimpleNamespace(legal_actions=np.arange(15)), [[demo]], np.zeros(1, np.int64), [np.random.default_rng(0)])
    picked = [int(rnp.act({"rgb": query.observations["rgb"][t:t + 1]}, np.ones(1, bool))[0]) for t in (1, 2)]
    assert picked == [2, 4]
