"""Figure 4: model drift, ‖W_t − W_0‖ per edited matrix against rounds, and each round's update norm."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt

from seqedit.figures.common import empty_panel, label, main_runs, save

# Methods per row of panels (each method a column of two panels: drift above, update norm below).
COLUMNS = 3
# More edited layers than this (KN on a real model edits all of them) are drawn in a sequential
# colour map by depth, with only the first and last layer in the legend.
MAX_LEGEND_LAYERS = 8


def _layer_of(name: str) -> str:
    parts = [p for p in name.split(".") if p.isdigit()]
    return parts[0] if parts else name


def _depth(layer: str):
    """Sort key: layers by number, then anything unnumbered by name."""
    return (0, int(layer), "") if layer.isdigit() else (1, 0, layer)


def _lines(ax, x, series: dict[str, list[float]]) -> None:
    """One line per layer, in depth order; a depth colour map and a two-entry legend when many."""
    layers = sorted(series, key=_depth)
    many = len(layers) > MAX_LEGEND_LAYERS
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(layers):
        name = f"layer {layer}" if layer.isdigit() else layer
        style = {}
        if many:
            style = {"color": cmap(i / (len(layers) - 1)), "lw": 0.9}
            name = name if i in (0, len(layers) - 1) else None
        ax.plot(x, series[layer], label=name, **style)
    ax.legend(fontsize=6, title=f"{len(layers)} layers, by depth" if many else None, title_fontsize=6)


def plot(study: dict, out_dir, model: str):
    groups = main_runs(study)
    methods = list(groups)
    cols = max(1, min(COLUMNS, len(methods)))
    rows = math.ceil(max(len(methods), 1) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.2 * cols, 5.2 * rows), squeeze=False)
    for j in range(len(methods), rows * cols):  # unused cells of the last row
        axes[2 * (j // cols)][j % cols].remove()
        axes[2 * (j // cols) + 1][j % cols].remove()
    for j, method in enumerate(methods):
        run = groups[method][0]  # the first seed
        top, bottom = axes[2 * (j // cols)][j % cols], axes[2 * (j // cols) + 1][j % cols]
        top.set_title(f"{label(method)} (seed {run['seed']})", fontsize=9)
        if j % cols == 0:
            top.set_ylabel("‖W_t − W_0‖ (Frobenius)")
            bottom.set_ylabel("‖ΔW‖ of the round")
        if not run["drift"]:
            empty_panel(top, "no rounds")
            empty_panel(bottom, "")
            continue
        x = [d["n_edits"] for d in run["drift"]]
        squares: dict[str, list[float]] = {}
        for name in {n for d in run["drift"] for n in d["weight_drift"]}:
            key = _layer_of(name)  # several matrices of one layer (FT-L, KNE) are summed in quadrature
            vals = [d["weight_drift"].get(name, 0.0) ** 2 for d in run["drift"]]
            squares[key] = [a + b for a, b in zip(squares.get(key, [0.0] * len(vals)), vals)]
        _lines(top, x, {k: [v ** 0.5 for v in vals] for k, vals in squares.items()})
        updates = {k for d in run["drift"] for k in d["update_norm"]}
        _lines(bottom, x, {k: [d["update_norm"].get(k, 0.0) for d in run["drift"]] for k in updates})
        bottom.set_xlabel("number of edits")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    if not methods:
        empty_panel(axes[0][0], "no runs")
        empty_panel(axes[1][0], "")
    fig.tight_layout()
    return save(fig, out_dir, model, "drift")
