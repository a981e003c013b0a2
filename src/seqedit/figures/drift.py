"""Figure 4: model drift, ‖W_t − W_0‖ per edited matrix against rounds, and each round's update norm."""

from __future__ import annotations

import matplotlib.pyplot as plt

from seqedit.figures.common import empty_panel, label, main_runs, save


def _layer_of(name: str) -> str:
    parts = [p for p in name.split(".") if p.isdigit()]
    return f"layer {parts[0]}" if parts else name


def plot(study: dict, out_dir, model: str):
    groups = main_runs(study)
    methods = list(groups)
    fig, axes = plt.subplots(2, max(len(methods), 1), figsize=(3.2 * max(len(methods), 1), 5.6), squeeze=False)
    for j, method in enumerate(methods):
        run = groups[method][0]  # the first seed
        top, bottom = axes[0][j], axes[1][j]
        if not run["drift"]:
            empty_panel(top, "no rounds")
            empty_panel(bottom, "")
            continue
        x = [d["n_edits"] for d in run["drift"]]
        names = sorted({n for d in run["drift"] for n in d["weight_drift"]})
        by_layer: dict[str, list[float]] = {}
        for name in names:  # several matrices of one layer (FT-L, KNE) are summed in quadrature
            key = _layer_of(name)
            vals = [d["weight_drift"].get(name, 0.0) ** 2 for d in run["drift"]]
            by_layer[key] = [a + b for a, b in zip(by_layer.get(key, [0.0] * len(vals)), vals)]
        for key, vals in by_layer.items():
            top.plot(x, [v ** 0.5 for v in vals], label=key)
        layers = sorted({k for d in run["drift"] for k in d["update_norm"]}, key=lambda s: (len(s), s))
        for key in layers:
            bottom.plot(x, [d["update_norm"].get(key, 0.0) for d in run["drift"]], label=f"layer {key}")
        top.set_title(f"{label(method)} (seed {run['seed']})", fontsize=9)
        bottom.set_xlabel("number of edits")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        top.legend(fontsize=6)
    if methods:
        axes[0][0].set_ylabel("‖W_t − W_0‖ (Frobenius)")
        axes[1][0].set_ylabel("‖ΔW‖ of the round")
    else:
        empty_panel(axes[0][0], "no runs")
    fig.tight_layout()
    return save(fig, out_dir, model, "drift")
