"""Checkpoints: Orbax ``CheckpointManager`` over ``<run>/checkpoints/<step>/``.

Each checkpoint holds three items:

- ``state``: the ``TrainState`` (step, fp32 params, optimizer state, dropout key), every array
  written by the processes that hold its shards, restored onto whatever mesh the resumed run has;
- ``data``: the input iterator's state, one JSON file per process (Grain's Orbax handler), taken
  when the save starts so the background write cannot see a later position; a run resumed with
  another number of processes reads it from any process's file (the position is global);
- ``config``: the resolved experiment config (JSON).

Saves are asynchronous (arrays are copied to host, then written in the background while training
continues) and atomic: Orbax writes into a temporary directory and renames it when every item of
every process is complete, so a run killed mid-save keeps its previous checkpoints intact and the
half-written one is never read (and is cleaned up on the next start).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from icrl.errors import IcrlError
from icrl.train.state import TrainState


class _IteratorSnapshot:
    """A frozen ``get_state()`` for Grain's handler, which calls it when it writes."""

    def __init__(self, state: bytes):
        self._state = state

    def get_state(self) -> bytes:
        return self._state


class Checkpointer:
    """Save and restore training checkpoints of one run directory."""

    def __init__(self, directory: str | Path, *, keep: int | None = None, async_save: bool = True,
                 read_only: bool = False):
        """``read_only`` (evaluation): nothing is created, cleaned up or deleted in ``directory``,
        which must exist (IcrlError otherwise)."""
        self.directory = Path(directory).absolute()
        if read_only and not self.directory.is_dir():
            raise IcrlError(f"{self.directory}: no such checkpoint directory")
        if read_only:
            # Not Orbax's own read_only option, which logs a warning per option it overrides.
            options = ocp.CheckpointManagerOptions(max_to_keep=None, create=False, enable_async_checkpointing=False,
                                                   cleanup_tmp_directories=False)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: TrainState, data_state: bytes, config: dict[str, Any]) -> bool:
        """Start saving checkpoint ``step`` (returns at once when asynchronous); False if it exists."""
        if step in self.manager.all_steps():
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_state)),
            config=ocp.args.JsonSave(config),
        )
        return self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: TrainState, iterator: Any | None = None) -> TrainState:
        """Checkpoint ``step`` into arrays shaped and sharded like ``abstract_state``
        (``jax.ShapeDtypeStruct`` leaves with shardings); sets ``iterator`` (if given) to the saved
        data position."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        data_dir = self.directory / str(step) / "data"
        own = data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if iterator is not None and own.is_file():
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        elif iterator is not None:
            # Saved by another number of processes: Grain's handler reads only its own
            # process_<i>-of-<n>.json. The position is global (the next batch of the global
            # stream, which each process slices), so any process's file gives it.
            iterator.set_state(saved_data_position(data_dir))
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_params(self, step: int, abstract_params: dict) -> dict:
        """Only the parameters of checkpoint ``step`` (evaluation), shaped and sharded like
        ``abstract_params`` (``jax.ShapeDtypeStruct`` leaves with shardings): the optimizer state
        (twice the parameters' size with Adam) is never read into memory."""
        target = {"params": abstract_params}
        restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
        args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
        return self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]["params"]

    def saved_config(self, step: int) -> dict[str, Any]:
        """The resolved config stored with checkpoint ``step``."""
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def wait(self) -> None:
        """Block until background saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        # The manager removes half-written checkpoints of earlier runs in a background thread it
        # starts on creation, and neither wait_until_finished nor close waits for it: a command
        # that fails right after opening the manager (a clear IcrlError) would have that thread
        # die at interpreter exit with a page of traceback. Wait for it (a private method: guarded).
        await_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()
        self.manager.wait_until_finished()
        self.manager.close()


def saved_data_position(data_dir: Path) -> bytes:
    """The input iterator's state in a checkpoint's ``data`` item, whatever number of processes
    wrote it: every process saves the same global position (IcrlError if they disagree or none did)."""
    files = sorted(data_dir.glob("process_*-of-*.json"))
    if not files:
        raise IcrlError(f"{data_dir}: no saved data position (process_<i>-of-<n>.json)")
    states = {f: f.read_bytes() for f in files}
    positions = {json.loads(b).get("next_batch") for b in states.values()}
    if len(positions) > 1:
        raise IcrlError(f"{data_dir}: the processes saved different data positions {sorted(map(str, positions))}")
    return states[files[0]]


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying their target shardings (a restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
