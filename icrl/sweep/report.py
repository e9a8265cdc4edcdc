"""The report across a sweep's grid: one markdown table and one PNG (``icrl report SWEEP_DIR``).

For the headline (``report``: metric, k, method of the sweep file), each job's figure on a task is
its mean over level means (``icrl.eval.report.clustered``, as in its own report). Jobs that differ
only in the ``seeds`` axis are replicates: a grid cell shows their mean, a 95% Student-t CI over
them, and each replicate's value. The in-context gain (k-shot minus 0-shot, paired by level within
a job) and the training-time diagnostic gap (``diag_gap``, last logged) are shown the same way.

The contrast of the last x value against the first, per task, is given three ways:
- over replicates, unpaired (Welch's interval: the seed-to-seed spread counts in full);
- paired by replicate (the difference within each replicate label that both x values have, then a
  t-interval over those differences): a grid's replicate label fixes the initialisation and data
  seed at every x, so what a seed shares across x cancels; the seed spread of the difference stays;
- paired by level (the replicates' level means averaged, then the level-by-level difference: every
  job plays the same levels, so the level spread cancels; the seed spread is not in this interval).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats

from icrl.errors import IcrlError
from icrl.eval.report import Summary, clustered, gain, level_means, summarize
from icrl.sweep import state as st


def is_sweep_dir(path: str | Path) -> bool:
    """Does ``path`` hold a sweep (``sweep.json``)?"""
    return (Path(path) / "sweep.json").is_file()


def _fmt(s: Summary, metric: str, signed: bool = False) -> str:
    if s.n == 0 or math.isnan(s.mean):
        return ""
    return s.percent(signed=signed) if metric == "success" else str(s)


def _value(v: float, metric: str, signed: bool = False) -> str:
    if metric == "success":
        return f"{100 * v:+.0f}" if signed else f"{100 * v:.0f}"
    return f"{v:+.2f}"


def _cell(values: list[float], metric: str, signed: bool = False) -> str:
    if not values:
        return ""
    return f"{_fmt(summarize(values), metric, signed)} ({', '.join(_value(v, metric, signed) for v in values)})"


def welch(a: list[float], b: list[float]) -> Summary:
    """mean(a) - mean(b) with Welch's 95% interval (nan half-width with fewer than 2 of either)."""
    if len(a) < 2 or len(b) < 2:
        return Summary(float(np.mean(a) - np.mean(b)) if a and b else float("nan"), float("nan"), min(len(a), len(b)))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Summary(float(np.mean(a) - np.mean(b)), 0.0, min(len(a), len(b)))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Summary(float(np.mean(a) - np.mean(b)), float(stats.t.ppf(0.975, df) * se), min(len(a), len(b)))


def _last_diag(run: Path) -> float | None:
    from icrl.train.metrics import read_jsonl

    gaps = [r["diag_gap"] for r in read_jsonl(run / "metrics.jsonl") if "diag_gap" in r]
    return float(gaps[-1]) if gaps else None


def collect(sweep_dir: Path, method: str | None = None) -> dict:
    """What the report needs: the plan, the axes' roles, and each evaluated job's rows of ``method``
    (None: the sweep file's ``report.method``)."""
    plan = st.read_json(sweep_dir / "sweep.json", None)
    if plan is None:
        raise IcrlError(f"{sweep_dir}: no sweep.json (not a sweep directory of `icrl sweep`)")
    rep, axes = plan["report"], plan["axes"]
    method = method or rep["method"]
    seeds = rep.get("seeds") if rep.get("seeds") in axes else None
    x = rep.get("x") or next((a for a in axes if a != seeds), seeds)
    k = rep.get("k") if rep.get("k") is not None else (plan.get("primary_k") or 0)
    rows, diag, missing, methods = {}, {}, [], set()
    for job in plan["jobs"]:
        path = st.run_dir(sweep_dir, job["name"]) / "eval" / "results.json"
        data = st.read_json(path, None)
        if data is None:
            missing.append(job["name"])
            continue
        methods |= {r["method"] for r in data}
        rows[job["name"]] = [r for r in data if r["method"] == method]
        diag[job["name"]] = _last_diag(st.run_dir(sweep_dir, job["name"]))
    if not rows:
        raise IcrlError(f"{sweep_dir}: no job has been evaluated yet (see {sweep_dir / 'jobs.md'})")
    if not any(rows.values()):
        raise IcrlError(f"{sweep_dir}: no results of method {method!r}; the jobs evaluated {sorted(methods)}")
    others = [a for a in axes if a not in (x, seeds)]
    return dict(plan=plan, x=x, seeds=seeds, others=others, k=int(k), metric=rep["metrics"][0],
                metrics=rep["metrics"], method=method,
                rows=rows, diag=diag, missing=missing,
                tasks=sorted({r["task"] for rs in rows.values() for r in rs}))


def _groups(c: dict) -> dict[tuple[str, ...], dict[str, list[str]]]:
    """(labels of the other axes) -> x label -> the replicate jobs there (evaluated ones)."""
    out: dict[tuple[str, ...], dict[str, list[str]]] = {}
    for job in c["plan"]["jobs"]:
        if job["name"] not in c["rows"]:
            continue
        series = tuple(job["labels"][a] for a in c["others"])
        out.setdefault(series, {lb: [] for lb in c["plan"]["axes"][c["x"]]})
        out[series][job["labels"][c["x"]]].append(job["name"])
    return out


def _job_values(c: dict, jobs: list[str], task: str) -> tuple[list[float], list[float]]:
    """Each job's headline figure and in-context gain on ``task``."""
    heads, gains = [], []
    for name in jobs:
        rows = [r for r in c["rows"][name] if r["task"] == task]
        at_k = [r for r in rows if r["k"] == c["k"]]
        if at_k:
            heads.append(clustered(at_k, c["metric"]).mean)
        if c["k"] > 0 and at_k and any(r["k"] == 0 for r in rows):
            gains.append(gain(rows, task, c["method"], c["k"], c["metric"]).mean)
    return heads, gains


def markdown(c: dict, image: str | None = "report.png") -> str:
    """The report's text: for each metric (the headline first), the grid table and the contrast."""
    k, x, method, plan = c["k"], c["x"], c["method"], c["plan"]
    reps = f"replicates over `{c['seeds']}`" if c["seeds"] else "one job per point (no seeds axis)"
    lines = [f"# Sweep {plan['name']}: `{method}` {k}-shot {c['metric']} vs `{x}`", "",
             f"{len(c['rows'])} of {len(plan['jobs'])} jobs evaluated; {reps}. A cell: mean ± 95% CI over "
             f"replicates (each replicate's value); a replicate's value is its mean over level means "
             f"(success in %).", ""]
    if c["missing"]:
        lines += [f"Not evaluated yet: {', '.join(c['missing'])}.", ""]
    groups = _groups(c)
    for metric in c["metrics"]:
        m = {**c, "metric": metric}
        lines += [f"## {k}-shot {metric}", "", *_table(m, groups), "", *_contrasts(m, groups), ""]
    if image:
        lines += [f"![{c['metric']} vs {x}]({image})"]
    return "\n".join(lines).rstrip()


def _short_task(task: str) -> str:
    return task.removeprefix("MiniHack-").removesuffix("-v0")


def _table(c: dict, groups: dict) -> list[str]:
    metric, k, x = c["metric"], c["k"], c["x"]
    head = [*(f"`{a}`" for a in c["others"]), f"`{x}`", "n"]
    cols = [f"{_short_task(t)} {k}-shot" for t in c["tasks"]]
    if k > 0:
        cols += [f"{_short_task(t)} gain over 0-shot" for t in c["tasks"]]
    cols.append("diag gap")
    lines = ["| " + " | ".join(head + cols) + " |", "|" + "---|" * (len(head) + len(cols))]
    for series, by_x in groups.items():
        for label, jobs in by_x.items():
            if not jobs:
                continue
            cells, gains = [], []
            for task in c["tasks"]:
                h, g = _job_values(c, jobs, task)
                cells.append(_cell(h, metric))
                gains.append(_cell(g, metric, signed=True))
            diag = [c["diag"][j] for j in jobs if c["diag"].get(j) is not None]
            row = [*series, label, str(len(jobs)), *cells, *(gains if k > 0 else []), str(summarize(diag)) if diag else ""]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _contrasts(c: dict, groups: dict) -> list[str]:
    labels = c["plan"]["axes"][c["x"]]
    if len(labels) < 2:
        return []
    first, last = labels[0], labels[-1]
    metric, k = c["metric"], c["k"]
    out = [f"`{c['x']}` = {last} minus {first}, {k}-shot {metric}" + (" (pp)" if metric == "success" else "") + ":", "",
           "| series | task | difference | 95% CI over replicates (Welch) | excludes 0 | paired by replicate | excludes 0 "
           "| paired by level | excludes 0 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for series, by_x in groups.items():
        for task in c["tasks"]:
            a, _ = _job_values(c, by_x.get(last, []), task)
            b, _ = _job_values(c, by_x.get(first, []), task)
            if not a or not b:
                continue
            w = welch(a, b)
            r = _paired_replicates(c, by_x[last], by_x[first], task)
            p = _paired_levels(c, by_x[last], by_x[first], task)
            ci = "" if math.isnan(w.half_width) else _interval(w, metric)
            rci = "" if r.n < 2 else f"{_interval(r, metric)} over {r.n} pairs"
            pci = "" if p.n < 2 else f"{_interval(p, metric)} over {p.n} levels"
            out.append(f"| {', '.join(series) or '-'} | {_short_task(task)} | {_value(w.mean, metric, True)} | {ci} | "
                       f"{_yes(w)} | {rci} | {_yes(r)} | {pci} | {_yes(p)} |")
    return out


def _yes(s: Summary) -> str:
    return "yes" if s.excludes_zero else "no"


def _replicate_label(c: dict, job: str) -> str | None:
    return next((j["labels"].get(c["seeds"]) for j in c["plan"]["jobs"] if j["name"] == job), None)


def _paired_replicates(c: dict, a_jobs: list[str], b_jobs: list[str], task: str) -> Summary:
    """The mean of (a - b) within each replicate label both sides have, with its t-interval over
    those pairs (n=0 without a seeds axis)."""
    if not c["seeds"]:
        return summarize([])

    def by_label(jobs):
        out = {}
        for job in jobs:
            heads, _ = _job_values(c, [job], task)
            if heads:
                out[_replicate_label(c, job)] = heads[0]
        return out

    a, b = by_label(a_jobs), by_label(b_jobs)
    return summarize([a[lb] - b[lb] for lb in sorted(set(a) & set(b))])


def _interval(s: Summary, metric: str) -> str:
    return f"[{_value(s.mean - s.half_width, metric, True)}, {_value(s.mean + s.half_width, metric, True)}]"


def _paired_levels(c: dict, a_jobs: list[str], b_jobs: list[str], task: str) -> Summary:
    def averaged(jobs):
        per = [level_means([r for r in c["rows"][j] if r["task"] == task and r["k"] == c["k"]], c["metric"])
               for j in jobs]
        common = set.intersection(*(set(p) for p in per)) if per else set()
        return {lv: float(np.mean([p[lv] for p in per])) for lv in common}

    a, b = averaged(a_jobs), averaged(b_jobs)
    return summarize([a[lv] - b[lv] for lv in sorted(set(a) & set(b))])


def plot(c: dict, path: Path) -> Path:
    """One PNG: a panel per task, the headline vs x, replicates as dots, mean ± 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = c["plan"]["axes"][c["x"]]
    try:
        xs = [float(lb) for lb in labels]
    except ValueError:
        xs = list(range(len(labels)))
    tasks = c["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), dpi=120, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for series, by_x in _groups(c).items():
            mx, means, halves = [], [], []
            for xv, lb in zip(xs, labels):
                h, _ = _job_values(c, by_x.get(lb, []), task)
                if not h:
                    continue
                s = summarize(h)
                ax.scatter([xv] * len(h), h, s=12, alpha=0.5, color="grey")
                mx.append(xv)
                means.append(s.mean)
                halves.append(0.0 if math.isnan(s.half_width) else s.half_width)
            ax.errorbar(mx, means, yerr=halves, marker="o", capsize=3, label=", ".join(series) or None)
        ax.set_xticks(xs, labels)
        ax.set_xlabel(c["x"])
        ax.set_ylabel(f"{c['k']}-shot {c['metric']}")
        ax.set_title(task, fontsize=8)
        ax.grid(alpha=0.3)
        if c["others"]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{c['plan']['name']}: mean ± 95% CI over replicates", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(sweep_dir: str | Path, method: str | None = None) -> str:
    """Write ``report.md`` and ``report.png`` into the sweep directory, of ``method`` (None: the
    sweep file's); returns the markdown."""
    sweep_dir = Path(sweep_dir)
    c = collect(sweep_dir, method)
    plot(c, sweep_dir / "report.png")
    text = markdown(c)
    st.write_atomically(sweep_dir / "report.md", text + "\n")
    return text
