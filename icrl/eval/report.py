"""Turn results.json (one row per episode) into tables: mean ± 95% CI per task × method × k, and
the in-context gain (k-shot minus zero-shot) with its 95% CI.

A row: ``{"task", "level", "k", "method", "return", "length", "success", ...}``.

CIs use Student's t. The gain pairs levels: for each level played at both k and 0 shots, the
difference of its mean returns; the CI is over those per-level differences, which removes the
level-to-level spread that k does not cause.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class Summary:
    mean: float
    half_width: float  # 95% CI is mean ± half_width (nan with one sample)
    n: int

    def __str__(self) -> str:
        if self.n < 2 or math.isnan(self.half_width):
            return f"{self.mean:+.2f} (n={self.n})"
        return f"{self.mean:+.2f} ± {self.half_width:.2f}"

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and abs(self.mean) > self.half_width


def summarize(values: Sequence[float]) -> Summary:
    """Mean and 95% t-interval half-width of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0)
    if n == 1:
        return Summary(float(x[0]), float("nan"), 1)
    half = stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Summary(float(x.mean()), float(half), n)


def group(rows: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return dict(out)


def level_means(rows: Iterable[dict]) -> dict[int, float]:
    return {lv: float(np.mean([r["return"] for r in rs])) for (lv,), rs in group(rows, "level").items()}


def gain(rows: list[dict], task: str, method: str, k: int) -> Summary:
    """In-context gain of ``method`` at k shots over its 0-shot return, paired by level."""
    at_k = level_means(r for r in rows if r["task"] == task and r["method"] == method and r["k"] == k)
    at_0 = level_means(r for r in rows if r["task"] == task and r["method"] == method and r["k"] == 0)
    shared = sorted(set(at_k) & set(at_0))
    return summarize([at_k[lv] - at_0[lv] for lv in shared])


def markdown_report(rows: list[dict], title: str = "Few-shot evaluation", icl_method: str = "icl") -> str:
    """report.md: return and success per task × method × k, then the in-context gain of the model."""
    lines = [f"# {title}", ""]
    tasks = sorted({r["task"] for r in rows})
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m != icl_method, m))
    shots = sorted({r["k"] for r in rows})
    by = group(rows, "task", "method", "k")
    episodes = len(rows)
    levels = len({(r["task"], r["level"]) for r in rows})
    lines += [f"{episodes} episodes on {levels} task-levels. Return: mean ± 95% CI (Student t) over "
              "episodes; success rate in brackets.", ""]
    for task in tasks:
        lines += [f"## {task}", "", "| method | " + " | ".join(f"k={k}" for k in shots) + " |",
                  "|---|" + "---|" * len(shots)]
        for m in methods:
            cells = []
            for k in shots:
                rs = by.get((task, m, k))
                if not rs:
                    cells.append("")
                    continue
                s = summarize([r["return"] for r in rs])
                cells.append(f"{s} [{100 * np.mean([r['success'] for r in rs]):.0f}%]")
            if any(cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    icl_shots = [k for k in shots if k > 0 and any(r["method"] == icl_method and r["k"] == k for r in rows)]
    if icl_shots and any(r["method"] == icl_method and r["k"] == 0 for r in rows):
        lines += ["## In-context gain (k-shot minus 0-shot return, paired by level, 95% CI)", "",
                  "| task | 1-shot gain | best k | best-k gain | CI excludes 0 |", "|---|---|---|---|---|"]
        for task in tasks:
            gains = {k: gain(rows, task, icl_method, k) for k in icl_shots}
            gains = {k: g for k, g in gains.items() if g.n > 0}
            if not gains:
                continue
            best = max(gains, key=lambda k: gains[k].mean)
            one = str(gains[1]) if 1 in gains else ""
            lines.append(f"| {task} | {one} | {best} | {gains[best]} | "
                         f"{'yes' if gains[best].excludes_zero and gains[best].mean > 0 else 'no'} |")
        lines.append("")
    return "\n".join(lines)
