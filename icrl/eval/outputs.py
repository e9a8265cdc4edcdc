"""What an evaluation leaves in the run directory: eval/results.json, report.md and plots/."""

from __future__ import annotations

import json
from pathlib import Path

from icrl.errors import IcrlError
from icrl.eval.plots import plot_return_vs_k
from icrl.eval.report import group, markdown_report, summarize


def write_outputs(rows: list[dict], run: str | Path, cfg) -> str:
    """Write results.json (every episode), report.md and plots; return the report's text.

    results.json is written atomically (temp file + rename): an earlier evaluation is replaced only
    by a complete new one.
    """
    run = Path(run)
    eval_dir = run / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    tmp = eval_dir / "results.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(eval_dir / "results.json")
    (eval_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    report = markdown_report(rows, title=f"Few-shot evaluation of {run.name}")
    (run / "report.md").write_text(report + "\n")
    plot_return_vs_k(rows, run / "plots")
    return report


def compare_runs(results: dict[str, list[dict]], method: str = "icl") -> str:
    """A markdown table: one row per task × k, one column per run (mean ± 95% CI of ``method``)."""
    keys = sorted({(r["task"], r["k"]) for rows in results.values() for r in rows if r["method"] == method})
    runs = list(results)
    lines = ["| task | k | " + " | ".join(Path(r).name for r in runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    grouped = {run: group((r for r in rows if r["method"] == method), "task", "k") for run, rows in results.items()}
    for task, k in keys:
        cells = []
        for run in runs:
            rows = grouped[run].get((task, k))
            cells.append(str(summarize([r["return"] for r in rows])) if rows else "")
        lines.append(f"| {task} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_results(runs: list[str]) -> dict[str, list[dict]]:
    """Each run's ``eval/results.json`` rows, by run; IcrlError naming a run without one or a bad file."""
    results = {}
    for run in runs:
        path = Path(run) / "eval" / "results.json"
        if not path.is_file():
            raise IcrlError(f"{run}: no eval/results.json (run `icrl eval {run} ...` first)")
        try:
            results[run] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise IcrlError(f"{path}: not valid JSON ({err})") from None
    return results
