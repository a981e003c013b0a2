"""Figure 7: cost; seconds per edit (editing only, evaluation excluded) and peak memory per method."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from seqedit.analysis.ci import fmt_ci, mean_ci
from seqedit.figures.common import color, label, main_runs, save


def table(study: dict) -> dict:
    rows, values = [], {}
    for method, runs in main_runs(study).items():
        spe = mean_ci(r["timing"].get("seconds_per_edit") for r in runs)
        rss = mean_ci(r["timing"].get("peak_rss_mb") for r in runs)
        gpu = mean_ci(r["timing"].get("peak_gpu_mb") for r in runs)
        values[method] = {"seconds_per_edit": spe, "peak_rss_mb": rss, "peak_gpu_mb": gpu}
        rows.append([label(method), fmt_ci(*spe[:2], digits=3), fmt_ci(*rss[:2], digits=0), fmt_ci(*gpu[:2], digits=0)])
    return {"columns": ["Method", "Seconds per edit", "Peak RSS (MiB)", "Peak GPU (MiB)"], "rows": rows,
            "values": values}


def plot(study: dict, out_dir, model: str):
    t = table(study)
    methods = list(t["values"])
    x = np.arange(len(methods))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, ylabel in ((axes[0], "seconds_per_edit", "seconds per edit"), (axes[1], "peak_rss_mb", "peak RSS (MiB)")):
        means = [t["values"][m][key][0] or 0.0 for m in methods]
        halves = [t["values"][m][key][1] or 0.0 for m in methods]
        ax.bar(x, means, yerr=halves, capsize=3, color=[color(m) for m in methods])
        ax.set_xticks(x, [label(m) for m in methods], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("Editing time (mean, 95% CI over seeds)", fontsize=10)
    axes[1].set_title("Peak memory of the run's process", fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, model, "cost")
