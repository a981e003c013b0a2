"""The report's content: the study file, figures, captions and claims turned into a render spec.

`build_spec` returns the dict `render_report` renders to HTML and PDF: setup, methods (one
line each, from the registry; KNE marked as a reconstruction), every figure with its caption, the
results, matched-control, ablation, hidden-shift and cost tables, the numerics of the updates
(null-space dimensions, rounding loss below float32) where runs log them, the claims checklist,
and provenance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from seqedit.analysis.claims import checklist
from seqedit.analysis.labels import METHOD_DESCRIPTION
from seqedit.figures import ablations, cost, hidden_shift, results_table
from seqedit.figures.common import label, main_runs

FIGURE_ORDER = ["edit_curves", "results_table", "ablations", "drift", "hidden_shift", "neurons", "cost"]
# Figures of the unedited model, drawn by their own rules when the config asks for them.
MODEL_FIGURES = ["tracing"]
SECTION_OF = {"edit_curves": "Results", "results_table": "Results", "ablations": "Ablations", "drift": "Model drift",
              "hidden_shift": "Hidden-state shift", "neurons": "Neurons", "cost": "Cost"}


def read_caption(path: Path) -> str:
    """A caption file's text on one line, reStructuredText literals made plain."""
    text = " ".join(path.read_text().split())
    return re.sub(r"``([^`]*)``", r"\1", text)


def _figure_name(path: Path) -> str:
    """The figure a file holds, by the name its stem ends with (figures/<study>_<name>.png, where the
    study is the model's name or the model's name and a tag); the stem itself when none matches."""
    stem = path.stem
    for name in sorted(FIGURE_ORDER, key=len, reverse=True):
        if stem == name or stem.endswith("_" + name):
            return name
    return stem


def _model_origin(model: dict, prepared: dict | None) -> str:
    """Where the edited model came from: model.path, the source a prepared model's provenance.json
    names, or the testbed the workflow trains."""
    if model.get("path"):
        return model["path"]
    if prepared is None:
        return "the testbed GPT-2 trained by the workflow"
    source, gguf, size = prepared.get("source", {}), prepared.get("gguf", {}), prepared.get("model", {})
    if source.get("kind") == "wheel":
        origin = f"{gguf.get('file', source.get('file'))} from the {source['package']} {source['version']} wheel"
    else:
        origin = str(gguf.get("file") or source.get("path"))
    params = f", {size['n_parameters'] / 1e6:.1f} M parameters" if size.get("n_parameters") else ""
    return f"prepared from {origin}, {prepared.get('conversion', 'as loaded')}{params}"


def _hparam_summary(hp: dict) -> str:
    keep = {k: v for k, v in hp.items() if not isinstance(v, (dict, list)) or k == "layers"}
    return ", ".join(f"{k}={v}" for k, v in keep.items())


def _variant_name(run: dict) -> str:
    return label(run["method"]) + ("" if run["variant"] == "main" else f" ({run['variant']})")


def controls_table(study: dict) -> dict | None:
    """Final metrics of the matched controls beside the runs they match (mean over seeds)."""
    runs = [r for r in study["runs"] if r.get("control")]
    if not runs:
        return None
    metrics = ["efficacy", "generalization", "specificity"]
    rows = []
    for name in dict.fromkeys(r["control"] for r in runs):
        group = [r for r in runs if r["control"] == name]
        title = group[0].get("ablation_title") or name
        rows.append([f"{label(group[0]['method'])}: {title}", str(len(group))]
                    + [_mean(r["final"].get(m) for r in group) for m in metrics])
    return {"columns": ["Control", "Seeds", *[m.capitalize() for m in metrics]], "rows": rows}


def _mean(values) -> str:
    values = [v for v in values if v is not None]
    return f"{sum(values) / len(values):.1f}" if values else "–"


def numerics_blocks(study: dict) -> list[dict]:
    """What the runs log about their updates' numerics, only where they log it: the null-space
    dimension per layer (AlphaEdit, NMKE; a degenerate projector named), and the share of each
    update lost to rounding in weights below float32."""
    blocks = []
    rows = []
    for r in study["runs"]:
        info = next((x for x in r.get("rounds", []) if x.get("null_space_dim")), None)
        if info is None or r["seed"] != min(x["seed"] for x in study["runs"] if x["method"] == r["method"]
                                            and x["variant"] == r["variant"]):
            continue
        dims, d = info["null_space_dim"], info.get("key_dim")
        degenerate = [f"layer {l}: {'rank 0 (no direction kept)' if m == 0 else 'all directions (P = I, nothing protected)'}"
                      for l, m in dims.items() if m == 0 or (d is not None and m == d)]
        rows.append([_variant_name(r), ", ".join(f"{l}: {m}" + (f" / {d}" if d else "") for l, m in dims.items()),
                     "; ".join(degenerate) or "none"])
    if rows:
        blocks.append({"type": "table", "caption": "Null-space dimension per layer (rank of the projector P; first seed)",
                       "columns": ["Run", "Kept directions per layer", "Degenerate projector"], "rows": rows})
    rows = []
    for r in study["runs"]:
        ratios = [x["rounding"] for x in r.get("rounds", []) if x.get("rounding")]
        if ratios:
            layers = list(ratios[0])
            rows.append([f"{_variant_name(r)}, seed {r['seed']}", ", ".join(
                f"{l}: {sum(x[l] for x in ratios) / len(ratios):.3g} (max {max(x[l] for x in ratios):.3g})" for l in layers)])
    if rows:
        blocks.append({"type": "table", "caption": (
            "Update lost to rounding in weights below float32: ‖applied − computed‖ / ‖computed‖ per layer, "
            "mean (max) over rounds; the applied update is the change of the stored weight"),
            "columns": ["Run", "Per layer"], "rows": rows})
    return blocks


def known_paragraph(known: dict) -> str:
    """The records the unedited pretrained model knows, from which every seed's stream is drawn."""
    return (f"Records the unedited model knows (it prefers the true object over the new one on the rewrite prompt): "
            f"{known['known']} of {known['tried']} tried ({100 * known['known_fraction']:.1f} %); every seed's "
            f"stream is drawn from these.")


def deviations_section(rows: list[dict] | None) -> list[dict]:
    """The "Deviations from the papers' protocols" section (analysis/deviations.py), when given."""
    if rows is None:
        return []
    n = sum(r["deviates"] for r in rows)
    text = (f"{n} of {len(rows)} aspects of this study's setup differ from the papers' protocols (NSE, AlphaEdit and "
            "the MEMIT/ROME reference code). Every row is read from the study's configuration; the verdicts of the "
            "claims checklist hold for this setup, not for the papers'.")
    return [{"heading": "Deviations from the papers' protocols", "blocks": [
        {"type": "paragraph", "text": text},
        {"type": "table", "caption": "Deviations from the papers' protocols",
         "columns": ["Aspect", "Papers", "This study", "Deviates"],
         "rows": [[r["aspect"], r["papers"], r["here"], "yes" if r["deviates"] else "no"] for r in rows]}]}]


def tracing_blocks(tracing: dict, tracing_figure: str | Path, caption: str, setup: dict) -> list[dict]:
    """Causal tracing of the unedited model: the figure and the layers it suggests beside those edited."""
    c = tracing["counts"]
    edited = {m: setup["hparams"].get(m, {}).get("layers") for m in ("rome", "memit") if m in setup["hparams"]}
    used = "; ".join(f"{label(m)} edits {v}" for m, v in edited.items() if v is not None)
    skip = int(tracing.get("settings", {}).get("skip_layers") or 0)
    skipped = (f", among the layers whose restored window leaves out the first {skip} layer{'s' if skip > 1 else ''}"
               if skip else "")
    text = (f"Indirect effect of the {'MLP' if tracing.get('kind', 'mlp') == 'mlp' else 'block'} output at the "
            f"subject's last token on {c['traced']} known facts ({c['known']} known of the first {c['checked']} checked). "
            f"Peak at layer {tracing['peak_layer']} (ROME's layer){skipped}; MEMIT's window ending there: "
            f"{tracing['memit_layers']}." + (f" This study: {used}." if used else ""))
    return [{"type": "paragraph", "text": text},
            {"type": "figure", "path": str(tracing_figure), "caption": caption}]


def build_spec(study: dict, figures: list[str | Path], captions: list[str | Path] | None = None,
               knowledge_check: dict | None = None, known: dict | None = None,
               tracing: dict | None = None, tracing_figure: str | Path | None = None,
               deviations: list[dict] | None = None, prepared: dict | None = None) -> dict:
    setup = study["setup"]
    model = setup["model"].get("name", "model")
    run = setup["run"]
    figures = [Path(f) for f in figures]
    by_name = {_figure_name(f): f for f in figures}
    caption_text = {Path(c).stem: read_caption(Path(c)) for c in captions or []}
    missing = [n for n in FIGURE_ORDER if n not in by_name]
    if missing:
        raise ValueError(f"the report needs every figure; missing {missing} among {[str(f) for f in figures]}")

    def figure(name):
        return {"type": "figure", "path": str(by_name[name]), "caption": caption_text.get(name, name.replace("_", " "))}

    def table(t, caption, note=None):
        block = {"type": "table", "caption": caption, "columns": t["columns"], "rows": t["rows"]}
        if note:
            block["note"] = note
        return block

    groups = main_runs(study)
    n_reused = sum(1 for r in study["runs"] if r.get("reuses"))  # ablation arms that take a main run
    n_runs = len(study["runs"]) - n_reused
    setup_par = (
        f"Model: {model} ({_model_origin(setup['model'], prepared)}), "
        f"dtype {setup['model'].get('dtype', 'float32')} on {setup['model'].get('device', 'cpu')}. "
        f"Each run applies {run.get('n_edits')} edits in batches of {run.get('batch_size')} to one model without "
        f"restoring it, evaluating the records edited so far every {run.get('eval_every')} batches "
        f"(at most {run.get('curve_max_records')} records per point) and all of them at the end. "
        f"Main comparison: {len(groups)} methods × seeds {', '.join(map(str, setup['seeds']))}; "
        f"{'each seed edits its own seeded sample of the records' if run.get('shuffle', True) else 'every seed edits the first records of the file'}. "
        f"{n_runs} runs in all, ablations included"
        + (f"; {n_reused} ablation arm{'s state' if n_reused > 1 else ' states'} the method's own setting and "
           f"{'take' if n_reused > 1 else 'takes'} its main run of the same seed." if n_reused else ".")
    )
    setup_blocks = [{"type": "paragraph", "text": setup_par}]
    if knowledge_check:
        k = knowledge_check
        setup_blocks.append({"type": "paragraph", "text": (
            f"Knowledge check of the unedited model on the {k.get('n_records')} records the runs edit: "
            + ", ".join(f"{name} {100 * v:.1f}% (need {100 * k['thresholds'][name]:.0f}%)" for name, v in k["known"].items())
            + f" — {'passed' if k.get('passed') else 'FAILED'}.")})
    if known:
        setup_blocks.append({"type": "paragraph", "text": known_paragraph(known)})
    if (tracing is None) != (tracing_figure is None):
        raise ValueError("causal tracing in the report needs both the tracing file and its figure")
    tracing_section = [{"heading": "Causal tracing", "blocks": tracing_blocks(
        tracing, tracing_figure, caption_text.get("tracing", "causal tracing"), setup)}] if tracing else []
    setup_blocks.append({"type": "table", "caption": "Hyperparameters of the main comparison (the method's file for this model, overrides merged)",
                         "columns": ["Method", "Settings"],
                         "rows": [[label(m), _hparam_summary(setup["hparams"].get(m, {}))] for m in groups]})

    rt = results_table.table(study)
    hs = hidden_shift.shifts(study)
    hs_table = {"columns": ["Method", "Edited prompts", "Neighbourhood prompts"],
                "rows": [[label(m), f"{v['rewrite']:.3f}", f"{v['neighborhood']:.3f}"] for m, v in hs.items()]}
    claims = checklist(study)
    ct, nb = controls_table(study), numerics_blocks(study)
    controls = [{"heading": "Matched controls", "blocks": [
        table(ct, "Matched controls: a method run with another's settings, final metrics (mean over seeds)")]}] if ct else []
    numerics = [{"heading": "Numerics of the updates", "blocks": nb}] if nb else []
    prov = study["provenance"]
    sections = [
        {"heading": "Setup", "blocks": setup_blocks},
        *tracing_section,
        {"heading": "Methods", "blocks": [{"type": "bullets", "items": [METHOD_DESCRIPTION.get(m, m) for m in groups]}]},
        {"heading": "Results", "blocks": [
            figure("edit_curves"),
            table(rt, f"Final results after {run.get('n_edits')} sequential edits (mean ± 95% CI over seeds)",
                  note=rt["note"]),
            figure("results_table"),
        ]},
        *controls,
        {"heading": "Ablations", "blocks": [figure("ablations"),
                                            table(ablations.table(study), "Ablations: final metrics per value (mean ± 95% CI over the ablation seeds)")]},
        {"heading": "Model drift", "blocks": [figure("drift")]},
        {"heading": "Hidden-state shift", "blocks": [
            figure("hidden_shift"),
            table(hs_table, "Mean relative shift ‖h_after − h_before‖ / ‖h_before‖ of final-layer states (first seed)")]},
        {"heading": "Neurons", "blocks": [figure("neurons")]},
        *numerics,
        {"heading": "Cost", "blocks": [figure("cost"), table(cost.table(study), "Seconds per edit and peak memory (mean ± 95% CI over seeds)")]},
        {"heading": "Claims checklist", "blocks": [
            {"type": "paragraph", "text": (
                "Each headline claim of the papers, tested on this study's runs with paired seeds (both sides edit the same "
                "stream for a seed). holds: the 95% interval of the difference lies above 0; does not hold: below 0; "
                "inconclusive: it contains 0; with one seed only the sign is available (a tie is inconclusive). Claims on efficacy, "
                "generalization or specificity are tested again on the greedy generations (no target given), where "
                "the runs measured them. The claims were made for "
                "GPT2-XL, GPT-J and Llama3-8B on CounterFact and ZsRE; a verdict here is about this model and data.")},
            {"type": "table", "caption": "Claims checklist", "columns": [
                "Paper", "Claim", "Measured here (teacher-forced)", "Verdict", "Generated: measured", "Generated: verdict"],
             "rows": [[c["paper"], c["claim"], c["measured"], c["verdict"],
                       c.get("generated", {}).get("measured", "–"), c.get("generated", {}).get("verdict", "–")]
                      for c in claims]},
        ]},
        *deviations_section(deviations),
        {"heading": "Provenance", "blocks": [{"type": "code", "text": json.dumps({
            "git_commits": prov.get("commits"), "machines": prov.get("machines"), "git": prov.get("git"), "config_hash_of_first_run": prov.get("config_hash"),
            "versions": prov.get("versions"),
            "runs": [f"{r['method']}/{r['variant']}/seed~{r['seed']}: {r['provenance'].get('config_hash')}" for r in study["runs"]],
        }, indent=1)}]},
    ]
    return {"title": "Sequential knowledge editing: which method keeps the edits and the model?",
            "subtitle": f"{model}, {run.get('n_edits')} edits in batches of {run.get('batch_size')}, "
                        f"{len(groups)} methods, {len(setup['seeds'])} seed(s)",
            "sections": sections, "claims": claims}
