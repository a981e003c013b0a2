"""Figure 2: the final results table (the papers' columns), mean ± 95% CI over seeds."""

from __future__ import annotations

import matplotlib.pyplot as plt

from seqedit.analysis.ci import fmt_ci, mean_ci
from seqedit.figures.common import METRIC_LABEL, label, main_runs, save

COLUMNS = ["efficacy", "generalization", "specificity", "fluency", "score", "consistency",
           "efficacy_gen", "generalization_gen", "specificity_gen", "perplexity", "heldout_accuracy"]
UNEDITED = "Unedited model"
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


def before_editing(study: dict, metrics: list[str]) -> dict | None:
    """The unedited model on each seed's stream, from the curves' first point (taken before any
    edit, on the first k records of the stream; every method of a seed edits the same stream, so
    one run per seed): {"values": {metric: (m, h, n)}, "n_records": k, "n_seeds", "n_edits"}.
    None without such a point."""
    runs = [r for rs in main_runs(study).values() for r in rs]
    first: dict[int, dict] = {}
    for r in runs:
        points = r.get("points") or []
        if points and points[0].get("n_edits") == 0:
            first.setdefault(r["seed"], points[0])
    if not first:
        return None
    n = runs[0]["n_edits"]
    k = min(n, study.get("setup", {}).get("run", {}).get("curve_max_records", n))
    return {"values": {c: mean_ci(p.get(c) for p in first.values()) for c in metrics}, "n_records": k,
            "n_seeds": len(first), "n_edits": n}


def table(study: dict) -> dict:
    """{"columns": [...], "rows": [[method, "m ± h", ...], ..., ["Unedited model", ...]],
    "values": {method: {metric: (m, h, n)}}, "before": `before_editing` (or None),
    "note": the consistency column's source and what the unedited row covers (or None)}."""
    groups = main_runs(study)
    present = [c for c in COLUMNS if any(r["final"].get(c) is not None for rs in groups.values() for r in rs)]
    values = {m: {c: mean_ci(r["final"].get(c) for r in rs) for c in present} for m, rs in groups.items()}
    rows = [[label(m)] + [fmt_ci(*values[m][c][:2]) for c in present] + [str(len(groups[m]))] for m in groups]
    notes = [consistency_note(study)]
    # efficacy far from 0 before any edit (ZsRE's token accuracy) is what an edit must beat
    before = before_editing(study, present)
    if before:
        rows.append([UNEDITED] + [fmt_ci(*before["values"][c][:2]) for c in present] + [str(before["n_seeds"])])
        notes.append(f"{UNEDITED}: the model before any edit, on the first {before['n_records']} records of each "
                     f"seed's stream (the methods' rows: all {before['n_edits']} edited records, after the last edit).")
    return {"columns": ["Method"] + [METRIC_LABEL.get(c, c) for c in present] + ["Seeds"], "rows": rows,
            "metrics": present, "values": values, "before": before,
            "note": " ".join(x for x in notes if x) or None}


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
