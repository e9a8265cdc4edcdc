"""NLD ingest: `icrl nld sample` -> `nld index` -> `nld convert` -> `data verify`, against nle itself.

One small sample (4 short bot games recorded by NLE, in the NLD-AA format) is made per session and
reused; tests that damage files work on copies. Ground truth is always nle's own code: the frames
``nle.dataset.TtyrecDataset`` yields, and NetHack replaying the converted actions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from icrl.cli import main as icrl_main
from icrl.nld.actions import KEYPRESS_TO_ACTION, MAPPED_KEYS, action_keycode, map_keypresses
from icrl.nld.integrity import full_problem, quick_problem
from icrl.nld.convert import ConvertReport, convert, split_rows, task_name
from icrl.nld.index import build_index, role_name, scan_nledata
from icrl.nld.sample import SIDECAR, read_sidecar, write_sample
from icrl.nld.segments import GameCutter, RowCutter
from icrl.nld.selection import select_games
from icrl.store.reader import TrajectoryStore
from icrl.envs.actions import PAD_ACTION
from icrl.errors import IcrlError

GAMES = 4
SEGMENT = 64  # several segments a game, the last one shorter
SEQ = 50  # TtyrecDataset chunks that do not line up with segments


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nld") / "sample"
    write_sample(out, GAMES, seed=3, min_steps=120, max_steps=260)
    return out


@pytest.fixture(scope="session")
def db(sample, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nld-db") / "ttyrecs.db"
    build_index(path, aa=sample)
    return path


@pytest.fixture(scope="session")
def converted(db, tmp_path_factory) -> tuple[Path, ConvertReport]:
    store = tmp_path_factory.mktemp("nld-store") / "store"
    report = convert(select_games(db, "nld-aa"), store, segment_length=SEGMENT, batch_size=2, seq_length=SEQ)
    return store, report


def nle_games(db: Path, dataset: str, gameids=None) -> dict[int, dict[str, np.ndarray]]:
    """Every frame of every game as nle's TtyrecDataset yields it (copied), by game id."""
    import nle.dataset as nld

    ds = nld.TtyrecDataset(dataset, batch_size=1, seq_length=97, dbfilename=str(db), gameids=gameids, shuffle=False)
    parts: dict[int, dict[str, list]] = {}
    for mb in ds:
        gids = mb["gameids"][0]
        for gid in np.unique(gids[gids != 0]).tolist():
            sel = gids == gid
            game = parts.setdefault(gid, {})
            for key, arr in mb.items():
                game.setdefault(key, []).append(arr[0][sel].copy())  # nle reuses its buffers
    return {g: {k: np.concatenate(v) for k, v in d.items()} for g, d in parts.items()}


def store_games(store_path: Path) -> dict[int, list]:
    """Episodes of the store by level (game id), ordered by segment number."""
    with TrajectoryStore(store_path) as store:
        games: dict[int, list] = {}
        for ref in store:
            games.setdefault(ref.level, []).append(store.read(ref))
    return {g: sorted(eps, key=lambda e: e.episode) for g, eps in games.items()}


def concat(episodes, key: str) -> np.ndarray:
    return np.concatenate([e.observations[key] for e in episodes])


def copy_sample(sample: Path, dst: Path) -> Path:
    shutil.copytree(sample, dst)
    return dst


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = icrl_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------ sample


def test_sample_is_nle_format_and_every_game_ended(sample):
    runs = list(sample.glob("*/*.xlogfile"))
    assert len(runs) == 1
    xlog_lines = runs[0].read_text().splitlines()
    ttyrecs = sorted(p.name for p in runs[0].parent.glob("*.ttyrec3.bz2"))
    assert len(ttyrecs) == GAMES
    # NLE writes a game's xlogfile line only when it ends: every ttyrec is listed.
    listed = sorted(line.split("ttyrecname=")[1] for line in xlog_lines)
    assert listed == ttyrecs
    deaths = [dict(f.split("=", 1) for f in line.split("\t"))["death"] for line in xlog_lines]
    assert all(deaths), deaths
    sidecar = read_sidecar(sample)
    assert sorted(Path(k).name for k in sidecar) == ttyrecs
    assert all(g.ended_by in ("quit", "death") for g in sidecar.values())
    assert json.loads((sample / SIDECAR).read_text())["fix_moon_phase"] is True
    scan = scan_nledata(sample)
    assert (scan.xlogfiles, scan.ttyrecs, scan.listed_games, scan.skips) == (1, GAMES, GAMES, [])


def test_sample_refuses_to_overwrite(sample):
    with pytest.raises(IcrlError, match="not an empty directory"):
        write_sample(sample, 1)


# ------------------------------------------------------------------------------------- index


def test_index_summary_counts_games_per_role(db, sample, capsys, tmp_path):
    import sqlite3

    from icrl.nld.index import count_frames, summarize_db

    with sqlite3.connect(db) as conn:
        roles = [r for (r,) in conn.execute("SELECT role FROM games")]
        turns = sum(t for (t,) in conn.execute("SELECT turns FROM games"))
    rows = summarize_db(db)
    assert sorted(r[1] for r in rows) == sorted({role_name(r) for r in roles})
    assert sum(r[2] for r in rows) == GAMES and sum(r[3] for r in rows) == turns
    truth = nle_games(db, "nld-aa")
    assert sum(count_frames(db, "nld-aa").values()) == sum(len(g["gameids"]) for g in truth.values())
    code, out, _ = run_cli(["nld", "index", "--aa", str(sample), "--db", str(tmp_path / "t.db"), "--count-frames"],
                           capsys)
    assert code == 0
    for role in set(roles):
        assert role_name(role) in out


def test_index_bad_input(sample, tmp_path, capsys):
    with pytest.raises(IcrlError, match="no such directory"):
        build_index(tmp_path / "x.db", aa=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IcrlError, match="no <run>/\\*.xlogfile"):
        build_index(tmp_path / "x.db", aa=tmp_path / "empty")
    with pytest.raises(IcrlError, match="no xlogfile"):
        build_index(tmp_path / "x.db", nao=tmp_path / "empty")
    assert not (tmp_path / "x.db").exists()  # refused before anything was written
    build_index(tmp_path / "y.db", aa=sample)
    with pytest.raises(IcrlError, match="already has dataset"):
        build_index(tmp_path / "y.db", aa=sample)
    code, _, err = run_cli(["nld", "index", "--aa", str(tmp_path / "missing"), "--db", str(tmp_path / "z.db")], capsys)
    assert code == 2 and "no such directory" in err


def test_index_reports_ttyrec_without_xlogfile_entry(sample, tmp_path, capsys):
    data = copy_sample(sample, tmp_path / "data")
    run = next(data.glob("*/*.xlogfile")).parent
    first = sorted(run.glob("*.ttyrec3.bz2"))[0]
    pid = first.name.split(".")[1]
    orphan = run / f"nle.{pid}.99.ttyrec3.bz2"  # a game that never ended: no xlogfile line
    shutil.copy(first, orphan)
    (data / "stray").mkdir()
    stray = data / "stray" / "nle.1.0.ttyrec3.bz2"  # a run directory with no xlogfile at all
    shutil.copy(first, stray)
    code, out, _ = run_cli(["nld", "index", "--aa", str(data), "--db", str(tmp_path / "t.db")], capsys)
    assert code == 0
    assert f"{orphan}: no line in" in out and f"{stray}: no xlogfile beside it" in out
    assert "2 ttyrecs skipped" in out
    assert len(select_games(tmp_path / "t.db", "nld-aa").games) == GAMES


# ------------------------------------------------------------------------------- end to end


def test_end_to_end_frames_equal_ttyrec_dataset(converted, db, sample, capsys):
    store, report = converted
    assert (report.selected, report.converted, report.skips, report.interrupted) == (GAMES, GAMES, [], False)
    assert report.unmapped_frames == 0  # the bot only presses NLE actions
    code, out, _ = run_cli(["data", "verify", str(store)], capsys)
    assert code == 0 and out.startswith("OK")

    truth = nle_games(db, "nld-aa")
    mine = store_games(store)
    assert sorted(mine) == sorted(truth)
    roles = dict((g.gameid, g.role_name) for g in select_games(db, "nld-aa").games)
    sidecar = {Path(k).name: v for k, v in read_sidecar(sample).items()}
    rewards_by_ttyrec = {Path(g.files[0][0]).name: g.gameid for g in select_games(db, "nld-aa").games}
    total_frames = 0
    for gid, episodes in mine.items():
        ref = truth[gid]
        T = len(ref["gameids"])
        total_frames += T
        assert [e.episode for e in episodes] == list(range(len(episodes)))
        assert [e.length for e in episodes[:-1]] == [SEGMENT] * (len(episodes) - 1)
        assert 0 < episodes[-1].length <= SEGMENT
        assert [e.terminated for e in episodes] == [False] * (len(episodes) - 1) + [True]
        assert all(e.truncated != e.terminated for e in episodes)
        assert {(e.domain, e.task, e.level, e.source, e.has_actions) for e in episodes} == {
            ("nethack", task_name("nld-aa", roles[gid]), gid, "nld-aa", True)}
        np.testing.assert_array_equal(concat(episodes, "tty_chars"), ref["tty_chars"])
        np.testing.assert_array_equal(concat(episodes, "tty_colors"), ref["tty_colors"].view(np.uint8))
        np.testing.assert_array_equal(concat(episodes, "tty_cursor"), ref["tty_cursor"].astype(np.uint8))
        actions = np.concatenate([e.actions for e in episodes])
        np.testing.assert_array_equal(actions, KEYPRESS_TO_ACTION[ref["keypresses"]])
        rewards = np.concatenate([e.rewards for e in episodes])
        # Score deltas, where the game-over screens' score of 0 keeps the last score.
        scores = ref["scores"].astype(np.int64)
        nonzero = np.flatnonzero(scores)
        if nonzero.size:
            scores[nonzero[-1] + 1:] = scores[nonzero[-1]]
        np.testing.assert_array_equal(rewards, np.append(np.diff(scores), 0))
    assert report.frames == total_frames
    # The sum of a game's rewards is the score NLE's own reward function paid the bot.
    for name, gid in rewards_by_ttyrec.items():
        assert sum(e.ret for e in mine[gid]) == pytest.approx(sidecar[name].reward)
    assert any(g.reward > 0 for g in sidecar.values())  # the check above is not vacuous


def test_cli_chain_sample_index_convert_verify(tmp_path, capsys):
    """The quickstart: every step through the `icrl` command line, on a fresh 2-game sample."""
    sample, db, store = tmp_path / "sample", tmp_path / "ttyrecs.db", tmp_path / "store"
    steps = [
        ["nld", "sample", "--out", str(sample), "--games", "2", "--seed", "11", "--min-steps", "60",
         "--max-steps", "90"],
        ["nld", "index", "--aa", str(sample), "--db", str(db)],
        ["nld", "convert", "--db", str(db), "--dataset", "nld-aa", "--out", str(store), "--quiet"],
        ["data", "verify", str(store)],
    ]
    outs = []
    for argv in steps:
        code, out, err = run_cli(argv, capsys)
        assert code == 0, (argv, out, err)
        outs.append(out)
    assert "wrote 2 games" in outs[0]
    assert "2 converted, 0 skipped" in outs[2]
    assert outs[3].startswith("OK")
    with TrajectoryStore(store) as st:
        assert sorted({r.level for r in st}) == [g.gameid for g in select_games(db, "nld-aa").games]
        assert sum(r.length for r in st) == sum(len(g["gameids"]) for g in nle_games(db, "nld-aa").values())


def test_replaying_converted_actions_in_nethack_gives_the_recorded_screens(converted, db, sample):
    """Every key NetHack read is in the ttyrec (also the ones NLE's env sends itself, e.g. Enter at
    the game-over --More--), so NetHack seeded as the sample recorded it and fed the converted
    actions, mapped back to keycodes, must draw every recorded screen."""
    from nle import nethack

    store, _ = converted
    mine = store_games(store)
    sidecar = {Path(k).name: v for k, v in read_sidecar(sample).items()}
    for game in select_games(db, "nld-aa").games:
        seeds = sidecar[Path(game.files[0][0]).name]
        episodes = mine[game.gameid]
        actions = np.concatenate([e.actions for e in episodes])
        chars, colors = concat(episodes, "tty_chars"), concat(episodes, "tty_colors")
        cursor = concat(episodes, "tty_cursor")
        nh = nethack.Nethack(observation_keys=("tty_chars", "tty_colors", "tty_cursor"),
                             playername="Agent-@", ttyrec=None, fix_moon_phase=True)
        try:
            nh.set_initial_seeds(seeds.core, seeds.disp, False)
            obs = nh.reset()
            for t, action in enumerate(actions.tolist()):
                np.testing.assert_array_equal(obs[0], chars[t], err_msg=f"game {game.gameid} frame {t}")
                np.testing.assert_array_equal(obs[1].view(np.uint8), colors[t])
                np.testing.assert_array_equal(obs[2], cursor[t])
                obs, done = nh.step(action_keycode(action))
                assert done == (t == len(actions) - 1), f"game {game.gameid}: done at {t} of {len(actions)}"
        finally:
            nh.close()


def test_conversion_is_idempotent_and_filters_work(converted, db, tmp_path, capsys):
    store, _ = converted
    again = convert(select_games(db, "nld-aa"), store, segment_length=SEGMENT)
    assert (again.already_done, again.converted, again.segments, again.frames) == (GAMES, 0, 0, 0)
    with pytest.raises(IcrlError, match=f"segments of {SEGMENT} frames, not 100"):
        convert(select_games(db, "nld-aa"), store, segment_length=100)

    games = select_games(db, "nld-aa").games
    first = games[0]
    assert [g.gameid for g in select_games(db, "nld-aa", roles=[first.role_name]).games] == \
        [g.gameid for g in games if g.role == first.role]
    assert [g.gameid for g in select_games(db, "nld-aa", gameids=[games[2].gameid]).games] == [games[2].gameid]
    assert len(select_games(db, "nld-aa", limit=2).games) == 2
    where = f"gameid >= {games[1].gameid} AND turns > 0"  # columns of nle's games table
    assert [g.gameid for g in select_games(db, "nld-aa", where=where).games] == [g.gameid for g in games[1:]]
    with pytest.raises(IcrlError, match="--where"):
        select_games(db, "nld-aa", where="no_such_column > 1")
    with pytest.raises(IcrlError, match="unknown role"):
        select_games(db, "nld-aa", roles=["Jedi"])
    with pytest.raises(IcrlError, match="not games of"):
        select_games(db, "nld-aa", gameids=[10**6])
    with pytest.raises(IcrlError, match="is not in"):
        select_games(db, "nope")
    code, out, _ = run_cli(["nld", "convert", "--db", str(db), "--dataset", "nld-aa", "--out", str(tmp_path / "s"),
                            "--roles", first.role, "--games", "1", "--quiet"], capsys)
    assert code == 0 and "1 converted" in out
    with TrajectoryStore(tmp_path / "s") as small:
        assert small.tasks() == [task_name("nld-aa", first.role_name)]
        assert small.levels(small.tasks()[0]) == [first.gameid]


def test_convert_missing_database_or_store_dir(tmp_path, capsys):
    code, _, err = run_cli(["nld", "convert", "--db", str(tmp_path / "none.db"), "--dataset", "nld-aa",
                            "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "no such database" in err
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    code, _, err = run_cli(["nld", "convert", "--db", str(tmp_path / "junk.db"), "--dataset", "nld-aa",
                            "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "not an nle.dataset database" in err


# ------------------------------------------------------------------------------ damaged files


@pytest.fixture
def damaged(sample, tmp_path) -> tuple[Path, dict[str, int]]:
    """A copy of the sample with one truncated and one corrupted ttyrec (damaged before indexing,
    as a bad download would be). Returns (db, {"truncated": game id, "garbled": game id})."""
    data = copy_sample(sample, tmp_path / "data")
    trunc, garbled = sorted(data.glob("*/*.ttyrec3.bz2"))[:2]
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    raw = bytearray(garbled.read_bytes())
    raw[100:160] = bytes(b ^ 0x5A for b in raw[100:160])  # inside the first (only) bz2 block
    garbled.write_bytes(bytes(raw))
    db = tmp_path / "t.db"
    build_index(db, aa=data)
    ids = {Path(g.files[0][0]).name: g.gameid for g in select_games(db, "nld-aa").games}
    return db, {"truncated": ids[trunc.name], "garbled": ids[garbled.name]}


def test_damaged_bz2_are_counted_and_reported(damaged, tmp_path, capsys):
    db, ids = damaged
    code, out, _ = run_cli(["nld", "convert", "--db", str(db), "--dataset", "nld-aa", "--out", str(tmp_path / "s"),
                            "--quiet"], capsys)
    assert code == 0
    assert f"game {ids['truncated']}:" in out and "truncated bz2 file" in out
    # nle's converter decodes the corrupted file to nothing, silently; icrl notices the missing game.
    assert f"game {ids['garbled']}:" in out and "no frames decoded" in out
    assert f"{GAMES - 2} converted, 2 skipped" in out
    code, out, _ = run_cli(["nld", "convert", "--db", str(db), "--dataset", "nld-aa", "--out", str(tmp_path / "s2"),
                            "--quiet", "--verify-bz2", "--strict"], capsys)
    assert code == 1  # --strict: skips fail the run
    assert "corrupt bz2 data" in out and f"game {ids['garbled']}:" in out
    with TrajectoryStore(tmp_path / "s2") as store:
        assert {r.level for r in store} == set(g.gameid for g in select_games(db, "nld-aa").games) - set(ids.values())


def test_file_changed_or_missing_after_indexing(db, sample, tmp_path):
    data = copy_sample(sample, tmp_path / "data")
    db2 = tmp_path / "t.db"
    build_index(db2, aa=data)
    games = select_games(db2, "nld-aa").games
    Path(games[0].files[0][0]).unlink()
    with open(games[1].files[0][0], "ab") as f:
        f.write(b"x")
    report = convert(select_games(db2, "nld-aa"), tmp_path / "s")
    reasons = {s.gameid: s.reason for s in report.skips}
    assert reasons[games[0].gameid] == "file is missing"
    assert "differs from the indexed size" in reasons[games[1].gameid]
    assert report.converted == GAMES - 2


def test_bz2_checks_catch_every_truncation(sample):
    path = next(sample.glob("*/*.ttyrec3.bz2"))
    data = path.read_bytes()
    assert quick_problem(path) is None and full_problem(path) is None
    tmp = path.parent.parent / "cut.bz2"
    try:
        for cut in sorted({1, 2, 5, 10, 11, 12, 50, len(data) // 2, len(data) - 4}):
            tmp.write_bytes(data[:-cut])
            assert quick_problem(tmp) is not None, cut
        tmp.write_bytes(b"PK\x03\x04" + data[4:])
        assert "bad header" in quick_problem(tmp)
    finally:
        tmp.unlink()


# ------------------------------------------------------------------------------- resumption


def test_interrupted_conversion_resumes_without_loss_or_duplicates(converted, db, tmp_path, monkeypatch):
    from icrl.store import writer as store_mod

    clean = store_games(converted[0])
    calls = {"n": 0}
    real_append = store_mod.ShardWriter.append

    def crashing_append(self, episode):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-game: some of its segments are stored, some are not
            raise OSError("disk on fire")
        return real_append(self, episode)

    out = tmp_path / "s"
    monkeypatch.setattr(store_mod.ShardWriter, "append", crashing_append)
    with pytest.raises(OSError, match="disk on fire"):
        convert(select_games(db, "nld-aa"), out, segment_length=SEGMENT, batch_size=2, seq_length=SEQ)
    monkeypatch.setattr(store_mod.ShardWriter, "append", real_append)
    with TrajectoryStore(out) as partial:
        assert len(partial) == 4
    report = convert(select_games(db, "nld-aa"), out, segment_length=SEGMENT, batch_size=2, seq_length=SEQ)
    assert report.segments == sum(len(v) for v in clean.values()) - 4
    assert report.segments_resumed + report.already_done > 0
    _assert_same_games(store_games(out), clean)


def test_ctrl_c_keeps_finished_segments_and_resumes(converted, db, tmp_path):
    clean = store_games(converted[0])
    out = tmp_path / "s"

    def interrupt(report, total):
        if report.frames > 150:
            raise KeyboardInterrupt

    first = convert(select_games(db, "nld-aa"), out, segment_length=SEGMENT, batch_size=2, seq_length=SEQ,
                    progress=interrupt)
    assert first.interrupted and 0 < first.segments < sum(len(v) for v in clean.values())
    second = convert(select_games(db, "nld-aa"), out, segment_length=SEGMENT, batch_size=2, seq_length=SEQ)
    assert not second.interrupted and second.skips == []
    _assert_same_games(store_games(out), clean)


@pytest.mark.parametrize("streams,batch_size", [(1, 2), (3, 3), (2, 5)])
def test_any_number_of_streams_stores_the_same_episodes(converted, db, tmp_path, streams, batch_size):
    """Streams share the rows and are cut straight from nle's buffers: however the games are dealt,
    the store holds the same episodes (the fixture used 2 streams of 1 row each)."""
    report = convert(select_games(db, "nld-aa"), tmp_path / "s", segment_length=SEGMENT, batch_size=batch_size,
                     seq_length=SEQ, streams=streams)
    assert (report.converted, report.skips, report.frames) == (GAMES, [], converted[1].frames)
    _assert_same_games(store_games(tmp_path / "s"), store_games(converted[0]))


def test_split_rows_deals_games_and_never_gives_a_stream_more_rows_than_games():
    games = list(range(7))
    assert split_rows(games, 4, 2) == [([0, 2, 4, 6], 2), ([1, 3, 5], 2)]
    assert split_rows(games, 7, 3) == [([0, 3, 6], 3), ([1, 4], 2), ([2, 5], 2)]
    assert split_rows(games[:1], 1, 2) == [([0], 1)]  # more streams than rows: one stream per row
    for n in range(1, 12):
        for rows in range(1, n + 1):
            for streams in range(1, 5):
                parts = split_rows(list(range(n)), rows, streams)
                assert sum(r for _, r in parts) == rows and sorted(sum((g for g, _ in parts), [])) == list(range(n))
                assert all(1 <= r <= len(g) for g, r in parts)


@pytest.mark.slow
def test_killed_conversion_resumes(converted, db, tmp_path):
    """A hard kill (no cleanup at all) in the middle of a game, in a real process."""
    clean = store_games(converted[0])
    out = tmp_path / "s"
    script = textwrap.dedent(f"""
        import os
        from icrl.store import writer as store_mod
        from icrl.nld.convert import convert
        from icrl.nld.selection import select_games
        real, n = store_mod.ShardWriter.append, [0]
        def append(self, episode):
            n[0] += 1
            if n[0] == 6:
                os._exit(137)
            return real(self, episode)
        store_mod.ShardWriter.append = append
        convert(select_games({str(db)!r}, "nld-aa"), {str(out)!r}, segment_length={SEGMENT}, batch_size=2,
                seq_length={SEQ})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr
    assert list((out / "wal").glob("*.wal"))  # the killed writer's journal was never sealed
    report = convert(select_games(db, "nld-aa"), out, segment_length=SEGMENT, batch_size=2, seq_length=SEQ)
    assert report.segments_resumed + report.already_done > 0
    _assert_same_games(store_games(out), clean)


def _assert_same_games(got: dict[int, list], want: dict[int, list]) -> None:
    from icrl.store.episode import episode_equal

    assert sorted(got) == sorted(want)
    for gid in want:
        assert [e.episode for e in got[gid]] == [e.episode for e in want[gid]], gid
        assert all(episode_equal(a, b) for a, b in zip(got[gid], want[gid])), gid


# ------------------------------------------------------------------------------------ NLD-NAO


def test_nao_is_observation_only(sample, tmp_path, capsys):
    from icrl.nld.altorg import write_altorg_copy

    nao = tmp_path / "nao"
    assert write_altorg_copy(sample, nao) == GAMES
    db = tmp_path / "t.db"
    code, out, _ = run_cli(["nld", "index", "--nao", str(nao), "--db", str(db)], capsys)
    assert code == 0 and "nld-nao" in out
    code, out, _ = run_cli(["nld", "convert", "--db", str(db), "--dataset", "nld-nao", "--out", str(tmp_path / "s"),
                            "--segment-length", "100", "--quiet"], capsys)
    assert code == 0 and "observation-only" in out and f"{GAMES} converted" in out
    truth = nle_games(db, "nld-nao")
    assert all("keypresses" not in g for g in truth.values())
    mine = store_games(tmp_path / "s")
    assert sorted(mine) == sorted(truth)
    for gid, episodes in mine.items():
        assert all(e.source == "nld-nao" and not e.has_actions and e.task.startswith("nld-nao:") for e in episodes)
        assert all((e.actions == PAD_ACTION).all() and (e.rewards == 0).all() for e in episodes)
        np.testing.assert_array_equal(concat(episodes, "tty_chars"), truth[gid]["tty_chars"])
        np.testing.assert_array_equal(concat(episodes, "tty_cursor"), truth[gid]["tty_cursor"].astype(np.uint8))
    code, out, _ = run_cli(["data", "verify", str(tmp_path / "s")], capsys)
    assert code == 0


# ------------------------------------------------------------------------ keypress mapping


def test_keypress_mapping_is_nles_enumeration():
    from nle import nethack

    keycodes = {int(a) for a in nethack.ACTIONS}
    assert set(MAPPED_KEYS.tolist()) == keycodes
    for key in range(256):
        index = int(KEYPRESS_TO_ACTION[key])
        if key in keycodes:
            assert int(nethack.ACTIONS[index]) == key  # replaying the action sends the same byte
            assert action_keycode(index) == key
        else:
            assert index == PAD_ACTION
    assert KEYPRESS_TO_ACTION[ord("k")] == list(nethack.ACTIONS).index(nethack.CompassDirection.N)
    assert KEYPRESS_TO_ACTION[ord("$")] == list(nethack.ACTIONS).index(nethack.Command.SEEGOLD)
    unmapped = np.zeros(256, np.int64)
    actions = map_keypresses(np.array([ord("k"), ord("?"), ord("?"), 10, ord("j")], np.uint8), unmapped)
    assert actions.dtype == np.int32 and actions[1] == actions[2] == actions[3] == PAD_ACTION
    assert unmapped[ord("?")] == 2 and unmapped[10] == 1 and unmapped.sum() == 3


# ------------------------------------------------------------------------- segment cutting


def _frames(T: int, scores: list[int], rng) -> dict[str, np.ndarray]:
    return {
        "chars": rng.integers(32, 127, (T, 24, 80), dtype=np.uint8),
        "colors": rng.integers(0, 16, (T, 24, 80), dtype=np.int8),
        "cursor": rng.integers(0, 24, (T, 2), dtype=np.int16),
        "keys": rng.choice([ord("k"), ord("?"), ord("s")], T).astype(np.uint8),
        "scores": np.asarray(scores, np.int32),
    }


def _cut(frames, length, chunks, stored=frozenset()):
    unmapped = np.zeros(256, np.int64)
    cutter = GameCutter(7, "nld-aa:Monk", "nld-aa", length, has_actions=True, has_scores=True, stored=stored,
                        unmapped=unmapped)
    out, start = [], 0
    for end in chunks:
        out += cutter.add(frames["chars"][start:end], frames["colors"][start:end], frames["cursor"][start:end],
                          frames["keys"][start:end], frames["scores"][start:end])
        start = end
    return out + cutter.finish(), unmapped, cutter


@pytest.mark.parametrize("length", [1, 3, 4, 10])
def test_cutter_rewards_and_game_over_zeros(length):
    rng = np.random.default_rng(length)
    # Scores: rise, a real drop to 0 (gold spent), rise again, then game-over frames with score 0.
    scores = [0, 0, 5, 5, 9, 0, 0, 2, 2, 7, 7, 0, 0]
    f = _frames(len(scores), scores, rng)
    for chunks in ([13], [1, 2, 6, 7, 13], list(range(1, 14))):
        episodes, unmapped, _ = _cut(f, length, chunks)
        assert [e.episode for e in episodes] == sorted(e.episode for e in episodes)
        rewards = np.concatenate([e.rewards for e in episodes])
        np.testing.assert_array_equal(rewards, [0, 5, 0, 4, -9, 0, 2, 0, 5, 0, 0, 0, 0])
        assert rewards.sum() == 7  # the score shown before the game ended
        np.testing.assert_array_equal(concat(episodes, "tty_chars"), f["chars"])
        np.testing.assert_array_equal(concat(episodes, "tty_colors"), f["colors"].view(np.uint8))
        assert [e.length for e in episodes] == [length] * (len(scores) // length) + (
            [len(scores) % length] if len(scores) % length else [])
        assert unmapped[ord("?")] == int((f["keys"] == ord("?")).sum())


def test_cutter_skips_stored_segments_and_rows_follow_game_ids():
    rng = np.random.default_rng(0)
    f = _frames(10, list(range(10)), rng)
    episodes, _, cutter = _cut(f, 3, [10], stored=frozenset({0, 2}))
    assert [e.episode for e in episodes] == [1, 3] and cutter.resumed == 2
    done = []
    row = RowCutter(lambda gid: GameCutter(gid, "t", "nld-aa", 4, has_actions=True, has_scores=True), done.append)
    gids = np.array([5, 5, 5, 8, 8, 0, 0, 0, 0, 0], np.int32)
    out = row.feed(gids, f["chars"], f["colors"], f["cursor"], f["keys"], f["scores"])
    assert [(e.level, e.length, e.terminated) for e in out] == [(5, 3, True), (8, 2, True)]
    assert [g.gameid for g in done] == [5, 8]
