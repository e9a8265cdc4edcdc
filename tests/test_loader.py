"""The batch loader (icrl.data.loader): worker processes over shared memory give exactly the
in-process batches, resume from a saved state (also a Grain DataLoader's, from runs saved before),
report a worker's error at its batch, reuse their slots and leave no shared-memory files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from icrl.data.loader import BatchLoader
from icrl.data.pipeline import SequenceSource, make_loader
from icrl.data.sequences import SequenceConfig, SourceConfig
from icrl.data.shared_memory import shm_directory
from icrl.data.synthetic import write_synthetic
from icrl.errors import IcrlError
from icrl.store.reader import TrajectoryStore

TASKS = ("MiniHack-MazeWalk-9x9-v0", "MiniHack-Labyrinth-Small-v0")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> SequenceConfig:
    path = tmp_path_factory.mktemp("loader") / "store"
    TrajectoryStore.create(path)
    write_synthetic(path, "w", [("nethack", task, lv, ep, 4 + (lv * 5 + ep * 3) % 37)
                                for task in TASKS for lv in range(10) for ep in range(3)])
    return SequenceConfig(sources=[SourceConfig(path=str(path))], episodes_per_sequence=3, context_steps=40,
                          p_burst=0.6, batch_size=4, seed=5)


def leaves(batch: dict, prefix: str = ""):
    for k, v in batch.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + k + ".")
        else:
            yield prefix + k, v


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        lx, ly = dict(leaves(x)), dict(leaves(y))
        assert lx.keys() == ly.keys()
        for key in lx:
            assert lx[key].dtype == ly[key].dtype and lx[key].shape == ly[key].shape, key
            np.testing.assert_array_equal(lx[key], ly[key], err_msg=key)


def take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def shm_files() -> list[str]:
    return [p.name for p in shm_directory().glob(f"icrl-batch-{os.getpid()}-*")]


def test_workers_give_exactly_the_in_process_batches_and_resume(cfg):
    straight = take(iter(make_loader(cfg)), 8)
    assert [int(b["index"][0]) for b in straight] == [4 * s for s in range(8)]  # batch s = rows [4s, 4s+4)
    with iter(make_loader(cfg.model_copy(update={"worker_count": 2}))) as it:
        # Every batch is kept: its slot must not be written again while it is held.
        assert_same(take(it, 5), straight[:5])
        state = it.get_state()
        assert_same(take(it, 3), straight[5:])
        it.set_state(state)  # back to batch 5, with batches in flight: they are dropped
        assert_same(take(it, 3), straight[5:])
    assert shm_files() == []  # close removed every slot
    with iter(make_loader(cfg.model_copy(update={"worker_count": 1}))) as resumed:
        resumed.set_state(state)
        assert_same(take(resumed, 3), straight[5:])
    in_process = iter(make_loader(cfg))
    in_process.set_state(state)
    assert_same(take(in_process, 3), straight[5:])


def test_slots_are_reused_once_batches_are_dropped(cfg):
    with iter(make_loader(cfg.model_copy(update={"worker_count": 2}), prefetch=2)) as it:
        first = next(it)
        for _ in range(12):
            next(it)  # dropped at once
        # In flight (2 workers x 2), ready, and the one batch held: far fewer than 13 batches.
        assert len(it._pool.slots.slots) <= 2 * 2 + 2
        assert int(first["index"][0]) == 0  # the held batch was not overwritten
    assert shm_files() == []


def test_a_grain_state_from_an_older_run_resumes_at_its_batch(cfg):
    import grain

    from icrl.data.pipeline import ProcessSlice

    # The loader icrl used before: a Grain DataLoader over the same view, batched in-process.
    view = ProcessSlice(SequenceSource(cfg), 0, 1, cfg.batch_size)
    sampler = grain.samplers.IndexSampler(num_records=len(view), shard_options=grain.sharding.NoSharding(),
                                          shuffle=False, num_epochs=1, seed=cfg.seed)
    old = iter(grain.DataLoader(data_source=view, sampler=sampler,
                                operations=[grain.transforms.Batch(cfg.batch_size, drop_remainder=True)],
                                worker_count=0))
    take(old, 3)
    it = iter(make_loader(cfg))
    it.set_state(old.get_state())
    assert_same(take(it, 2), take(old, 2))


def test_bad_states_are_named(cfg):
    it = iter(make_loader(cfg))
    with pytest.raises(IcrlError, match="not a data iterator state"):
        it.set_state(b"{}")
    other = iter(make_loader(cfg.model_copy(update={"batch_size": 8})))
    with pytest.raises(IcrlError, match="batches of 8 rows.*data.batch_size=4"):
        it.set_state(other.get_state())


class Rows:
    """A view of 12 rows; row ``bad`` is bad input (a module-level class: the workers import it)."""

    def __init__(self, bad: int | None = 5):
        self.bad = bad

    def __len__(self) -> int:
        return 12

    def __getitem__(self, k: int) -> dict:
        if k == self.bad:
            raise IcrlError("row 5 is bad")
        return {"x": np.full(3, k, np.int32), "obs": {"y": np.full((2, 2), k, np.uint8)}, "i": np.int64(k)}


@pytest.mark.parametrize("workers", [0, 2])
def test_an_error_is_raised_at_the_batch_it_belongs_to(workers):
    with iter(BatchLoader(Rows(), 2, workers=workers)) as it:
        first, second = take(it, 2)
        np.testing.assert_array_equal(second["obs"]["y"][:, 0, 0], [2, 3])
        assert first["i"].tolist() == [0, 1]
        with pytest.raises(IcrlError, match="row 5 is bad"):
            next(it)  # batch 2 holds rows 4 and 5


def test_epochs_end_and_wrap():
    # 12 rows make 2 whole batches of 5 per epoch; rows 10 and 11 are never used.
    epoch = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [b["i"].tolist() for b in BatchLoader(Rows(bad=None), 5, num_epochs=2)] == epoch + epoch


def test_a_training_checkpoint_restores_the_position_into_workers(cfg, tmp_path):
    import jax
    import jax.numpy as jnp

    from icrl.train.checkpoint import Checkpointer

    straight = take(iter(make_loader(cfg)), 4)
    it = iter(make_loader(cfg))
    take(it, 2)
    state = {"x": jnp.arange(3.0)}
    with_workers = cfg.model_copy(update={"worker_count": 2})
    checkpoints = Checkpointer(tmp_path / "checkpoints", async_save=False)
    try:
        checkpoints.save(2, state, it.get_state(), {"data": with_workers.model_dump(mode="json")})
        restored = iter(make_loader(with_workers))
        # Grain's Orbax handler sets the state, then starts the workers (start_prefetch).
        back = checkpoints.restore(2, jax.eval_shape(lambda: state), restored)
    finally:
        checkpoints.close()
    np.testing.assert_array_equal(back["x"], state["x"])
    with restored:
        assert_same(take(restored, 2), straight[2:])
