"""Plots of success rate and return vs number of demos k, one PNG per task, the model with the
baselines; 95% CIs over level means, as in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrl.eval.report import clustered, group

# Baselines that ignore the demos are drawn as horizontal lines across k.
FLAT_METHODS = {"random": "grey", "expert": "black"}


def plot_vs_k(rows: list[dict], out_dir: str | Path, icl_method: str = "icl") -> list[Path]:
    """Write ``<out_dir>/<task>.png`` for every task; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters or CI
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (task,), task_rows in sorted(group(rows, "task").items()):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
        methods = sorted({r["method"] for r in task_rows}, key=lambda m: (m != icl_method, m))
        for ax, key, label in ((axes[0], "success", "success rate"), (axes[1], "return", "episode return")):
            for m in methods:
                by_k = group((r for r in task_rows if r["method"] == m), "k")
                ks = sorted(k for (k,) in by_k)
                s = [clustered(by_k[(k,)], key) for k in ks]
                mean = np.array([x.mean for x in s])
                half = np.nan_to_num(np.array([x.half_width for x in s]))
                style = dict(lw=2.2, marker="o") if m == icl_method else dict(lw=1.2, marker=".", ls="--")
                if m in FLAT_METHODS and len(ks) == 1:  # ignores demos: one level for every k
                    ax.axhline(mean[0], label=m, lw=1.0, ls=":", color=FLAT_METHODS[m])
                    continue
                ax.plot(ks, mean, label=m, **style)
                ax.fill_between(ks, mean - half, mean + half, alpha=0.15)
            ax.set_xticks(sorted({r["k"] for r in task_rows}))  # k is a count of demos
            ax.set_xlabel("demos in context (k)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, ncol=2)
        fig.suptitle(task, fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{task.replace(':', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
