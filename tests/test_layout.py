"""One context layout: training rows and evaluation contexts come from the same function, NLD pieces
keep their game order, and contexts training never showed are named."""

from __future__ import annotations

import numpy as np
import pytest

from icrl.data.layout import ContextLayout, demo_recall, demo_row, layout_of, load_layout, save_layout
from icrl.data.pipeline import SequenceSource
from icrl.data.recall import NO_RECALL
from icrl.data.sequences import SequenceConfig, SourceConfig
from icrl.data.synthetic import nethack_episode, write_synthetic
from icrl.errors import IcrlError
from icrl.store.reader import TrajectoryStore
from icrl.store.writer import ShardWriter

TASK = "MiniHack-MazeWalk-9x9-v0"
WINDOW = 16


@pytest.fixture(scope="module")
def short_store(tmp_path_factory):
    """One task x 8 levels x 3 episodes of 5..15 steps: every episode fits a window whole."""
    path = tmp_path_factory.mktemp("layout") / "store"
    TrajectoryStore.create(path)
    write_synthetic(path, "w", [("nethack", TASK, lv, ep, 5 + (3 * lv + 2 * ep) % 11)
                                for lv in range(8) for ep in range(3)])
    return path


@pytest.mark.parametrize("recall", ["none", "cell", "screen"])
def test_evaluation_context_is_the_training_row(short_store, recall):
    """The k = 2 demos of an evaluation context, laid out by ``demo_row``, are the first two slots of a
    training row, array for array, and the model's logits at the rollout's first step equal its
    logits at the query's first step in training: a different layout (positions, timesteps,
    markers, padding) would change them. With recall, the rollout's recalled actions (looked up in
    ``demo_recall``'s table) are the query's in the training row."""
    import jax.numpy as jnp
    from flax import nnx

    from icrl.model.config import ModelConfig
    from icrl.model.decoding import Decoder
    from icrl.model.model import ICRLModel

    cfg = SequenceConfig(sources=[SourceConfig(path=str(short_store))], episodes_per_sequence=3,
                         context_steps=3 * WINDOW, p_burst=1.0, batch_size=1, seed=0, recall=recall)
    model_cfg = ModelConfig(preset="1M", num_layers=2, d_model=32, num_heads=2, max_tokens=6 * WINDOW, dropout=0.0,
                            recall=recall)
    layout = layout_of(cfg, model_cfg)
    assert layout.recall == recall
    assert (layout.episodes, layout.window, layout.context_steps) == (3, WINDOW, 3 * WINDOW)
    source = SequenceSource(cfg)
    i = 1  # a sequence whose query steps on cells its demos visited (sequence 0's does not)
    plan = source.plan(i)
    row = source[i]
    episodes = [source.stores[0].read(source.stores[0].index.ref(int(r))) for r in plan.rows]
    assert (plan.starts == 0).all()  # whole episodes: the windows start at step 0 as demos do

    demos = demo_row(episodes[:2], layout, "nethack")
    n = int(demos["lengths"][0])
    assert n == int(plan.lengths[:2].sum())
    keys = ("actions", "rewards", "episode_start", "timestep", "episode_id", "loss_mask")
    for key in keys + (("recall",) if recall != "none" else ()):
        np.testing.assert_array_equal(demos[key][0, :n], row[key][:n], err_msg=key)
    for key in row["obs"]:
        np.testing.assert_array_equal(demos["obs"][key][0, :n], row["obs"][key][:n], err_msg=key)

    decoder = Decoder(ICRLModel(model_cfg, rngs=nnx.Rngs(0)))
    batch = {k: (jnp.asarray(v[None]) if k != "obs" else {o: jnp.asarray(a[None]) for o, a in v.items()})
             for k, v in row.items() if k in ("obs", "actions", "rewards", "episode_start", "timestep", "recall")}
    batch["legal_mask"] = jnp.asarray(row["legal_mask"][None])
    trained = np.asarray(decoder.forward(batch))[0, n]
    inputs = {k: demos[k] for k in ("obs", "actions", "rewards", "episode_start", "timestep", "recall") if k in demos}
    _, cache = decoder.prefill(inputs, layout.tokens(2), jnp.asarray(demos["lengths"]))
    query = episodes[2]
    first = {k: v[:1] for k, v in query.observations.items()}
    recalled = None
    if recall != "none":
        table = demo_recall(episodes[:2], layout, "nethack")
        q = int(plan.lengths[2])
        np.testing.assert_array_equal(table.lookup(table.keys(query.observations))[:q], row["recall"][n:n + q])
        if recall == "cell":  # the same room: the query walks where the demos walked
            assert (row["recall"][n:n + q] != NO_RECALL).any()
        recalled = jnp.asarray(table.lookup(table.keys(first)))
    logits, _ = decoder.observe(cache, {k: jnp.asarray(v) for k, v in first.items()},
                                jnp.array([True]), jnp.array([0], jnp.int32), batch["legal_mask"], recalled)
    np.testing.assert_allclose(np.asarray(logits)[0], trained, rtol=1e-4, atol=1e-4)


def test_demos_longer_than_a_window_are_cut_to_their_first_window():
    layout = ContextLayout(episodes=3, window=8, context_steps=24, tokens_per_step=2, positions="rope")
    long = nethack_episode(0, level=1, length=20)
    row = demo_row([long, nethack_episode(1, level=1, episode=1, length=5)], layout, "nethack")
    assert row["actions"].shape == (1, 16) and int(row["lengths"][0]) == 13
    np.testing.assert_array_equal(row["timestep"][0, :13], np.r_[np.arange(8), np.arange(5)])
    np.testing.assert_array_equal(row["actions"][0, :8], long.actions[:8])
    assert demo_row([], layout, "nethack") is None


def test_contexts_training_never_showed_are_named(tmp_path):
    layout = ContextLayout(episodes=3, window=8, context_steps=24, tokens_per_step=2, positions="rope")
    assert layout.warnings(0) == [] and layout.warnings(2) == []
    names = [w.split(":")[0] for w in layout.warnings(3)]
    assert names == ["more-demos-than-training", "positions-beyond-training"]
    learned = ContextLayout(episodes=3, window=8, context_steps=24, tokens_per_step=2, positions="learned",
                            max_positions=48)
    learned.check(2)
    with pytest.raises(IcrlError, match="k=3 demos need 64 tokens"):
        learned.check(3)
    save_layout(layout, tmp_path)
    assert load_layout(tmp_path) == layout
    (tmp_path / "layout.json").write_text("{not json")
    with pytest.raises(IcrlError, match="layout.json: not a context layout"):
        load_layout(tmp_path)


@pytest.fixture(scope="module")
def nld_store(tmp_path_factory):
    """NLD-style pieces: 6 games of 4 pieces of 10 steps (source nld-aa, level = game, episode = piece)."""
    path = tmp_path_factory.mktemp("nldlayout") / "store"
    TrajectoryStore.create(path)
    with ShardWriter(path, "nld") as w:
        for game in range(6):
            for piece in range(4):
                w.append(nethack_episode(game, task="nld-aa:Valkyrie", level=1000 + game, episode=piece,
                                         length=10, source="nld-aa"))
    return path


def test_nld_pieces_are_never_shuffled_against_each_other(nld_store):
    """A sequence of an NLD task is consecutive pieces of one game, in game order: never pieces
    shuffled against each other (the model could read the game's future), never a piece marked as
    a game start unless it is one; each piece's timesteps are its true steps in the game."""
    cfg = SequenceConfig(sources=[SourceConfig(path=str(nld_store))], episodes_per_sequence=3, context_steps=24,
                         p_burst=1.0, batch_size=1, seed=1)
    source = SequenceSource(cfg)
    seen_first = seen_later = False
    for i in range(40):
        plan = source.plan(i)
        assert len(set(source.catalogs[0].level[plan.rows].tolist())) == 1 and not plan.bursty
        row = source[i]
        pieces = row["slot_episode"][row["slot_episode"] >= 0]
        np.testing.assert_array_equal(pieces, pieces[0] + np.arange(len(pieces)))  # consecutive, in order
        for j, piece in enumerate(pieces):
            steps = row["timestep"][row["episode_id"] == j]
            np.testing.assert_array_equal(steps, 10 * piece + np.arange(8))  # window 8 of each 10-step piece
            starts = row["episode_start"][row["episode_id"] == j]
            assert starts[0] == (piece == 0) and not starts[1:].any()
            seen_first |= piece == 0
            seen_later |= piece > 0
    assert seen_first and seen_later


def test_a_task_that_cannot_fill_a_sequence_is_named_before_training(tmp_path):
    """p_burst = 1 with a level of one episode falls back to a non-bursty draw, which needs E levels."""
    path = tmp_path / "store"
    TrajectoryStore.create(path)
    write_synthetic(path, "w", [("nethack", TASK, 0, 0, 5), ("nethack", TASK, 0, 1, 5), ("nethack", TASK, 1, 0, 5)])
    cfg = SequenceConfig(sources=[SourceConfig(path=str(path))], episodes_per_sequence=3, context_steps=24,
                         p_burst=1.0, batch_size=1)
    with pytest.raises(IcrlError, match=rf"task '{TASK}' has episodes on 2 level\(s\).*need at least 3 distinct"):
        SequenceSource(cfg)
