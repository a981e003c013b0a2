"""Causal tracing: the indirect effect of each layer's MLP output at the subject's last token.

Reads the `tracing.json` of `seqedit trace` (not the study file): mean and 95% interval over the
traced facts per layer, the peak (ROME's layer) marked and the MEMIT window ending there shaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from seqedit.figures.common import save


def load_tracing(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def plot(tracing: dict, out_dir, model: str):
    layers = [x["layer"] for x in tracing["layers"]]
    mean = [x["mean"] for x in tracing["layers"]]
    low = [x["ci_low"] for x in tracing["layers"]]
    high = [x["ci_high"] for x in tracing["layers"]]
    peak, window = tracing["peak_layer"], tracing["memit_layers"]
    s, c = tracing["settings"], tracing["counts"]
    what = "MLP output" if tracing.get("kind", "mlp") == "mlp" else "block output"
    fig, ax = plt.subplots(figsize=(7, 3.6))
    span = f"{window[0]}–{window[-1]}" if len(window) > 1 else f"{window[0]}"
    ax.axvspan(window[0] - 0.5, window[-1] + 0.5, color="tab:orange", alpha=0.15, label=f"MEMIT layers {span}")
    ax.fill_between(layers, low, high, color="tab:blue", alpha=0.25, linewidth=0, label="95% CI over facts")
    ax.plot(layers, mean, marker="o", markersize=3, color="tab:blue", label="mean indirect effect")
    ax.axvline(peak, color="tab:red", linestyle="--", linewidth=1, label=f"peak = ROME layer {peak}")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("layer")
    ax.set_ylabel("p(restored) − p(corrupted)")
    ax.set_title(f"Causal tracing of the {what} at the subject's last token: {c['traced']} facts, "
                 f"{s['window']} layers restored, {s['n_noise']} noise samples", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, out_dir, model, "tracing")
