"""``icrl envs`` from the command line: output users read, exit codes scripts rely on."""

import subprocess
import sys
from pathlib import Path

import yaml

from icrl.cli import main


def test_check_passes_and_prints_summary_last(capsys):
    assert main(["envs", "check", "minihack", "--split", "heldout", "--steps", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "checked 5 tasks: 5 ok, 0 failed"
    assert all(line.startswith("ok ") for line in lines[:-1]) and len(lines) == 6


def test_check_fails_per_task_and_exits_nonzero(capsys):
    # Procgen levels are non-negative: every task of the split fails, each on its own line.
    assert main(["envs", "check", "procgen", "--split", "heldout", "--level", "-1", "--steps", "2"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "checked 4 tasks: 0 ok, 4 failed"
    assert sum(line.startswith("FAIL") for line in lines) == 4


def test_suite_with_unknown_task_names_file_and_matches(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "domain": "nethack",
                                   "splits": {"train": ["MiniHack-MazeWalk-9x9-v1"]}}))
    assert main(["envs", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "MiniHack-MazeWalk-9x9-v0" in err


def test_suite_task_in_two_splits_is_rejected(tmp_path, capsys):
    bad = tmp_path / "dup.yaml"
    bad.write_text(yaml.safe_dump({"name": "dup", "domain": "procgen",
                                   "splits": {"train": ["procgen:ninja"], "heldout": ["procgen:ninja"]}}))
    assert main(["envs", "list", str(bad)]) == 2
    assert "both splits" in capsys.readouterr().err


def test_show_applies_overrides_and_saves(tmp_path, capsys):
    out = tmp_path / "resolved.yaml"
    assert main(["envs", "show", "procgen", "--set", "sticky_p=0.2", "--save", str(out)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["sticky_p"] == 0.2 and yaml.safe_load(out.read_text()) == shown


def test_bad_override_names_key_and_value(capsys):
    assert main(["envs", "show", "minihack", "--set", "sticky_p=1.5"]) == 2
    err = capsys.readouterr().err
    assert "sticky_p" in err and "1.5" in err and "minihack.yaml" in err


def test_unknown_suite_lists_the_suites(capsys):
    assert main(["envs", "list", "minihak"]) == 2
    assert "minihack" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "icrl"  # the `icrl` console script of this environment
    out = subprocess.run([str(script), "envs", "list", "nethack"],
                         capture_output=True, text=True, check=True).stdout
    assert "NetHackChallenge-v0" in out and "121" in out
