"""Turn results.json (one row per episode) into the evaluation report: success rate and return per
task × method × k, the in-context gain, and the model against Hashmap.

A row: ``{"task", "level", "k", "method", "episode", "return", "length", "success", ...}``.

Statistics a reviewer can trust:
- **Clustered by level.** Rollouts of one level are not independent (same maze), so every mean and
  CI is over *level means*: each level's mean over its rollouts, then a Student-t 95% interval
  over levels (n = levels, not episodes).
- **Paired by level.** A gain (k-shot minus 0-shot, or the model minus Hashmap) is the mean over
  levels of that level's difference, with its t-interval. Rollout i of a level meets the same
  sticky-action seed at every k and for every method (common random numbers), so the difference
  removes both the level-to-level spread and most of the sticky-action noise.
- **Success is the headline**, return second: a return gain can come from fewer wall bumps at 0%
  success.
- **Every k is reported**, and the primary k (declared before evaluating, ``meta["primary_k"]``,
  1-shot by default) is the one claim; there is no "best k", which would be chosen after the fact.
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

    def percent(self, signed: bool = False) -> str:
        """As a percentage (success rates): ``66% ± 12`` or, for differences, ``+22 pp ± 12``."""
        if self.n == 0:
            return ""
        mean = f"{100 * self.mean:+.0f} pp" if signed else f"{100 * self.mean:.0f}%"
        if self.n < 2 or math.isnan(self.half_width):
            return f"{mean} (n={self.n})"
        return f"{mean} ± {100 * self.half_width:.0f}"

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


def level_means(rows: Iterable[dict], key: str = "return") -> dict[int, float]:
    """Each level's mean of ``key`` over its rollouts."""
    return {lv: float(np.mean([float(r[key]) for r in rs])) for (lv,), rs in group(rows, "level").items()}


def clustered(rows: Iterable[dict], key: str = "return") -> Summary:
    """Mean of ``key`` with a 95% CI over level means (rollouts clustered by level)."""
    return summarize(list(level_means(rows, key).values()))


def paired(a: Iterable[dict], b: Iterable[dict], key: str = "return") -> Summary:
    """Mean over levels of (a's level mean − b's level mean), on the levels both played."""
    ma, mb = level_means(a, key), level_means(b, key)
    return summarize([ma[lv] - mb[lv] for lv in sorted(set(ma) & set(mb))])


def _rows(rows: list[dict], task: str, method: str, k: int) -> list[dict]:
    return [r for r in rows if r["task"] == task and r["method"] == method and r["k"] == k]


def gain(rows: list[dict], task: str, method: str, k: int, key: str = "return") -> Summary:
    """In-context gain of ``method`` at k shots over its 0-shot ``key``, paired by level."""
    return paired(_rows(rows, task, method, k), _rows(rows, task, method, 0), key)


def versus(rows: list[dict], task: str, method: str, other: str, k: int, key: str = "success") -> Summary:
    """``method`` minus ``other`` at k shots, paired by level."""
    return paired(_rows(rows, task, method, k), _rows(rows, task, other, k), key)


def _table(rows: list[dict], task: str, methods: list[str], shots: list[int], key: str) -> list[str]:
    lines = ["| method | " + " | ".join(f"k={k}" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    for m in methods:
        cells = []
        for k in shots:
            rs = _rows(rows, task, m, k)
            s = clustered(rs, key) if rs else None
            cells.append("" if s is None else (s.percent() if key == "success" else str(s)))
        if any(cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown_report(rows: list[dict], title: str = "Few-shot evaluation", icl_method: str = "icl",
                    meta: dict | None = None, baselines: tuple[str, ...] = ("hashmap", "hashmap-cell")) -> str:
    """report.md: success and return per task × method × k, the model's gain at every k (the
    primary k marked), and the model against each of the copy ``baselines`` that was evaluated; all
    clustered and paired by level."""
    meta = meta or {}
    primary = int(meta.get("primary_k", 1))
    tasks = sorted({r["task"] for r in rows})
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m != icl_method, m))
    shots = sorted({r["k"] for r in rows})
    levels = len({(r["task"], r["level"]) for r in rows})
    lines = [f"# {title}", "",
             f"{len(rows)} episodes on {levels} task-levels. Every figure is a mean over levels with a 95% "
             "Student-t CI over level means (rollouts are clustered by level); gains are paired by level. "
             f"Primary k, declared before evaluating: **{primary}**. Every k is shown; no best-k is chosen.", ""]
    layout = meta.get("layout")
    if layout:
        lines += [f"Context layout of the run: {layout['episodes']} episodes of up to {layout['window']} steps "
                  f"in {layout['context_steps']} steps; a rollout may last {layout['window']} steps.", ""]
    for k, warnings in sorted(meta.get("warnings", {}).items(), key=lambda kv: int(kv[0])):
        for w in warnings:
            lines.append(f"- **warning** (k={k}): {w}")
    if meta.get("warnings"):
        lines.append("")
    for task in tasks:
        lines += [f"## {task}", "", "Success rate:", "", *_table(rows, task, methods, shots, "success"), "",
                  "Return:", "", *_table(rows, task, methods, shots, "return"), ""]
    gain_shots = [k for k in shots if k > 0 and any(r["method"] == icl_method and r["k"] == k for r in rows)]
    if gain_shots and any(r["method"] == icl_method and r["k"] == 0 for r in rows):
        lines += [f"## In-context gain of `{icl_method}` (k-shot minus 0-shot, paired by level)", "",
                  "| task | k | success gain | CI excludes 0 | return gain |", "|---|---|---|---|---|"]
        for task in tasks:
            for k in gain_shots:
                s, r = gain(rows, task, icl_method, k, "success"), gain(rows, task, icl_method, k, "return")
                if s.n == 0:
                    continue
                mark = " (primary)" if k == primary else ""
                lines.append(f"| {task} | {k}{mark} | {s.percent(signed=True)} | "
                             f"{'yes' if s.excludes_zero else 'no'} | {r} |")
        lines.append("")
    for baseline in baselines:
        vs_shots = [k for k in gain_shots if any(r["method"] == baseline and r["k"] == k for r in rows)]
        if vs_shots:
            lines += [f"## `{icl_method}` minus `{baseline}` (same levels and k, paired by level)", "",
                      "| task | k | success difference | CI excludes 0 | return difference |", "|---|---|---|---|---|"]
            for task in tasks:
                for k in vs_shots:
                    s = versus(rows, task, icl_method, baseline, k, "success")
                    if s.n == 0:
                        continue
                    r = versus(rows, task, icl_method, baseline, k, "return")
                    mark = " (primary)" if k == primary else ""
                    lines.append(f"| {task} | {k}{mark} | {s.percent(signed=True)} | "
                                 f"{'yes' if s.excludes_zero else 'no'} | {r} |")
            lines.append("")
    return "\n".join(lines)
