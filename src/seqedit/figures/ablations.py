"""Figure 3: one panel per ablation; final efficacy, generalization and specificity per value."""

from __future__ import annotations

import numpy as np

from seqedit.analysis.ci import fmt_ci, mean_ci
from seqedit.figures.common import ablation_runs, empty_panel, label, ordered, panel_grid, save

SHOWN = ["efficacy", "generalization", "specificity"]
MARKERS = {"efficacy": "o", "generalization": "s", "specificity": "^"}


def table(study: dict) -> dict:
    """Rows: ablation, method, value, then mean ± CI of each metric over the ablation seeds."""
    rows, values = [], {}
    for name, ab in ablation_runs(study).items():
        for method in ordered(r["method"] for r in ab["runs"]):
            for value in ab["values"]:
                runs = [r for r in ab["runs"] if r["method"] == method and r["value"] == value]
                if not runs:
                    continue
                stats = {m: mean_ci(r["final"].get(m) for r in runs) for m in SHOWN + ["fluency"]}
                values[(name, method, value)] = stats
                rows.append([ab["title"], label(method), value] + [fmt_ci(*stats[m][:2]) for m in SHOWN + ["fluency"]]
                            + [str(len(runs))])
    return {"columns": ["Ablation", "Method", "Value", "Efficacy", "Generalization", "Specificity", "Fluency", "Seeds"],
            "rows": rows, "values": values}


def plot(study: dict, out_dir, model: str):
    abl = ablation_runs(study)
    fig, axes = panel_grid(len(abl), 3, 4.6, 3.4)
    flat = list(axes.flat)
    if not abl:
        empty_panel(flat[0], "no ablations configured")
    for ax, (name, ab) in zip(flat, abl.items()):
        methods = ordered(r["method"] for r in ab["runs"])
        x = np.arange(len(ab["values"]))
        # points side by side within a small dodge, so each stays over its value's tick
        width = 0.24 / (len(SHOWN) * len(methods))
        k = 0
        for method in methods:
            for metric in SHOWN:
                means, halves = [], []
                for value in ab["values"]:
                    m, h, _ = mean_ci(r["final"].get(metric) for r in ab["runs"]
                                      if r["method"] == method and r["value"] == value)
                    means.append(np.nan if m is None else m)
                    halves.append(h or 0.0)
                offset = (k - (len(SHOWN) * len(methods) - 1) / 2) * width
                lab = metric if len(methods) == 1 else f"{label(method)} {metric}"
                ax.errorbar(x + offset, means, yerr=halves, fmt=MARKERS[metric], ms=5, capsize=2, label=lab,
                            linestyle="-" if len(ab["values"]) > 1 else "none", linewidth=0.8)
                k += 1
        ax.set_xticks(x, ab["values"], rotation=20 if max(len(v) for v in ab["values"]) > 6 else 0, fontsize=8)
        ax.set_ylim(-3, 103)
        ax.set_xlabel(ab["param"] or "setting", fontsize=8)
        ax.set_title(f"{ab['title']} ({', '.join(label(m) for m in methods)})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in flat[len(abl):] if abl else flat[1:]:
        ax.set_axis_off()
    fig.tight_layout()
    return save(fig, out_dir, model, "ablations")
