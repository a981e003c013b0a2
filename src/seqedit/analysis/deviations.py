"""Deviations of a study from the papers' protocols, read from its configuration.

Each row names one aspect of the setup, what the papers did, what this study did, and whether
the two differ. The papers' side is the fixed protocol of NSE, AlphaEdit and the MEMIT/ROME
reference code (`PAPER`), and the papers' per-model hyperparameter files shipped under
`config/hparams/<method>/<paper model>.yaml`; this study's side comes from the study file (model,
stream, evaluation, each method's resolved hyperparameters) and the statistics stage config.
Nothing here is hand-written per study: a changed config changes the table.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# The hyperparameter files of the papers' models (config/hparams/<method>/<name>.yaml).
PAPER_MODELS = ("gpt2-xl", "gpt-j-6b", "llama3-8b")
# The papers' setup (design notes: editing_methods.md §2, §6, kne_nmke.md §2-3).
PAPER = {
    "models": "GPT2-XL, GPT-J-6B, Llama3-8B-Instruct",
    "dtype": "float32",
    "n_edits": 2000,
    "batch_size": 100,
    "stats": "Wikipedia (20200501.en), 100,000 texts, each truncated at the model's context length",
    "stats_n_samples": 100_000,
    "kn_steps": 20,
    "nmke_batch_size": 1,
    "records": "the first 2000 records of MEMIT's multi_counterfact.json (or zsRE), whether the model knows them or not",
}
# Settings that change no number a method computes (bookkeeping, informational or unused keys).
IGNORED_HPARAMS = {"v_loss_layer", "progress"}


def _fmt(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _stats_here(stats: dict | None) -> str | None:
    if not stats:
        return None
    source = stats.get("source", "corpus")
    where = {"corpus": "the world's corpus", "generated": "the unedited model's own seeded generations"}.get(source)
    if source == "dataset":
        ds = stats.get("dataset") or {}
        where = f"dataset {ds.get('path', '?')}" + (f" ({ds['name']})" if ds.get("name") else "")
    return f"{where}, {stats.get('n_samples')} texts of at most {stats.get('max_length')} tokens"


def hparam_differences(here: dict, paper: dict) -> list[str]:
    """'key: paper → here' for each setting both define with different values."""
    out = []
    for key in sorted(set(here) & set(paper) - IGNORED_HPARAMS):
        if here[key] != paper[key]:
            out.append(f"{key}: {_fmt(paper[key])} → {_fmt(here[key])}")
    return out


def paper_hparams(hparams_dir: str | Path, method: str, model: str) -> dict | None:
    path = Path(hparams_dir) / method / f"{model}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def deviations(study: dict, stats: dict | None = None, hparams_dir: str | Path | None = None,
               hparams_model: str | None = None, known: dict | None = None) -> list[dict]:
    """[{aspect, papers, here, deviates}] for `study` (a study.json), `stats` (the `stats` section
    of the statistics stage config), `known` (the known-records counts, when the streams were
    drawn from the records the model knows) and, under `hparams_dir`, the papers' hyperparameter
    files of `hparams_model` where it is one of the papers' models, else of Llama3-8B
    (hyperparameter rows only where those files exist)."""
    paper_model = hparams_model if hparams_model in PAPER_MODELS else "llama3-8b"
    setup = study["setup"]
    model, run = setup.get("model", {}), setup.get("run", {})
    methods = setup.get("methods", [])
    rows = []

    def row(aspect, papers, here, deviates):
        rows.append({"aspect": aspect, "papers": papers, "here": here, "deviates": bool(deviates)})

    name = model.get("name", "?")
    row("Model", PAPER["models"], f"{name}" + (f" ({model['path']})" if model.get("path") else ""),
        name not in PAPER_MODELS)
    dtype = model.get("dtype", "float32")
    row("Weights and edits dtype", PAPER["dtype"], dtype, dtype != PAPER["dtype"])
    n, b = run.get("n_edits"), run.get("batch_size")
    row("Edit stream", f"{PAPER['n_edits']} edits in batches of {PAPER['batch_size']} (NSE, AlphaEdit, MEMIT rows)",
        f"{n} edits in batches of {b}", (n, b) != (PAPER["n_edits"], PAPER["batch_size"]))
    if known is not None:
        row("Records edited", PAPER["records"],
            f"seeded streams from the {known['known']} of {known['tried']} records the unedited model knows "
            "(true object preferred on the rewrite prompt)", True)
    here = _stats_here(stats)
    if here is not None:
        row("Layer statistics E[kkᵀ]", PAPER["stats"], here,
            stats.get("source") != "dataset" or stats.get("n_samples") != PAPER["stats_n_samples"])
    if "nmke" in methods:
        row("NMKE's mask", f"one request per batch (lifelong protocol, batch size {PAPER['nmke_batch_size']})",
            f"attribution pooled over the {b} requests of each batch" if b and b > 1 else "one request per batch",
            bool(b) and b > PAPER["nmke_batch_size"])
    if "kn" in methods:
        steps = setup.get("hparams", {}).get("kn", {}).get("steps")
        row("KN integrated-gradient steps", str(PAPER["kn_steps"]), _fmt(steps), steps != PAPER["kn_steps"])
    if "kne" in methods:
        row("KNE", "no public code", "reconstruction from the paper's text; its open choices are config keys "
            "(config/hparams/kne)", True)
    if hparams_dir is not None:
        for method in methods:
            paper = paper_hparams(hparams_dir, method, paper_model)
            if paper is None:
                continue
            diffs = hparam_differences(setup.get("hparams", {}).get(method, {}), paper)
            row(f"{method} hyperparameters", f"{paper_model} file", "; ".join(diffs) if diffs else "the same", diffs)
    return rows
