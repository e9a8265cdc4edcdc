"""``icrl data inspect``, ``verify`` and ``repair``: figures, exit codes, and damage named (repairs of
each kind of damage: tests/test_faults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from icrl.cli import main
from icrl.store.reader import TrajectoryStore
from icrl.data.synthetic import write_synthetic


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    TrajectoryStore.create(path)
    specs = [("nethack", "MiniHack-Room-5x5-v0", lv, e, 10 + lv) for lv in range(3) for e in range(2)]
    specs += [("procgen", "procgen:coinrun", lv, 0, 8) for lv in range(2)]
    write_synthetic(path, "cli", specs, max_shard_episodes=3)
    return path


def test_inspect_prints_per_task_figures(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "inspect", str(store_path)]) == 0
    out = capsys.readouterr().out
    room = next(line for line in out.splitlines() if "MiniHack-Room-5x5-v0" in line)
    cells = [c.strip() for c in room.split("│") if c.strip()]
    # task, domain, source, episodes, levels, steps, return, success, B/step, ratio
    assert cells[:6] == ["MiniHack-Room-5x5-v0", "nethack", "oracle", "6", "3", str(2 * (10 + 11 + 12))]
    assert cells[6] == "0.500" and cells[7] == "50.0%"  # synthetic: even episodes succeed
    assert float(cells[8]) > 0 and cells[9].endswith("x")
    coinrun = next(line for line in out.splitlines() if "procgen:coinrun" in line)
    assert "procgen" in coinrun and "│        2 │" in coinrun
    assert "total: 8 episodes, 82 steps, 2 tasks; 3 sealed shards, 0 unsealed journals" in out
    assert "B/step" in out and "compression ratio" in out


def test_verify_passes_on_a_sound_store(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "verify", str(store_path)]) == 0
    assert "OK: 8 records checked in 3 shards and 0 journals" in capsys.readouterr().out


def test_verify_names_the_damaged_file_and_record(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = TrajectoryStore(store_path)
    ref = store.refs[4]
    shard = store_path / ref.shard
    data = bytearray(shard.read_bytes())
    pos = data.find(store.read_record(ref))
    data[pos + 40] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["data", "verify", str(store_path)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED: {shard}: record {ref.offset}:" in out
    assert "FAILED: 1 problems" in out


def test_verify_fails_on_a_truncated_shard(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    shard = store_path / TrajectoryStore(store_path).shards[0]
    shard.write_bytes(shard.read_bytes()[:5000])
    assert main(["data", "verify", str(store_path)]) == 1
    assert f"DAMAGED: {shard}:" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["inspect", "verify", "repair"])
def test_bad_store_paths_exit_2_naming_the_path(tmp_path: Path, action: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", action, str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such trajectory store" in capsys.readouterr().err
    assert main(["data", action, str(tmp_path)]) == 2
    assert f"{tmp_path}: not a trajectory store" in capsys.readouterr().err


def test_repair_of_a_sound_store_changes_nothing(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = sorted((p.relative_to(store_path), p.read_bytes()) for p in store_path.rglob("*") if p.is_file()
                   and p.name != "write.lock")
    assert main(["data", "repair", str(store_path)]) == 0
    assert f"nothing to repair: 8 episodes; the index and the files of {store_path} agree" in capsys.readouterr().out
    assert sorted((p.relative_to(store_path), p.read_bytes()) for p in store_path.rglob("*") if p.is_file()
                  and p.name != "write.lock") == files
    assert not (store_path / "damaged").exists()


def test_inspect_names_a_corrupt_index(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    frag = sorted((store_path / "index").iterdir())[0]
    frag.write_text(frag.read_text()[:-30])
    assert main(["data", "inspect", str(store_path)]) == 2
    assert f"{frag}:" in capsys.readouterr().err
    assert main(["data", "verify", str(store_path)]) == 1
    assert f"DAMAGED: {frag}: line" in capsys.readouterr().out


def test_data_requires_an_action() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data"])
    assert exc.value.code == 2
