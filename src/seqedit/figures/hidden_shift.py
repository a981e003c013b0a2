"""Figure 5: hidden-state shift; a 2-D PCA of final-layer states before and after editing.

The projection is fitted on the unedited model's states (both probes) of each run, so "before"
is the same cloud it was fitted on and "after" shows where the edits moved it. The panel title
gives the mean relative shift ‖h_after − h_before‖ / ‖h_before‖ on the neighbourhood probe,
whose facts were not edited.
"""

from __future__ import annotations

import numpy as np

from seqedit.figures.common import empty_panel, label, main_runs, panel_grid, save


def pca_fit(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (k, d)) of x (n, d), signs fixed so the largest loading is positive."""
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    return mu, comps * signs[:, None]


def relative_shift(before: np.ndarray, after: np.ndarray) -> float:
    return float((np.linalg.norm(after - before, axis=1) / (np.linalg.norm(before, axis=1) + 1e-12)).mean())


def shifts(study: dict) -> dict[str, dict[str, float]]:
    """{method: {probe: mean relative shift}} of the first seed's run."""
    out = {}
    for method, runs in main_runs(study).items():
        if runs[0].get("hidden"):
            h = np.load(runs[0]["hidden"])
            out[method] = {p: relative_shift(h[f"before_{p}"], h[f"after_{p}"]) for p in ("rewrite", "neighborhood")}
    return out


def plot(study: dict, out_dir, model: str):
    groups = main_runs(study)
    methods = [m for m, rs in groups.items() if rs[0].get("hidden")]
    fig, axes = panel_grid(len(methods), 4, 3.4, 3.2)
    flat = list(axes.flat)
    if not methods:
        empty_panel(flat[0], "no hidden-state probes in this study")
    for ax, method in zip(flat, methods):
        h = np.load(groups[method][0]["hidden"])
        before = np.concatenate([h["before_rewrite"], h["before_neighborhood"]])
        mu, comps = pca_fit(before)
        for probe, marker in (("rewrite", "o"), ("neighborhood", "^")):
            b, a = (h[f"before_{probe}"] - mu) @ comps.T, (h[f"after_{probe}"] - mu) @ comps.T
            ax.scatter(b[:, 0], b[:, 1], s=9, marker=marker, color="0.6", alpha=0.6, label=f"before, {probe}")
            ax.scatter(a[:, 0], a[:, 1], s=9, marker=marker, color="tab:red" if probe == "rewrite" else "tab:blue",
                       alpha=0.6, label=f"after, {probe}")
        shift = relative_shift(h["before_neighborhood"], h["after_neighborhood"])
        ax.set_title(f"{label(method)}: neighbourhood shift {shift:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
    if methods:
        flat[0].legend(fontsize=6, loc="best")
    for ax in flat[len(methods) if methods else 1:]:
        ax.set_axis_off()
    fig.tight_layout()
    return save(fig, out_dir, model, "hidden_shift")
