"""icrl report SWEEP_DIR: one table and one PNG across the grid, means and CIs over seeds, the
contrast of the last x against the first over replicates and paired by level."""

from __future__ import annotations

import json

import pytest

from icrl.cli import main
from icrl.sweep.report import welch

TASK = "MiniHack-Labyrinth-Small-v0"
# successes per seed out of 10 levels at k=1 (k=0: none): p_burst 1 far above p_burst 0
WINS = {"0.0": [2, 1, 3], "1.0": [8, 7, 9]}


def make_sweep(root, evaluated=None, wins=WINS):
    jobs = [{"name": f"p_burst={p},seed={s}", "labels": {"data.p_burst": p, "seed": str(s)}}
            for p in wins for s in range(3)]
    (root / "sweep.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps({
        "name": "burst", "axes": {"data.p_burst": list(wins), "seed": ["0", "1", "2"]}, "primary_k": 1,
        "report": {"x": "data.p_burst", "seeds": "seed", "metrics": ["success", "return"], "k": None, "method": "icl"},
        "jobs": jobs}))
    for job in jobs:
        p, s = job["labels"]["data.p_burst"], int(job["labels"]["seed"])
        if evaluated is not None and job["name"] not in evaluated:
            continue
        rows = [{"task": TASK, "level": lv, "k": k, "method": m, "episode": e,
                 "success": bool(k == 1 and lv < wins[p][s]), "return": float(k == 1 and lv < wins[p][s])}
                for lv in range(10) for k in (0, 1) for e in range(2) for m in ("icl", "hashmap")]
        run = root / "runs" / job["name"]
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "results.json").write_text(json.dumps(rows))
        (run / "metrics.jsonl").write_text(json.dumps({"step": 80, "diag_gap": 0.01 * s}) + "\n")


def test_the_report_spans_the_grid_with_cis_over_seeds(tmp_path, capsys):
    make_sweep(tmp_path / "sweep")
    assert main(["report", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "sweep" / "report.md").read_text()
    assert (tmp_path / "sweep" / "report.png").stat().st_size > 10_000
    lines = out.splitlines()
    # mean over 3 seeds ± t(2) * sd / sqrt(3) = 4.303 * 0.1 / 1.732 = 0.25; each seed's value
    assert "| 0.0 | 3 | 20% ± 25 (20, 10, 30) | +20 pp ± 25 (+20, +10, +30) | +0.01 ± 0.02 |" in lines
    assert "| 1.0 | 3 | 80% ± 25 (80, 70, 90) | +80 pp ± 25 (+80, +70, +90) | +0.01 ± 0.02 |" in lines
    # Welch: 0.6 ± t(4) * sqrt(2 * 0.01 / 3) = 0.6 ± 0.23; paired by level: the levels' seed means
    contrast = next(line for line in lines if line.startswith("| - | Labyrinth-Small | +60 |"))
    assert "[+37, +83] | yes |" in contrast and "over 10 levels | yes |" in contrast
    assert "| [+60, +60] over 3 pairs | yes |" in contrast  # each seed: +6 levels of 10
    assert "## 1-shot return" in out and "| 1.0 | 3 | +0.80 ± 0.25 (+0.80, +0.70, +0.90) |" in out


def test_pairing_by_replicate_cancels_what_a_seed_shares_across_x(tmp_path, capsys):
    # seed 1 is good at both p_burst values: unpaired, its spread hides the difference
    make_sweep(tmp_path / "sweep", wins={"0.0": [1, 5, 3], "1.0": [4, 9, 6]})
    assert main(["report", str(tmp_path / "sweep")]) == 0
    contrast = next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("| - | Labyrinth-Small | +33 |"))
    cells = [cell.strip() for cell in contrast.split("|")[1:-1]]
    # Welch: 0.333 ± t(3.8) * sqrt(0.04 / 3 + 0.0633 / 3) = ± 0.52; paired: (3, 4, 3) levels of 10,
    # 0.333 ± t(2) * 0.0577 / sqrt(3) = ± 0.14
    assert cells[3:5] == ["[-19, +86]", "no"]
    assert cells[5:7] == ["[+19, +48] over 3 pairs", "yes"]


def test_welch_interval():
    s = welch([0.8, 0.7, 0.9], [0.2, 0.1, 0.3])
    assert s.mean == pytest.approx(0.6) and s.half_width == pytest.approx(0.2266, abs=1e-3) and s.excludes_zero
    assert welch([0.5, 0.5], [0.5, 0.5]).half_width == 0.0


def test_a_partial_sweep_says_what_is_missing_and_an_empty_one_is_an_error(tmp_path, capsys):
    make_sweep(tmp_path / "part", evaluated={"p_burst=0.0,seed=0", "p_burst=1.0,seed=0", "p_burst=1.0,seed=1"})
    assert main(["report", str(tmp_path / "part")]) == 0
    out = capsys.readouterr().out
    assert "3 of 6 jobs evaluated" in out and "Not evaluated yet: p_burst=0.0,seed=1, p_burst=0.0,seed=2, " \
                                              "p_burst=1.0,seed=2." in out
    assert "| 0.0 | 1 | 20% (n=1) (20) |" in out
    make_sweep(tmp_path / "none", evaluated=set())
    assert main(["report", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icrl report: error: ") and "no job has been evaluated yet" in err and "\n" not in err


def test_method_flag_picks_the_method_of_a_sweep_report(tmp_path, capsys):
    make_sweep(tmp_path / "sweep")
    for path in (tmp_path / "sweep" / "runs").glob("*/eval/results.json"):
        rows = json.loads(path.read_text())
        for r in rows:
            if r["method"] == "hashmap":
                r["success"] = False
        path.write_text(json.dumps(rows))
    assert main(["report", str(tmp_path / "sweep"), "--method", "hashmap"]) == 0
    out = capsys.readouterr().out
    assert "`hashmap` 1-shot success" in out and "| 1.0 | 3 | 0% ± 0 (0, 0, 0) |" in out
    assert main(["report", str(tmp_path / "sweep")]) == 0  # the sweep file's method: icl
    assert "| 1.0 | 3 | 80% ± 25 (80, 70, 90) |" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "sweep"), "--method", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no results of method 'bogus'" in err and "['hashmap', 'icl']" in err and "\n" not in err
