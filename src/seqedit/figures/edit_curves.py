"""Figure 1: efficacy, generalization, specificity and fluency against the number of edits, with the
generated success and the general-capability probes where the runs have them."""

from __future__ import annotations

import math
from collections import defaultdict

from seqedit.analysis.ci import mean_ci
from seqedit.figures.common import METRIC_LABEL, METRICS, UNBOUNDED, color, label, main_runs, panel_grid, save


# Perplexity spans orders of magnitude once a method breaks the model (KN's reaches 1e38).
LOG_SCALE = {"perplexity"}
# The axis of each metric that is not a percentage.
UNIT = {"fluency": "n-gram entropy x100", "perplexity": "perplexity"}


def curve_stats(runs: list[dict], metric: str) -> tuple[list[int], list[float], list[float]]:
    """x (edits), mean and 95% half-width over seeds at each evaluated point (0 for one seed)."""
    by_x = defaultdict(list)
    for run in runs:
        for p in run["points"]:
            if p.get(metric) is not None:
                by_x[p["n_edits"]].append(p[metric])
    xs = sorted(by_x)
    stats = [mean_ci(by_x[x]) for x in xs]
    return xs, [m for m, _, _ in stats], [h or 0.0 for _, h, _ in stats]


def plot(study: dict, out_dir, model: str):
    groups = main_runs(study)
    metrics = [m for m in METRICS if any(p.get(m) is not None for rs in groups.values() for r in rs for p in r["points"])]
    # A near-square grid: nine panels side by side would not fit a page.
    fig, grid = panel_grid(len(metrics), math.ceil(math.sqrt(len(metrics))), 4.2, 3.6)
    axes = list(grid.flat)
    n_seeds = len(study["setup"]["seeds"])
    for ax in axes[len(metrics):]:
        ax.remove()
    for ax, metric in zip(axes, metrics):
        for method, runs in groups.items():
            xs, mean, half = curve_stats(runs, metric)
            if not xs:
                continue
            low = [m - h for m, h in zip(mean, half)]
            if metric in LOG_SCALE:  # the band's lower edge where it stays above 0
                low = [lo if lo > 0 else m for lo, m in zip(low, mean)]
            ax.plot(xs, mean, marker="o", ms=3, color=color(method), label=label(method))
            ax.fill_between(xs, low, [m + h for m, h in zip(mean, half)], color=color(method), alpha=0.18,
                            linewidth=0)
        ax.set_xlabel("number of edits")
        ax.set_title(METRIC_LABEL[metric])
        if ax in grid[:, 0] or metric in UNIT:  # the first column, and every axis that is not in %
            ax.set_ylabel(f"{UNIT.get(metric, '%')} (mean, 95% CI over {n_seeds} seed{'s' if n_seeds > 1 else ''})")
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        elif metric not in UNBOUNDED:
            ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[len(metrics) - 1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save(fig, out_dir, model, "edit_curves")
