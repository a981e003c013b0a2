"""What every figure shares: reading the study file, method order and colours, saving."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from seqedit.analysis.labels import MAIN, METHOD_LABEL, METHOD_ORDER  # noqa: E402,F401
METRICS = ["efficacy", "generalization", "specificity", "fluency"]
# Generation-based success and general-capability probes (evaluate/generation.py, capability.py).
PROBE_METRICS = ["efficacy_gen", "generalization_gen", "specificity_gen", "perplexity", "heldout_accuracy"]
METRICS += PROBE_METRICS
METRIC_LABEL = {"efficacy": "Efficacy", "generalization": "Generalization", "specificity": "Specificity",
                "fluency": "Fluency", "score": "Score", "consistency": "Consistency",
                "efficacy_gen": "Efficacy (generated)", "generalization_gen": "Generalization (generated)",
                "specificity_gen": "Specificity (generated)", "perplexity": "Held-out perplexity",
                "heldout_accuracy": "Held-out facts"}
# Metrics that are not percentages (no 0-100 axis).
UNBOUNDED = {"fluency", "perplexity"}


def load_study(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def label(method: str) -> str:
    return METHOD_LABEL.get(method, method)


def color(method: str):
    palette = plt.get_cmap("tab10").colors
    i = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return palette[i % len(palette)]


def ordered(methods) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))


def main_runs(study: dict) -> dict[str, list[dict]]:
    """{method: [runs of the main comparison, by seed]} in method order."""
    groups = defaultdict(list)
    for run in study["runs"]:
        if run["variant"] == MAIN:
            groups[run["method"]].append(run)
    return {m: sorted(groups[m], key=lambda r: r["seed"]) for m in ordered(groups)}


def ablation_runs(study: dict) -> dict[str, dict]:
    """{ablation: {"title", "param", "values": [labels in config order], "runs": [...]}}."""
    out: dict[str, dict] = {}
    for run in study["runs"]:
        name = run.get("ablation")
        if not name:
            continue
        entry = out.setdefault(name, {"title": run.get("ablation_title") or name, "param": run.get("param"),
                                      "values": [], "runs": []})
        if run["value"] not in entry["values"]:
            entry["values"].append(run["value"])
        entry["runs"].append(run)
    return out


def save(fig, out_dir: str | Path, model: str, name: str) -> list[Path]:
    """Write figures/<model>_<name>.png and .pdf (no timestamps, so reruns give the same bytes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{model}_{name}.png", out_dir / f"{model}_{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return paths


def panel_grid(n: int, cols: int, width: float, height: float):
    """A figure of `n` panels (at least one) in rows of at most `cols`, each `width` x `height`
    inches: (figure, (rows, cols) array of axes)."""
    cols = max(1, min(cols, n))
    rows = -(-max(n, 1) // cols)
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


def empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, transform=ax.transAxes)
    ax.set_axis_off()
