"""Evaluation statistics: clustered by level, paired by level, success first, every k, no best k."""

from __future__ import annotations

import json

import pytest

from icrl.data.layout import ContextLayout
from icrl.eval.outputs import compare_runs, eval_meta, write_outputs
from icrl.eval.report import clustered, gain, markdown_report, summarize, versus


def rows_of(success, method="icl", task="t", k=0, returns=None):
    """Rows from ``success[level][rollout]`` (bools); return = success unless ``returns`` given."""
    out = []
    for lv, outcomes in enumerate(success):
        for i, s in enumerate(outcomes):
            ret = float(s) if returns is None else float(returns[lv][i])
            out.append({"task": task, "level": lv, "k": k, "method": method, "episode": i, "return": ret,
                        "success": bool(s), "length": 10})
    return out


def test_confidence_intervals_are_over_levels_not_episodes():
    # 2 levels x 20 rollouts: level 0 always succeeds, level 1 never. Over 40 episodes a t-interval
    # would be narrow (~ ±0.16); over 2 level means it spans far wider: n is the number of levels.
    rows = rows_of([[True] * 20, [False] * 20])
    s = clustered(rows, "success")
    assert s.n == 2 and s.mean == pytest.approx(0.5)
    assert s.half_width > 3 * summarize([r["success"] for r in rows]).half_width


def test_gain_is_paired_by_level_and_success_is_the_headline():
    at0 = rows_of([[False, False], [True, False], [False, False], [True, True]], k=0)
    at1 = rows_of([[True, False], [True, True], [True, False], [True, True]], k=1)
    hashmap = rows_of([[True, True], [True, True], [False, False], [True, True]], method="hashmap", k=1)
    rows = at0 + at1 + hashmap
    g = gain(rows, "t", "icl", 1, "success")
    assert g.n == 4 and g.mean == pytest.approx((0.5 + 0.5 + 0.5 + 0.0) / 4)
    v = versus(rows, "t", "icl", "hashmap", 1, "success")
    assert v.mean == pytest.approx((-0.5 + 0.0 + 0.5 + 0.0) / 4)
    text = markdown_report(rows, meta={"primary_k": 1})
    assert "Success rate:" in text.split("Return:")[0]  # success comes first
    assert "| t | 1 (primary) | +38 pp ±" in text
    assert "best" not in text.split("no best-k is chosen")[1].lower()
    assert "`icl` minus `hashmap`" in text and "hashmap-cell" not in text  # only baselines evaluated
    cell = rows_of([[True, True], [False, False], [False, False], [True, True]], method="hashmap-cell", k=1)
    text = markdown_report(rows + cell, meta={"primary_k": 1})
    assert "## `icl` minus `hashmap-cell`" in text
    assert text.split("minus `hashmap-cell`")[1].count("| t | 1 (primary) | +25 pp ±") == 1


def test_every_k_is_reported_and_warnings_are_named(tmp_path):
    rows = []
    for k in (0, 1, 2, 3):
        rows += rows_of([[k > 0, False], [k > 1, True]], k=k)
    layout = ContextLayout(episodes=3, window=8, context_steps=24, tokens_per_step=2, positions="rope")
    meta = eval_meta(layout, [0, 1, 2, 3], primary_k=1)
    assert list(meta["warnings"]) == ["3"]

    class Cfg:
        def model_dump_json(self, indent=None):
            return "{}"

    report = write_outputs(rows, tmp_path, Cfg(), meta)
    for k in (1, 2, 3):
        assert f"| t | {k}" in report
    assert "more-demos-than-training" in report
    saved = json.loads((tmp_path / "eval" / "meta.json").read_text())
    assert saved["primary_k"] == 1 and saved["levels"] == {"t": [0, 1]} and saved["layout"]["window"] == 8
    assert len(json.loads((tmp_path / "eval" / "results.json").read_text())) == len(rows)
    assert (tmp_path / "plots" / "t.png").is_file()


def test_runs_compare_with_a_ci_over_seeds():
    a = rows_of([[False], [False]], k=0) + rows_of([[True], [False]], k=1)
    b = rows_of([[False], [False]], k=0) + rows_of([[True], [True]], k=1)
    table = compare_runs({"runs/s0": a, "runs/s1": b})
    assert "| s0 | s1 | over runs |" in table
    gain_rows = table.split("In-context success gain")[1]
    assert "| t | 1 | +50 pp ± 635 | +100 pp ± 0 | +75 pp ± 318 |" in gain_rows
