"""Figure 2: the final results table (the papers' columns), mean ± 95% CI over seeds."""

from __future__ import annotations

import matplotlib.pyplot as plt

from seqedit.analysis.ci import fmt_ci, mean_ci
from seqedit.figures.common import METRIC_LABEL, label, main_runs, save

COLUMNS = ["efficacy", "generalization", "specificity", "fluency", "score", "consistency"]
# What the consistency column compares the generations with (metrics.json: final.consistency_source).
CONSISTENCY_SOURCES = {
    "configured": "ROME's attribute snippets of the new object, with its idf and vocabulary",
    "fitted-on-snippets": "ROME's attribute snippets of the new object, idf fitted on the snippets",
    "attribute-prompts": "the records' attribute prompts completed with the new object (no snippets configured; "
                         "idf fitted on those texts)",
}


def consistency_note(study: dict) -> str | None:
    """One sentence naming the reference texts of the consistency column; None without the column."""
    sources = sorted({r["final"].get("consistency_source") for rs in main_runs(study).values() for r in rs
                      if r["final"].get("consistency") is not None} - {None})
    if not sources:
        return None
    return ("Consistency: TF-IDF cosine (×100) of each record's generations and "
            + "; ".join(CONSISTENCY_SOURCES.get(s, s) for s in sources) + ".")


def table(study: dict) -> dict:
    """{"columns": [...], "rows": [[method, "m ± h", ...]], "values": {method: {metric: (m, h, n)}},
    "note": the consistency column's source (or None)}."""
    groups = main_runs(study)
    present = [c for c in COLUMNS if any(r["final"].get(c) is not None for rs in groups.values() for r in rs)]
    values = {m: {c: mean_ci(r["final"].get(c) for r in rs) for c in present} for m, rs in groups.items()}
    rows = [[label(m)] + [fmt_ci(*values[m][c][:2]) for c in present] + [str(len(groups[m]))] for m in groups]
    return {"columns": ["Method"] + [METRIC_LABEL.get(c, c) for c in present] + ["Seeds"], "rows": rows,
            "metrics": present, "values": values, "note": consistency_note(study)}


def plot(study: dict, out_dir, model: str):
    t = table(study)
    fig, ax = plt.subplots(figsize=(1.6 * len(t["columns"]) + 1, 0.45 * len(t["rows"]) + 1.2))
    ax.set_axis_off()
    tab = ax.table(cellText=t["rows"], colLabels=t["columns"], loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    tab.scale(1, 1.4)
    for (row, _), cell in tab.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
    n = study["runs"][0]["n_edits"] if study["runs"] else 0
    ax.set_title(f"After {n} sequential edits (mean ± 95% CI over seeds)", fontsize=10)
    if t["note"]:
        fig.text(0.5, 0.01, t["note"], ha="center", va="bottom", fontsize=7, wrap=True)
    return save(fig, out_dir, model, "results_table")
