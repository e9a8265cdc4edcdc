"""Packed rows (data.pack > 1): each segment is its sequence's own row, and the model reads a
segment exactly as it reads that row alone."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from icrl.data.packing import plan_row, row_candidates
from icrl.data.pipeline import SequenceSource, make_loader
from icrl.data.sequence_stats import packing_stats
from icrl.data.sequences import SequenceConfig, SourceConfig
from icrl.data.synthetic import write_synthetic
from icrl.envs.actions import VOCAB_SIZE
from icrl.model.config import preset
from icrl.model.model import ICRLModel
from icrl.store.reader import TrajectoryStore
from icrl.train.step import model_batch

TASKS = ("MiniHack-MazeWalk-9x9-v0", "MiniHack-Labyrinth-Small-v0")  # different legal actions


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """Two tasks x 10 levels x 3 episodes of 3..16 steps."""
    path = tmp_path_factory.mktemp("pack") / "store"
    TrajectoryStore.create(path)
    specs = [("nethack", task, lv, ep, 3 + (lv * 5 + ep * 3) % 14) for task in TASKS for lv in range(10) for ep in range(3)]
    write_synthetic(path, "w", specs)
    return path


def config(store_path, **kw) -> SequenceConfig:
    base = dict(sources=[SourceConfig(path=str(store_path))], episodes_per_sequence=2, context_steps=64,
                p_burst=0.7, batch_size=2, seed=5, pack=4)
    return SequenceConfig(**{**base, **kw})


def own_row(store_path, cfg: SequenceConfig, i: int) -> dict:
    """Sequence i laid out alone, as data.pack = 1 does."""
    return SequenceSource(cfg.model_copy(update={"pack": 1}))[i]


def test_each_segment_is_its_sequence_laid_out_alone(store_path):
    cfg = config(store_path)
    src = SequenceSource(cfg)
    checked = 0
    for r in range(6):
        row = src[r]
        kept = plan_row(src.plan, cfg, r)
        assert 1 <= len(kept) <= cfg.pack and all(i in row_candidates(cfg, r) for i, _ in kept)
        assert sum(int(p.lengths.sum()) for _, p in kept) <= cfg.context_steps
        for j, (i, plan) in enumerate(kept):
            alone = own_row(store_path, cfg, i)
            span = np.flatnonzero(row["segment"] == j)
            n = int(plan.lengths.sum())
            assert len(span) == n and np.array_equal(span, span[0] + np.arange(n))  # contiguous
            assert np.array_equal(row["segment_step"][span], np.arange(n))
            for k in ("actions", "rewards", "episode_start", "timestep", "loss_mask"):
                np.testing.assert_array_equal(row[k][span], alone[k][:n], err_msg=k)
            for k in row["obs"]:
                np.testing.assert_array_equal(row["obs"][k][span], alone["obs"][k][:n])
            assert (row["legal_mask"][span] == alone["legal_mask"]).all()
            assert row["sequence"][j] == i and row["task_id"][j] == alone["task_id"]
            checked += 1
        assert (row["segment"][row["segment"] >= 0].size + (row["segment"] < 0).sum()) == cfg.context_steps
        assert not row["loss_mask"][row["segment"] < 0].any()
    assert checked > 6  # rows really held several sequences


def test_packed_rows_are_deterministic_and_resume(store_path):
    cfg = config(store_path)
    straight = iter(make_loader(cfg))
    a = [next(straight) for _ in range(3)]
    it = iter(make_loader(cfg))
    next(it)
    state = it.get_state()
    it2 = iter(make_loader(cfg))
    it2.set_state(state)
    resumed = next(it2)
    for key in ("segment", "segment_step", "actions", "sequence", "legal_mask"):
        np.testing.assert_array_equal(resumed[key], a[1][key], err_msg=key)


def test_packing_stats_count_what_rows_keep(store_path):
    cfg = config(store_path)
    src = SequenceSource(cfg)
    s = packing_stats(src, 8)
    kept = [plan_row(src.plan, cfg, r) for r in range(8)]
    assert s.segments_per_row == pytest.approx(np.mean([len(k) for k in kept]))
    assert s.left_out == pytest.approx(1 - sum(len(k) for k in kept) / (8 * cfg.pack))
    used = [sum(int(p.lengths.sum()) for _, p in k) for k in kept]
    assert s.padding == pytest.approx(1 - np.mean(used) / cfg.context_steps)
    assert set(s.left_out_by_task) == set(TASKS)


def test_model_reads_a_segment_as_that_sequence_alone(store_path):
    """Logits at a segment's steps equal those of its sequence in a row of its own: attention does
    not cross segments and positions restart at each segment's start (so evaluation contexts, one
    segment each, have the positions training used)."""
    cfg = config(store_path)
    src = SequenceSource(cfg)
    model_cfg = preset("1M", d_model=32, num_heads=2, num_layers=2, char_dim=4, color_dim=4, crop_channels=4,
                       map_channels=4, tty_features=8, tty_hidden=16, max_tokens=128, max_timestep=32, dropout=0.0)
    model = ICRLModel(model_cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    r = next(r for r in range(10) if len(plan_row(src.plan, cfg, r)) >= 3)
    row = src[r]
    batch = jax.tree.map(lambda a: np.asarray(a)[None], model_batch(row))
    packed = np.asarray(model(batch, deterministic=True))
    assert packed.shape == (1, cfg.context_steps, VOCAB_SIZE)
    unmasked = {k: v for k, v in batch.items() if k not in ("segment", "segment_step")}
    unmasked["legal_mask"] = batch["legal_mask"]
    crossing = np.asarray(model(unmasked, deterministic=True))
    for j, (i, plan) in enumerate(plan_row(src.plan, cfg, r)):
        alone = jax.tree.map(lambda a: np.asarray(a)[None], model_batch(own_row(store_path, cfg, i)))
        logits = np.asarray(model(alone, deterministic=True))
        span = np.flatnonzero(row["segment"] == j)
        n = int(plan.lengths.sum())
        np.testing.assert_allclose(packed[0, span], logits[0, :n], rtol=1e-4, atol=1e-4)
        if j > 0:  # without segments the later sequences would see the earlier ones
            assert not np.allclose(crossing[0, span], logits[0, :n], atol=1e-4)
