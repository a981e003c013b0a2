"""Figure 6: neurons; how many each neuron-level method selects per layer, and NMKE's sets.

NSE: neurons selected per layer and pass (`neurons_selected`); NMKE: the general set, the
specific set and their overlap per layer (`mask`); KNE: ensemble entries per layer (`ensemble`).
Read from the per-round info of the main comparison's runs (all seeds and rounds averaged).
"""

from __future__ import annotations

from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np

from seqedit.figures.common import color, empty_panel, label, main_runs, save


def _mean(xs):
    return float(np.mean(xs)) if xs else float("nan")


def neuron_counts(study: dict) -> dict:
    """{"nse": {layer: mean selected}, "nmke": {layer: {n_general, n_specific, n_overlap, n_selected}},
    "kne": {layer: mean ensemble entries}}, for the methods present."""
    groups = main_runs(study)
    out: dict = {}
    if "nse" in groups:
        acc = defaultdict(list)
        for run in groups["nse"]:
            for r in run["rounds"]:
                for layer, counts in (r.get("neurons_selected") or {}).items():
                    acc[int(layer)].extend(counts)
        out["nse"] = {l: _mean(v) for l, v in sorted(acc.items())}
    if "nmke" in groups:
        acc = defaultdict(lambda: defaultdict(list))
        for run in groups["nmke"]:
            for r in run["rounds"]:
                for layer, info in (r.get("mask") or {}).items():
                    for k in ("n_general", "n_specific", "n_overlap", "n_selected"):
                        if info.get(k) is not None:
                            acc[int(layer)][k].append(info[k])
        out["nmke"] = {l: {k: _mean(v) for k, v in d.items()} for l, d in sorted(acc.items())}
    if "kne" in groups:
        acc = defaultdict(list)
        for run in groups["kne"]:
            for r in run["rounds"]:
                for group in r.get("ensemble") or []:
                    for layer, n in group.items():
                        acc[int(layer)].append(n)
        out["kne"] = {l: _mean(v) for l, v in sorted(acc.items())}
    return out


def plot(study: dict, out_dir, model: str):
    counts = neuron_counts(study)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    sel = {m: counts[m] for m in ("nse",) if m in counts}
    if "nmke" in counts:
        sel["nmke"] = {l: d.get("n_selected", float("nan")) for l, d in counts["nmke"].items()}
    if sel:
        layers = sorted({l for d in sel.values() for l in d})
        width = 0.8 / len(sel)
        for i, (m, d) in enumerate(sel.items()):
            ax.bar(np.arange(len(layers)) + (i - (len(sel) - 1) / 2) * width, [d.get(l, np.nan) for l in layers],
                   width, color=color(m), label=label(m))
        ax.set_xticks(np.arange(len(layers)), [f"layer {l}" for l in layers])
        ax.set_ylabel("neurons updated per batch (mean)")
        ax.set_title("Neurons selected per layer", fontsize=10)
        ax.legend(fontsize=8)
    else:
        empty_panel(ax, "neither NSE nor NMKE in this study")
    ax = axes[1]
    if "nmke" in counts and counts["nmke"]:
        layers = sorted(counts["nmke"])
        x = np.arange(len(layers))
        for i, (k, name) in enumerate((("n_general", "general"), ("n_specific", "specific"), ("n_overlap", "overlap"))):
            ax.bar(x + (i - 1) * 0.27, [counts["nmke"][l].get(k, np.nan) for l in layers], 0.27, label=name)
        ax.set_xticks(x, [f"layer {l}" for l in layers])
        ax.set_title("NMKE: general and specific sets", fontsize=10)
        ax.legend(fontsize=8)
    else:
        empty_panel(ax, "NMKE not in this study")
    ax = axes[2]
    if "kne" in counts and counts["kne"]:
        layers = sorted(counts["kne"])
        ax.bar(np.arange(len(layers)), [counts["kne"][l] for l in layers], color=color("kne"))
        ax.set_xticks(np.arange(len(layers)), [f"layer {l}" for l in layers])
        ax.set_title("KNE (recon.): ensemble entries per layer", fontsize=10)
    else:
        empty_panel(ax, "KNE not in this study")
    for a in axes:
        if a.axison:
            a.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save(fig, out_dir, model, "neurons")
