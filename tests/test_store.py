"""The trajectory store: round trip, index, concurrent writers, kill safety, damage detection,
bad input and reader memory."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from icrl.store.codec import RecordError, decode_episode, encode_episode
from icrl.store.episode import Episode, episode_equal
from icrl.store.layout import recover_journals
from icrl.store.lock import WriteLock
from icrl.store.reader import TrajectoryStore, open_store
from icrl.store.writer import ShardWriter
from icrl.data.synthetic import episode_spec, nethack_episode, procgen_episode, write_synthetic
from icrl.store.verify import verify_store
from icrl.errors import IcrlError

REPO = Path(__file__).resolve().parents[1]


def _episodes() -> list[Episode]:
    """A mix of domains, tasks, levels, lengths (incl. 1 step) and outcomes."""
    eps = []
    for i in range(12):
        domain = "nethack" if i % 3 else "procgen"
        task = "MiniHack-Room-5x5-v0" if domain == "nethack" else "procgen:coinrun"
        eps.append(episode_spec(domain, task, level=i % 4, episode=i // 4, length=[1, 7, 23, 40][i % 4], seed=i))
    eps.append(dataclasses.replace(nethack_episode(9, task="nld-nao:Wizard", level=123456789, length=5,
                                                   source="nld-nao", success=False),
                                   has_actions=False, actions=np.full(5, 136, np.int32)))
    return eps


def _run_python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, **kwargs)


def _store_keys(path: Path) -> list[tuple[str, int, int]]:
    store = TrajectoryStore(path)
    keys = sorted((r.task, r.level, r.episode) for r in store.refs)
    store.close()
    return keys


# --------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("compression", ["lzma", "zlib", "zlib1", "zstd"])
def test_round_trip_is_field_by_field_equal(tmp_path: Path, compression: str) -> None:
    eps = _episodes()
    store = TrajectoryStore.create(tmp_path / "s")
    with store.writer("rt", compression=compression, max_shard_episodes=5) as w:
        written = [w.append(ep) for ep in eps]
    store = TrajectoryStore(tmp_path / "s")
    assert len(store) == len(eps)
    assert len(store.shards) == 3 and not store.journals  # 5 + 5 + 3 episodes
    for ep, ref in zip(eps, written):
        (found,) = [r for r in store.episodes_of(ep.task, ep.level) if r.episode == ep.episode]
        assert found == ref
        assert (found.length, found.ret, found.success, found.has_actions) == (ep.length, ep.ret, ep.success, ep.has_actions)
        back = store.read(found)
        assert episode_equal(back, ep)
        assert back.has_actions == ep.has_actions and back.level == ep.level
        for key, arr in back.observations.items():
            assert arr.dtype == ep.observations[key].dtype and arr.flags.writeable


def test_codec_round_trip_and_compression() -> None:
    ep = nethack_episode(3, length=100)
    record = encode_episode(ep)
    assert episode_equal(decode_episode(record), ep)
    raw = sum(a.nbytes for a in ep.observations.values())
    assert len(record) < raw / 50  # tty screens are mostly spaces: deltas compress very well
    pg = procgen_episode(3, length=30)
    assert episode_equal(decode_episode(encode_episode(pg, "zlib")), pg)
    assert not episode_equal(decode_episode(encode_episode(pg)), procgen_episode(4, length=30))


def test_codec_rejects_bad_bytes_and_bad_episodes() -> None:
    record = encode_episode(nethack_episode(0, length=4))
    with pytest.raises(RecordError, match="magic"):
        decode_episode(b"XXXX" + record[4:])
    with pytest.raises(RecordError, match="decompress"):
        decode_episode(record[:-8])
    with pytest.raises(RecordError):
        decode_episode(b"")
    bad = nethack_episode(0, length=4)
    bad.actions = bad.actions.astype(np.int64)
    with pytest.raises(ValueError, match="actions must be int32"):
        encode_episode(bad)


def test_index_answers_task_and_level(tmp_path: Path) -> None:
    specs = [("nethack", f"Task{t}", lv, e, 3) for t in range(3) for lv in range(4) for e in range(2)]
    TrajectoryStore.create(tmp_path / "s")
    write_synthetic(tmp_path / "s", "w", specs, max_shard_episodes=7)
    store = TrajectoryStore(tmp_path / "s")
    assert store.tasks() == ["Task0", "Task1", "Task2"]
    assert store.levels("Task1") == [0, 1, 2, 3]
    for _, task, level, episode, _ in specs:
        refs = store.episodes_of(task, level)
        assert sorted(r.episode for r in refs) == [0, 1]
        assert all(r.task == task and r.level == level for r in refs)
        assert store.contains(task, level, episode)
    assert store.episodes_of("Task1", 99) == [] and store.episodes_of("nope", 0) == []
    assert not store.contains("Task1", 0, 2) and not store.contains("nope", 0, 0)
    assert len(store) == len(specs) == len(store.refs)
    assert store.ref(0) == store.refs[0]
    with pytest.raises(IndexError):
        store.ref(len(store))


def test_grain_source_reads_episodes_and_pickles(tmp_path: Path) -> None:
    import grain

    TrajectoryStore.create(tmp_path / "s")
    specs = [("nethack", "T", lv, 0, 5 + lv) for lv in range(6)]
    write_synthetic(tmp_path / "s", "w", specs, max_shard_episodes=4)
    store = TrajectoryStore(tmp_path / "s")
    src = store.source()
    lengths = list(grain.MapDataset.source(src).map(lambda ep: ep.length))
    assert sorted(lengths) == [5, 6, 7, 8, 9, 10]
    clone = pickle.loads(pickle.dumps(src))
    assert episode_equal(clone[2], src[2])
    sub = store.source(rows=[3, 1])
    assert [ep.level for ep in sub] == [store.ref(3).level, store.ref(1).level]


# ------------------------------------------------------------------------- journals and sealing


def test_appended_episodes_are_visible_before_sealing_and_refs_survive_it(tmp_path: Path) -> None:
    TrajectoryStore.create(tmp_path / "s")
    eps = [episode_spec("nethack", "T", 0, i, 6) for i in range(3)]
    w = ShardWriter(tmp_path / "s", "live")
    refs = [w.append(ep) for ep in eps]
    during = TrajectoryStore(tmp_path / "s")  # sees the journal of a live writer
    assert len(during) == 3 and during.journals and not during.shards
    w.close()
    after = TrajectoryStore(tmp_path / "s")
    assert after.shards == [refs[0].shard] and not after.journals
    assert not list((tmp_path / "s" / "wal").iterdir())
    for ref, ep in zip(refs, eps):
        assert episode_equal(during.read(ref), ep)  # snapshot taken before sealing still reads
        assert episode_equal(after.read(ref), ep)  # the ref is the same after sealing
    # A pickled snapshot whose journal was sealed since reads from the sealed shard.
    during.close()
    clone = pickle.loads(pickle.dumps(during))
    assert episode_equal(clone.read(refs[1]), eps[1])


def test_two_writer_processes_make_one_consistent_store(tmp_path: Path) -> None:
    # Two processes of one run (as icrl collect's workers): the parent holds the store's write
    # lock, the workers write under its token.
    path = tmp_path / "s"
    TrajectoryStore.create(path)
    ctx = multiprocessing.get_context("spawn")
    jobs = []
    lock = WriteLock.acquire(path, "test run")
    for k in range(2):
        specs = [("nethack", f"Task{k}", lv, e, 12) for lv in range(5) for e in range(3)]
        jobs.append((specs, ctx.Process(target=write_synthetic, args=(str(path), f"proc{k}", specs),
                                        kwargs={"max_shard_episodes": 4, "fsync": True, "lock": lock.token})))
    for _, p in jobs:
        p.start()
    for _, p in jobs:
        p.join(120)
        assert p.exitcode == 0
    lock.release()
    store = TrajectoryStore(path)
    expected = sorted((t, lv, e) for specs, _ in jobs for _, t, lv, e, _ in specs)
    assert sorted((r.task, r.level, r.episode) for r in store.refs) == expected
    writers = {Path(s).name.split(".")[0] for s in store.shards}
    assert writers == {"proc0", "proc1"} and len(store.shards) == 8  # 15 episodes each, 4 a shard
    for ref in store.refs[::5]:
        assert episode_equal(store.read(ref), episode_spec("nethack", ref.task, ref.level, ref.episode, 12))
    assert verify_store(path).ok


_KILL_VICTIM = """
    import sys
    from icrl.store.writer import ShardWriter
    from icrl.data.synthetic import episode_spec
    w = ShardWriter(sys.argv[1], "victim", max_shard_episodes=4)
    i = 0
    while True:
        w.append(episode_spec("nethack", "Kill-v0", i % 3, i, 40))
        print(i, flush=True)
        i += 1
"""


@pytest.mark.slow
def test_sigkill_loses_only_the_unfinished_episode(tmp_path: Path) -> None:
    path = tmp_path / "s"
    TrajectoryStore.create(path)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILL_VICTIM), str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    reported = []
    for line in proc.stdout:
        reported.append(int(line))
        if len(reported) >= 10:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reported += [int(line) for line in proc.stdout]  # appends that returned before the kill
    assert proc.returncode == -signal.SIGKILL
    stored = sorted(e for _, _, e in _store_keys(path))
    # Every append that returned is there; at most one more (returned, not yet reported).
    assert stored[: len(reported)] == reported == list(range(len(reported)))
    assert len(stored) - len(reported) <= 1 and stored == list(range(len(stored)))
    assert verify_store(path).ok
    store = TrajectoryStore(path)
    for ref in store.refs:
        assert episode_equal(store.read(ref), episode_spec("nethack", "Kill-v0", ref.level, ref.episode, 40))
    # The next writer seals the dead writer's journal: same episodes, now all in shards.
    ShardWriter(path, "next").close()
    after = TrajectoryStore(path)
    assert not after.journals and not list((path / "wal").iterdir())
    assert sorted(e for _, _, e in _store_keys(path)) == stored
    assert verify_store(path).ok


_DIE_WITH_TORN_TAIL = """
    import os, sys
    from icrl.store.journal import frame_bytes
    from icrl.store.writer import ShardWriter
    from icrl.data.synthetic import episode_spec
    w = ShardWriter(sys.argv[1], "torn")
    refs = [w.append(episode_spec("nethack", "Torn-v0", 0, i, 10)) for i in range(3)]
    # Simulate a kill in the middle of the 4th append: half a frame at the end of the journal.
    half = frame_bytes(refs[0], b"x" * 5000)[:2600]
    os.write(w._fd, half)
    os._exit(0)  # die without closing: the journal stays unsealed
"""


def test_dead_writer_journal_with_torn_tail_reads_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "s"
    TrajectoryStore.create(path)
    res = _run_python(_DIE_WITH_TORN_TAIL, str(path))
    assert res.returncode == 0, res.stderr
    (wal,) = (path / "wal").iterdir()
    store = TrajectoryStore(path)
    assert [r.episode for r in store.refs] == [0, 1, 2] and store.journals == [wal]
    report = verify_store(path)
    assert report.ok and any("unfinished append" in n for n in report.notes)
    # Crash windows of sealing: (1) fragment written, journal not yet removed; (2) shard written,
    # fragment not. Each must neither lose nor duplicate episodes.
    saved = tmp_path / "saved.wal"
    shutil.copy(wal, saved)
    assert recover_journals(path) == 3
    (frag,) = (path / "index").iterdir()
    shutil.copy(saved, wal)  # (1)
    assert _store_keys(path) == [("Torn-v0", 0, i) for i in range(3)]
    assert verify_store(path).ok
    assert recover_journals(path) == 0 and not wal.exists()
    frag.unlink()
    shutil.copy(saved, wal)  # (2)
    assert _store_keys(path) == [("Torn-v0", 0, i) for i in range(3)]
    report = verify_store(path)
    assert report.ok and any("partly sealed" in n for n in report.notes)
    assert recover_journals(path) == 3 and not wal.exists()
    assert _store_keys(path) == [("Torn-v0", 0, i) for i in range(3)]
    assert verify_store(path).ok


def test_recovery_leaves_live_writers_alone(tmp_path: Path) -> None:
    TrajectoryStore.create(tmp_path / "s")
    with ShardWriter(tmp_path / "s", "live") as w:
        w.append(episode_spec("nethack", "T", 0, 0, 4))
        assert recover_journals(tmp_path / "s") == 0  # its flock is held
        other = ShardWriter(tmp_path / "s", "other")  # recovers on open: must not steal it
        other.append(episode_spec("nethack", "T", 0, 1, 4))
        other.close()
        w.append(episode_spec("nethack", "T", 0, 2, 4))
    assert [e for _, _, e in _store_keys(tmp_path / "s")] == [0, 1, 2]
    assert verify_store(tmp_path / "s").ok


# ------------------------------------------------------------------------------- damage


def _store_with_shards(path: Path) -> TrajectoryStore:
    TrajectoryStore.create(path)
    specs = [("nethack", "T", lv, 0, 20) for lv in range(6)]
    write_synthetic(path, "w", specs, max_shard_episodes=3)
    return TrajectoryStore(path)


def test_flipped_byte_in_a_shard_is_named_by_file_and_record(tmp_path: Path) -> None:
    store = _store_with_shards(tmp_path / "s")
    assert verify_store(tmp_path / "s").ok
    ref = store.refs[4]
    shard = tmp_path / "s" / ref.shard
    data = bytearray(shard.read_bytes())
    record = store.read_record(ref)
    pos = data.find(record)
    assert pos > 0  # records are stored as they are (ArrayRecord compression off)
    data[pos + len(record) // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    report = verify_store(tmp_path / "s")
    assert not report.ok
    assert [(p.file, p.record) for p in report.problems] == [(str(shard), ref.offset)]
    fresh = TrajectoryStore(tmp_path / "s")
    with pytest.raises(IcrlError, match=rf"{shard.name}: record {ref.offset}"):
        fresh.read(ref)
    assert episode_equal(fresh.read(store.refs[3]), episode_spec("nethack", "T", 3, 0, 20))


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_shard_fails_verify(tmp_path: Path, keep: float) -> None:
    store = _store_with_shards(tmp_path / "s")
    shard = tmp_path / "s" / store.shards[1]
    with open(shard, "r+b") as f:
        f.truncate(int(os.path.getsize(shard) * keep))
    report = verify_store(tmp_path / "s")
    assert not report.ok
    assert {p.file for p in report.problems} == {str(shard)}
    assert "its index lists 3 records" in report.problems[0].message


def test_flipped_byte_in_a_journal_fails_verify(tmp_path: Path) -> None:
    path = tmp_path / "s"
    TrajectoryStore.create(path)
    w = ShardWriter(path, "j")
    for i in range(3):
        w.append(episode_spec("nethack", "T", 0, i, 15))
    (wal,) = (path / "wal").iterdir()
    data = bytearray(wal.read_bytes())
    data[-100] ^= 0x01  # inside the last record
    wal.write_bytes(bytes(data))
    report = verify_store(path)
    assert [(p.file, p.record) for p in report.problems] == [(str(wal), 2)]
    os.close(w._fd)  # abandon the writer without sealing the damaged journal


def test_verify_names_a_shard_without_index(tmp_path: Path) -> None:
    store = _store_with_shards(tmp_path / "s")
    frag = tmp_path / "s" / "index" / (Path(store.shards[0]).stem + ".jsonl")
    frag.unlink()
    report = verify_store(tmp_path / "s")
    assert [p.file for p in report.problems] == [str(tmp_path / "s" / store.shards[0])]


# ---------------------------------------------------------------------------- bad input


def test_bad_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(IcrlError, match=rf"{tmp_path / 'missing'}: no such trajectory store"):
        TrajectoryStore(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(IcrlError, match=rf"{tmp_path / 'plain'}: not a trajectory store"):
        TrajectoryStore(tmp_path / "plain")
    with pytest.raises(IcrlError, match="not an empty directory"):
        TrajectoryStore.create(tmp_path / "plain")
    with pytest.raises(IcrlError, match="not a directory"):
        TrajectoryStore(tmp_path / "plain" / "notes.txt")
    with pytest.raises(IcrlError, match="no such trajectory store"):
        ShardWriter(tmp_path / "missing")
    store = open_store(tmp_path / "new", create=True)
    assert len(store) == 0 and store.tasks() == []
    (tmp_path / "new" / "icrl-store.json").write_text("{oops")
    with pytest.raises(IcrlError, match=r"icrl-store.json: corrupt store marker"):
        TrajectoryStore(tmp_path / "new")


def test_corrupt_index_is_named_with_its_line(tmp_path: Path) -> None:
    store = _store_with_shards(tmp_path / "s")
    frag = tmp_path / "s" / "index" / (Path(store.shards[1]).stem + ".jsonl")
    lines = frag.read_text().splitlines()
    frag.write_text("\n".join(lines[:2] + ['{"record": 1, "task": "T", "lev'] + lines[3:]) + "\n")
    with pytest.raises(IcrlError, match=rf"{frag}:3: index row is not JSON"):
        TrajectoryStore(tmp_path / "s")
    report = verify_store(tmp_path / "s")
    assert [(p.file, p.record) for p in report.problems] == [(str(frag), None)]
    assert "line 3" in report.problems[0].message
    row = json.loads(lines[2])
    row["level"] = "three"
    frag.write_text("\n".join(lines[:2] + [json.dumps(row)] + lines[3:]) + "\n")
    with pytest.raises(IcrlError, match=rf"{frag}:3: .*'level' must be an integer"):
        TrajectoryStore(tmp_path / "s")
    frag.write_text("\n".join(lines[:-1]) + "\n")  # a lost row
    with pytest.raises(IcrlError, match=rf"{frag}: header says 3 records but there are 2 rows"):
        TrajectoryStore(tmp_path / "s")


# ------------------------------------------------------------------------------ memory

_PEAK_RSS_READER = """
    import resource, sys
    import numpy as np
    from icrl.store.reader import TrajectoryStore
    store = TrajectoryStore(sys.argv[1])
    rng = np.random.default_rng(0)
    steps = 0
    for i in rng.integers(0, len(store), size=int(sys.argv[2])):
        steps += store.read(store.ref(int(i))).length
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, steps)
"""


def _fill(path: Path, n: int, template: Episode) -> None:
    TrajectoryStore.create(path)
    with ShardWriter(path, "fill", compression="zlib", fsync=False, max_shard_episodes=64) as w:
        for i in range(n):
            w.append(dataclasses.replace(template, level=i, episode=0))


@pytest.mark.slow
def test_reader_peak_memory_does_not_grow_with_the_store(tmp_path: Path) -> None:
    template = nethack_episode(0, length=100)  # 384 KB of raw arrays
    _fill(tmp_path / "small", 30, template)
    _fill(tmp_path / "large", 300, template)  # 115 MB of raw arrays
    peaks = {}
    for name in ("small", "large"):
        out = _run_python(_PEAK_RSS_READER, str(tmp_path / name), "60")
        assert out.returncode == 0, out.stderr
        peak_kib, steps = map(int, out.stdout.split())
        assert steps == 60 * 100
        peaks[name] = peak_kib
    # The large store holds 100 MB more episode data; the reader's peak must not follow it.
    assert peaks["large"] - peaks["small"] < 8 * 1024, peaks
