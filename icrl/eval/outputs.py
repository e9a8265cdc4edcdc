"""What an evaluation leaves in the run directory: eval/results.json, eval/meta.json, report.md, plots/.

``results.json`` holds one row per episode (``task``, ``level``, ``k``, ``method``, ``episode``,
``return``, ``success``, ...). ``meta.json`` says how the rows were made: the context layout the
run trained with, the primary k declared before evaluating, the named warnings per k for contexts
that training never showed, and the levels each task was actually evaluated on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from icrl.errors import IcrlError
from icrl.eval.plots import plot_vs_k
from icrl.eval.report import clustered, gain, markdown_report, summarize


def eval_meta(layout, shots: Sequence[int], primary_k: int = 1) -> dict:
    """What meta.json records before any rollout: layout (a ``ContextLayout`` or None when no
    method reads a context), the declared primary k, and the named warnings of each k."""
    warnings = {str(k): layout.warnings(k) for k in shots} if layout is not None else {}
    return {"layout": dataclasses.asdict(layout) if layout is not None else None, "primary_k": int(primary_k),
            "warnings": {k: w for k, w in warnings.items() if w}}


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_outputs(rows: list[dict], run: str | Path, cfg, meta: dict | None = None) -> str:
    """Write results.json (every episode), meta.json, report.md and plots; return the report's text.

    ``meta`` comes from ``eval_meta``; the levels used are added from the rows. results.json is
    written atomically (temp file + rename): an earlier evaluation is replaced only by a complete
    new one.
    """
    run = Path(run)
    eval_dir = run / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or eval_meta(None, []))
    meta["levels"] = {task: sorted({int(r["level"]) for r in rows if r["task"] == task})
                      for task in sorted({r["task"] for r in rows})}
    _write_atomically(eval_dir / "results.json", json.dumps(rows, indent=1))
    _write_atomically(eval_dir / "meta.json", json.dumps(meta, indent=1))
    (eval_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    report = markdown_report(rows, title=f"Few-shot evaluation of {run.name}", meta=meta)
    (run / "report.md").write_text(report + "\n")
    plot_vs_k(rows, run / "plots")
    return report


def compare_runs(results: dict[str, list[dict]], method: str = "icl") -> str:
    """Markdown tables across runs (e.g. seeds of one experiment): per task × k, each run's success
    rate of ``method`` (95% CI over its level means), then its in-context success gain (paired by
    level); with two runs or more, the mean ± 95% CI over runs, the seed-to-seed spread."""
    keys = sorted({(r["task"], r["k"]) for rows in results.values() for r in rows if r["method"] == method})
    runs = list(results)
    over = len(runs) >= 2
    head = "| task | k | " + " | ".join(Path(r).name for r in runs) + (" | over runs |" if over else " |")
    rule = "|---|---|" + "---|" * (len(runs) + over)
    lines = [f"Success rate of `{method}`:", "", head, rule]
    gains = [f"In-context success gain of `{method}` (k-shot minus 0-shot, paired by level):", "", head, rule]
    for task, k in keys:
        rates, deltas = [], []
        for run in runs:
            rows = [r for r in results[run] if r["method"] == method and r["task"] == task and r["k"] == k]
            rates.append(clustered(rows, "success") if rows else None)
            deltas.append(gain(results[run], task, method, k, "success") if rows and k > 0 else None)
        for out, values in ((lines, rates), (gains, deltas)):
            if out is gains and k == 0:
                continue
            cells = [s.percent(signed=out is gains) if s is not None else "" for s in values]
            if over:
                means = [s.mean for s in values if s is not None and s.n > 0]
                cells.append(summarize(means).percent(signed=out is gains) if len(means) >= 2 else "")
            out.append(f"| {task} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + gains)


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


def seeds_dir(run: str | Path) -> Path:
    """Where ``icrl eval RUN --seeds N`` writes its combined report: ``<RUN>-seeds/`` beside the
    seed runs (not RUN itself, which ``icrl train`` without ``--seeds`` would refuse once non-empty)."""
    run = Path(run)
    return run.parent / f"{run.name}-seeds"


def write_seeds_report(run: str | Path, seed_runs: Sequence[str | Path], methods: Sequence[str]) -> str:
    """``<RUN>-seeds/report.md``: ``compare_runs`` of the seed runs' eval/results.json for each of
    ``methods`` (each seed's success rate and gain, then the mean ± 95% CI over seeds); its text."""
    results = read_results([str(r) for r in seed_runs])
    names = ", ".join(Path(r).name for r in seed_runs)
    lines = [f"# Few-shot evaluation of {Path(run).name} over {len(seed_runs)} seeds", "",
             f"Seed runs: {names}; every seed played the same levels, sticky-action seeds and demos. Per seed: "
             "a mean over levels with a 95% CI over level means; over runs: the mean of the seeds' figures with "
             "a 95% Student-t CI over seeds (the seed-to-seed spread).", ""]
    for method in methods:
        lines += [f"## `{method}`", "", compare_runs(results, method), ""]
    out = seeds_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    _write_atomically(out / "report.md", text + "\n")
    return text
