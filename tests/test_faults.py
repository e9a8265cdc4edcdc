"""Fault injection: kills, damaged files and two commands at once, tried as a user would meet them.

Each test asserts that nothing finished is lost, that the error names the file at fault, and that
the documented way out (re-run, ``icrl data repair``) works. ``docs/reliability.md`` lists every
fault, what happens and how to reproduce it. Covered in other modules and not repeated here:
training killed between checkpoints, SIGTERM and a non-finite loss (``test_train_resume.py``); a
writer killed mid-append and the crash windows of sealing (``test_store.py``); NLD conversions
interrupted, crashing or killed (``test_nld.py``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from icrl.cli import main
from icrl.collect.run import run_collection
from icrl.data.synthetic import episode_spec, write_synthetic
from icrl.store.episode import episode_equal
from icrl.store.reader import TrajectoryStore
from icrl.store.verify import verify_store
from icrl.store.writer import ShardWriter
from icrl.errors import IcrlError

from test_collect import MAZE, REPO, small, stored_keys
from test_nld import SEGMENT, SEQ, _assert_same_games, converted, damaged, db, sample, store_games  # noqa: F401
from test_train_config import TASK, make_store, tiny_config, write_config

PY = [sys.executable, "-c"]


def collect_argv(out: Path, *extra: str, levels: int = 3, workers: int = 0) -> list[str]:
    return ["collect", "--suite", "minihack", "--split", "train", "--tasks", MAZE, "--levels", str(levels),
            "--episodes-per-level", "2", "--workers", str(workers), "--out", str(out), "--quiet", *extra]


def shard_files(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "shards").iterdir())


def all_episodes(store: Path) -> dict[tuple[str, int, int], object]:
    with TrajectoryStore(store) as s:
        return {(r.task, r.level, r.episode): s.read(r) for r in s}


_HOLD = """
    import sys
    from icrl.store.writer import ShardWriter
    w = ShardWriter(sys.argv[1], "holder")
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    w.close()
"""


@contextmanager
def writer_in_another_process(store: Path):
    """A live writer of ``store`` in another process (another command), until the block ends."""
    proc = subprocess.Popen([*PY, textwrap.dedent(_HOLD), str(store)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(60)


_DEAD_WRITER = """
    import os, sys
    from icrl.store.writer import ShardWriter
    from icrl.data.synthetic import episode_spec
    w = ShardWriter(sys.argv[1], "dead")
    for i in range(int(sys.argv[3])):
        w.append(episode_spec("nethack", sys.argv[2], 100 + i, 0, 12))
    os._exit(0)  # dies without sealing: its journal stays in wal/
"""


def dead_writer_journal(store: Path, task: str, n: int) -> Path:
    """The journal of a writer that appended ``n`` episodes of ``task`` (levels 100..) and died."""
    res = subprocess.run([*PY, textwrap.dedent(_DEAD_WRITER), str(store), task, str(n)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (wal,) = (store / "wal").iterdir()
    return wal


# ------------------------------------------------------------------------ 1. concurrent writers


def test_a_second_writing_command_stops_naming_the_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from icrl.store.lock import StoreLocked, lock_holder

    store = tmp_path / "s"
    TrajectoryStore.create(store)
    write_synthetic(store, "w", [("nethack", MAZE, 0, 0, 5)])
    before = shard_files(store)
    with writer_in_another_process(store) as holder:
        assert f"pid {holder.pid}" in lock_holder(store)
        for argv in (collect_argv(store), ["data", "repair", str(store)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"{store}: the store is being written by pid {holder.pid}" in err, err
            assert len(err.strip().splitlines()) == 1
        with pytest.raises(StoreLocked, match=f"pid {holder.pid}"):
            ShardWriter(store, "library")
        with pytest.raises(StoreLocked, match="not by this writer's run"):
            ShardWriter(store, "worker", lock="not-the-token")  # a worker of some other run
    assert shard_files(store) == before  # nothing was written by the refused commands
    assert lock_holder(store) is None  # the holder closed: the lock is free, nothing stale blocks
    assert main(collect_argv(store)) == 0
    assert len(stored_keys(store)) == len(set(stored_keys(store))) == 6  # the synthetic one + 5 played


@pytest.mark.slow
def test_collects_started_at_once_store_each_episode_once(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = subprocess.Popen([sys.executable, "-m", "icrl.cli", *collect_argv(out, levels=30, workers=1)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ((out / "wal").is_dir() and any((out / "wal").iterdir())):  # the first is writing
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.02)
    cmd = [sys.executable, "-m", "icrl.cli", *collect_argv(out, levels=30, workers=1)]
    second = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiter = subprocess.Popen([*cmd, "--wait"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=300) for p in (first, second, waiter)]
    keys = stored_keys(out)
    assert len(keys) == len(set(keys)) == 60
    assert verify_store(out).ok
    assert first.returncode == 0, outs[0]
    # The second either found the first still writing (refused, naming it) or found its episodes.
    if second.returncode == 2:
        assert f"being written by pid {first.pid}" in outs[1][1], outs[1]
    else:
        assert second.returncode == 0 and "0 to play" in outs[1][0], outs[1]
    assert waiter.returncode == 0 and "0 to play" in outs[2][0], outs[2]


def test_verify_reports_duplicates_and_repair_keeps_the_first_copy(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "s"
    TrajectoryStore.create(store)
    write_synthetic(store, "a", [("nethack", "T", lv, 0, 8) for lv in range(4)])
    write_synthetic(store, "b", [("nethack", "T", lv, 0, 8) for lv in (2, 3, 4)], seed=1)  # 2, 3 again
    first = {k: ep for k, ep in all_episodes(store).items()}  # noqa: C416 (the last copy of each key)
    with TrajectoryStore(store) as s:
        a_shard, b_shard = (store / x for x in s.shards)
    assert main(["data", "verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED: {b_shard}: record 0: duplicate of episode (T, level 2, episode 0), stored first at {a_shard}: record 2" in out
    assert "FAILED: 2 problems" in out
    assert main(["data", "inspect", str(store)]) == 1
    assert "WARNING: 2 episodes are stored more than once" in capsys.readouterr().out
    assert main(["data", "repair", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"rewrote {b_shard}: set aside 2 duplicate episodes" in out
    assert verify_store(store).ok
    kept = all_episodes(store)
    assert sorted(kept) == [("T", lv, 0) for lv in range(5)]
    for lv in range(4):  # the first copies (writer a, seed 0) are the ones kept
        assert episode_equal(kept[("T", lv, 0)], episode_spec("nethack", "T", lv, 0, 8, seed=0))
    assert episode_equal(kept[("T", 4, 0)], first[("T", 4, 0)])
    assert (store / "damaged" / "shards" / b_shard.name).read_bytes() != b_shard.read_bytes()  # the original


@pytest.mark.slow
def test_commands_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    from icrl.store.layout import create_store

    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        roots = pool.map(create_store, [tmp_path / "s"] * 8)
    assert set(roots) == {tmp_path / "s"} and len(TrajectoryStore(tmp_path / "s")) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["icrl-store.json", "index", "shards", "wal"]


def test_nld_convert_refuses_a_store_being_written(db: Path, tmp_path: Path) -> None:  # noqa: F811
    from icrl.nld.convert import convert
    from icrl.store.lock import StoreLocked
    from icrl.nld.selection import select_games

    store = tmp_path / "s"
    TrajectoryStore.create(store)
    with writer_in_another_process(store) as holder:
        with pytest.raises(StoreLocked, match=f"{store}: the store is being written by pid {holder.pid}"):
            convert(select_games(db, "nld-aa"), store, segment_length=SEGMENT, seq_length=SEQ)
    assert len(TrajectoryStore(store)) == 0


# ------------------------------------------------------------------ 2. index and shards disagree


def test_a_deleted_fragment_is_named_refused_and_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s"
    assert main(collect_argv(out, levels=2)) == 0
    (frag,) = (out / "index").iterdir()  # the shard of the first run: 4 episodes
    assert main(collect_argv(out, levels=5)) == 0  # a second shard
    before = all_episodes(out)
    capsys.readouterr()
    shard = out / "shards" / (frag.name.removesuffix(".jsonl") + ".arrayrecord")
    frag.unlink()

    assert main(["data", "inspect", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"WARNING: {shard}: shard has no index fragment: its 4 episodes are not in the index" in text
    assert "total: 6 episodes" in text and f"icrl data repair {out}" in text
    # Collecting now would play the 4 episodes again (duplicates once repaired): refused instead.
    assert main(collect_argv(out, levels=5)) == 2
    assert f"{shard}: shard has no index fragment" in capsys.readouterr().err
    with pytest.raises(IcrlError, match="shard has no index fragment"):
        TrajectoryStore(out)  # what training opens

    assert main(["data", "repair", str(out)]) == 0
    assert f"reindexed {frag}: the shard had no index fragment; kept its 4 episodes" in capsys.readouterr().out
    assert verify_store(out).ok
    after = all_episodes(out)
    assert sorted(after) == sorted(before) and all(episode_equal(after[k], before[k]) for k in before)
    assert main(collect_argv(out, levels=5)) == 0
    assert "10 already stored, 0 to play" in capsys.readouterr().out


def test_a_lost_shard_is_set_aside_and_collect_plays_its_episodes_again(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s"
    assert main(collect_argv(out, levels=2)) == 0
    first = set((out / "shards").iterdir())
    assert main(collect_argv(out, levels=4)) == 0
    before = all_episodes(out)
    (shard,) = set((out / "shards").iterdir()) - first  # the second run's: 4 episodes
    frag = out / "index" / (shard.name.removesuffix(".arrayrecord") + ".jsonl")
    shard.unlink()
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 1
    assert f"WARNING: {frag}: lists 4 episodes of {shard}, which is missing" in capsys.readouterr().out
    assert main(["data", "repair", str(out)]) == 0
    assert "4 episodes lost" in capsys.readouterr().out
    assert (out / "damaged" / "index" / frag.name).is_file() and not frag.exists()
    assert main(collect_argv(out, levels=4)) == 0
    assert "4 already stored, 4 to play" in capsys.readouterr().out
    after = all_episodes(out)  # the same seeds play the same episodes
    assert sorted(after) == sorted(before) and all(episode_equal(after[k], before[k]) for k in before)
    assert verify_store(out).ok


def test_a_corrupt_fragment_is_named_and_rebuilt_from_its_shard(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "s"
    TrajectoryStore.create(store)
    write_synthetic(store, "w", [("nethack", "T", lv, 0, 10) for lv in range(6)], max_shard_episodes=3)
    before = all_episodes(store)
    frag = sorted((store / "index").iterdir())[1]
    lines = frag.read_text().splitlines()
    frag.write_text("\n".join(lines[:2] + [lines[2][:25]] + lines[3:]) + "\n")  # a row cut short
    for argv in (["data", "inspect", str(store)], collect_argv(store)):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{frag}:3: index row is not JSON" in err and "icrl data repair" in err, err
    assert main(["data", "repair", str(store)]) == 0
    assert f"reindexed {frag}: its index fragment was corrupt; kept its 3 episodes" in capsys.readouterr().out
    assert (store / "damaged" / "index" / frag.name).read_text().splitlines()[2] == lines[2][:25]
    assert verify_store(store).ok
    after = all_episodes(store)
    assert sorted(after) == sorted(before) and all(episode_equal(after[k], before[k]) for k in before)


def _flip_a_record(store: Path, row: int) -> tuple[Path, int]:
    s = TrajectoryStore(store)
    ref = s.ref(row)
    shard = store / ref.shard
    data = bytearray(shard.read_bytes())
    record = s.read_record(ref)
    data[data.find(record) + len(record) // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    return shard, ref.offset


@pytest.mark.parametrize("damage", ["flipped byte", "truncated shard"])
def test_repair_sets_a_damaged_shard_aside_and_keeps_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               damage: str) -> None:
    store = tmp_path / "s"
    TrajectoryStore.create(store)
    write_synthetic(store, "w", [("nethack", "T", lv, 0, 20) for lv in range(9)], max_shard_episodes=3)
    before = all_episodes(store)
    if damage == "flipped byte":
        shard, record = _flip_a_record(store, 4)
        lost = {("T", 4, 0)}
    else:
        shard = store / TrajectoryStore(store).shards[2]
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        lost = {("T", lv, 0) for lv in (6, 7, 8)}
    original = shard.read_bytes()
    assert main(["data", "verify", str(store)]) == 1
    assert f"DAMAGED: {shard}" in capsys.readouterr().out
    assert main(["data", "repair", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"{len(lost)} episodes lost" in out and str(shard) in out
    assert (store / "damaged" / "shards" / shard.name).read_bytes() == original  # set aside, not deleted
    assert verify_store(store).ok
    after = all_episodes(store)
    assert set(after) == set(before) - lost and all(episode_equal(after[k], before[k]) for k in after)
    assert main(["data", "repair", str(store)]) == 0  # idempotent
    assert f"nothing to repair: {9 - len(lost)} episodes" in capsys.readouterr().out


# ----------------------------------------------------------------------- 3. damaged journals


def test_garbage_after_a_journal_is_salvaged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = make_store(tmp_path / "s", levels=3, episodes=1)
    wal = dead_writer_journal(store, TASK, 3)
    garbage = os.urandom(300)
    with open(wal, "ab") as f:
        f.write(garbage)
    good = wal.stat().st_size - len(garbage)

    assert main(["data", "inspect", str(store)]) == 1  # shows what is readable, warns about the rest
    out = capsys.readouterr().out
    assert f"WARNING: damaged journal: {wal}: byte {good} (frame 3)" in out and "total: 6 episodes" in out
    assert main(collect_argv(store)) == 2
    err = capsys.readouterr().err
    assert f"damaged journal: {wal}: byte {good}" in err and f"icrl data repair {store}" in err
    config = write_config(tmp_path / "exp.yaml", tiny_config(store, tmp_path / "runs", data={"batch_size": 8}))
    assert main(["train", str(config)]) == 2
    assert f"damaged journal: {wal}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # a failed command leaves nothing behind

    assert main(["data", "repair", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"salvaged {wal}: kept its 3 episodes before the damage" in out
    aside = store / "damaged" / "wal" / f"{wal.stem}.from-byte-{good}.wal"
    assert aside.read_bytes() == garbage and not wal.exists()
    assert verify_store(store).ok
    kept = all_episodes(store)
    assert len(kept) == 6
    for i in range(3):
        assert episode_equal(kept[(TASK, 100 + i, 0)], episode_spec("nethack", TASK, 100 + i, 0, 12))


def test_a_damaged_journal_record_is_named_by_its_journal_and_salvaged(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "s"
    TrajectoryStore.create(store)
    wal = dead_writer_journal(store, "T", 4)
    s = TrajectoryStore(store)
    ref = s.ref(2)
    data = bytearray(wal.read_bytes())
    pos = data.find(s.read_record(ref))
    data[pos + 30] ^= 0x01
    wal.write_bytes(bytes(data))
    with pytest.raises(IcrlError, match=rf"{wal}: frame 2 \(byte {pos}\): checksum mismatch"):
        TrajectoryStore(store).read(ref)  # the journal, not a shard that does not exist yet
    assert main(["data", "repair", str(store)]) == 0
    assert f"salvaged {wal}: kept its 2 episodes before the damage" in capsys.readouterr().out
    assert verify_store(store).ok and sorted(all_episodes(store)) == [("T", 100, 0), ("T", 101, 0)]
    aside = next((store / "damaged" / "wal").iterdir())
    assert aside.read_bytes() == bytes(data[data.rfind(b"ICWF", 0, pos):])  # frames 2 and 3, kept aside


# ------------------------------------------------------------------- 4. kills of collect


def children(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_worker_is_reported_and_a_rerun_completes(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "s"
    killed: list[int] = []

    def kill_one(ev: object) -> None:
        if not killed:
            victim = mp.active_children()[0]
            killed.append(victim.pid)
            os.kill(victim.pid, sig)

    cfg = small(out, tasks=[MAZE], levels=12, workers=2)
    report = run_collection(cfg, on_event=kill_one)
    assert len(report.dead_workers) == 1 and f"pid {killed[0]}" in report.dead_workers[0]
    assert f"signal {int(sig)}" in report.dead_workers[0] and not report.complete
    assert "run the same command again" in report.summary()
    assert verify_store(out).ok
    rest = run_collection(cfg.model_copy(update={"workers": 0}))
    assert rest.complete and rest.already_stored == report.stored
    keys = stored_keys(out)
    assert len(keys) == len(set(keys)) == 24 - len(report.gave_up) - len(rest.gave_up)


@pytest.mark.slow
def test_sigkill_mid_run_loses_only_unfinished_episodes(tmp_path: Path) -> None:
    from icrl.store.lock import lock_holder

    out = tmp_path / "s"
    argv = [sys.executable, "-m", "icrl.cli", "collect", "--suite", "minihack", "--split", "heldout",
            "--tasks", "MiniHack-MazeWalk-15x15-v0", "--levels", "20", "--episodes-per-level", "2",
            "--sticky", "0.2", "--workers", "2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = 0, time.monotonic() + 120
    while seen < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if (out / "icrl-store.json").exists():
            seen = len(TrajectoryStore(out))
    assert proc.poll() is None, proc.communicate()
    workers = children(proc.pid)
    assert len(workers) >= 2
    os.kill(proc.pid, signal.SIGKILL)  # `kill -9` of icrl collect: its workers die with it, mid-episode
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)  # no orphan goes on writing
    assert lock_holder(out) is None  # the kernel dropped the dead run's write lock
    report = verify_store(out)
    assert report.ok, [str(p) for p in report.problems]
    after_kill = stored_keys(out)
    assert seen <= len(after_kill) < 40 and len(after_kill) == len(set(after_kill))

    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(after_kill)} already stored" in done.stdout
    keys = stored_keys(out)
    assert len(keys) == len(set(keys)) and set(after_kill) <= set(keys)
    gave_up = int(done.stdout.split("episodes given up ")[1].split()[0])
    assert len(keys) == 40 - gave_up
    assert verify_store(out).ok


# --------------------------------------------------------------------- 5. kills of training


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_save_keeps_the_saved_ones_and_resumes(tmp_path: Path) -> None:
    from test_train_resume import checkpoint_steps, finish, load_state, start, step_records, train_cmd

    steps = 40
    store = make_store(tmp_path / "store")
    cfg = tiny_config(store, tmp_path / "runs", mesh={"data": 1, "fsdp": -1},
                      train={"steps": steps, "checkpoint_every": 1, "keep": 100,
                             "compile_cache": str(tmp_path / "xla-cache")})
    config = write_config(tmp_path / "exp.yaml", cfg)
    run = tmp_path / "runs" / "tiny"
    log = tmp_path / "first.log"
    proc = start(train_cmd(config), log)
    ckpts = run / "checkpoints"

    def saving() -> bool:  # a save in progress: Orbax writes into a temporary directory first
        try:
            return bool(checkpoint_steps(run)) and any(not p.name.isdigit() for p in ckpts.iterdir())
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 240
    while not saving():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    saved = checkpoint_steps(run)
    assert saved and saved[-1] < steps
    for step in saved:  # every checkpoint completed before the kill is whole
        assert int(load_state(run, step)["step"]) == step

    log2 = tmp_path / "second.log"
    assert finish(start(train_cmd(config, "--resume"), log2), log2) == 0, log2.read_text()[-3000:]
    assert f"resuming at step {saved[-1]}" in log2.read_text()
    assert checkpoint_steps(run)[-1] == steps and set(saved) <= set(checkpoint_steps(run))
    assert all(p.name.isdigit() for p in ckpts.iterdir())  # the half-written one was cleaned up
    assert [r["step"] for r in step_records(run)] == list(range(1, steps + 1))  # each step logged once


# --------------------------------------------------------------- 6. evaluation, configs, flags


@pytest.mark.slow
def test_eval_without_a_checkpoint_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    store = tmp_path / "demos"  # held-out levels: not those of the run's training store
    TrajectoryStore.create(store)
    write_synthetic(store, "demos", [("nethack", TASK, lv, e, 8) for lv in (100, 101) for e in range(2)])
    run = tmp_path / "run"
    run.mkdir()
    write_config(run / "config.yaml", tiny_config(make_store(tmp_path / "train"), tmp_path))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for checkpoints_exist in (False, True):
        if checkpoints_exist:
            (run / "checkpoints").mkdir()
        res = subprocess.run([sys.executable, "-m", "icrl.cli", "eval", str(run), "--demos", str(store), "--tasks", TASK,
                              "--shots", "0,1", "--levels", "2"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        # The failed command made no folder (Orbax's manager would have made checkpoints/).
        assert (run / "checkpoints").exists() == checkpoints_exist
        assert res.stderr.splitlines() == [f"icrl eval: error: {run}: no checkpoint in {run / 'checkpoints'}"
                                           + ("" if checkpoints_exist else " (the folder does not exist)")]


def test_run_name_flag_is_a_name_and_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from icrl.cli import build_parser
    from icrl.train.commands import _config

    config = write_config(tmp_path / "exp.yaml", tiny_config(tmp_path / "store", tmp_path / "runs"))
    cfg = _config(build_parser().parse_args(["train", str(config), "--name", "2024"]))
    assert cfg.name == "2024" and cfg.path == tmp_path / "runs" / "2024"
    assert main(["train", str(config), "--name", "a/b"]) == 2
    err = capsys.readouterr().err
    assert f"{config} (with --name a/b): name = 'a/b': run name 'a/b' must be a plain directory name" in err
    assert "--set" not in err


@pytest.mark.parametrize(("overrides", "line"), [
    (["train.warmup_steps=5000", "train.steps=100"],
     "train: warmup_steps=5000 leaves no cosine steps of steps=100"),
    (["data.context_steps=1000"], "top level: data.context_steps=1000 makes"),
    (["mesh.rules=[[embed, 3]]"], "mesh.rules.0.1 = 3: Input should be a valid string or Input should be a valid list"),
])
def test_config_checks_across_fields_print_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    overrides: list[str], line: str) -> None:
    config = write_config(tmp_path / "exp.yaml", tiny_config(tmp_path / "store", tmp_path / "runs"))
    assert main(["train", str(config), *sum((["--set", o] for o in overrides), [])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and line in err[0] and str(config) in err[0], err
    assert "'lr':" not in err[0]  # not the whole section


# -------------------------------------------------------------------- 7. episode flags, NLD files


def test_an_episode_cut_by_the_step_limit_is_truncated(tmp_path: Path) -> None:
    from icrl.collect.play import play_level
    from icrl.envs import make_env

    for limit in (None, 50, 1000):  # the task's own limit (200), icrl's, one above the task's
        env = make_env(MAZE, max_steps=limit)
        env.reset(0)
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(int(env.spec.legal_actions[0]))  # into a wall
            steps += 1
        env.close()
        assert (steps, terminated, truncated) == (min(limit or 200, 200), False, True), limit
    keys = iter(["k"] * 300)  # a player walking into a wall until the task's own limit
    outcome = play_level(MAZE, 0, tmp_path / "h", lambda: next(keys), lambda obs, status: None, keep_failed=True)
    (ref,) = TrajectoryStore(tmp_path / "h")
    assert outcome.saved and ref.length == 200 and ref.truncated and not ref.terminated


def test_truncated_and_corrupt_nld_files_are_named_and_the_rest_converted(
        damaged, converted, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    from icrl.nld.selection import select_games

    db_path, ids = damaged
    files = {g.gameid: g.files[0][0] for g in select_games(db_path, "nld-aa").games}
    argv = ["nld", "convert", "--db", str(db_path), "--dataset", "nld-aa", "--out", str(tmp_path / "s"),
            "--segment-length", str(SEGMENT), "--seq-length", str(SEQ), "--batch-size", "2", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for kind in ("truncated", "garbled"):
        assert f"skipped: game {ids[kind]}: {files[ids[kind]]}:" in out, out
    got = store_games(tmp_path / "s")
    # The other games, whole: as converted from the undamaged files (both indexes number the
    # games of the same files alike).
    clean = store_games(converted[0])
    assert set(got) == set(clean) - set(ids.values())
    _assert_same_games(got, {g: clean[g] for g in got})
    assert main(argv) == 0  # a re-run converts nothing more and names the same files
    again = capsys.readouterr().out
    assert again.count("skipped:") == out.count("skipped:") == 2
    assert store_games(tmp_path / "s").keys() == got.keys()
