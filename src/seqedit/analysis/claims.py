"""The claims checklist: each headline claim of NSE, KNE and NMKE, tested on this study's runs.

A claim "A beats B on metric m" is tested on paired seeds (both methods edit the same stream
for a given seed): the mean difference and its 95% interval over seeds. Verdicts:
  holds          the interval lies above 0 (one seed: the difference is > 0; marked as such)
  does not hold  the interval lies below 0, or (one seed) the difference is < 0
  inconclusive   the interval contains 0, or (one seed) the two sides tie
  ... (no spread) every seed gave the same nonzero difference, so the t-interval has zero
                 width and says nothing about the uncertainty (a difference of one record out
                 of ten on each seed, say); the sign is reported, marked as such
  not tested     a method, control or ablation the claim needs is not in the study

"MEMIT" in a claim is plain MEMIT (`memit`, the papers' MEMIT row), not MEMIT-seq. NMKE's claims
are tested twice: against AlphaEdit with its own settings (the papers' comparison) and against
the matched control, AlphaEdit with NMKE's projector and ridge (a `controls` entry matching
nmke), so that the second isolates NMKE's mask. A claim on efficacy, generalization or
specificity is tested a second time on the generation-based metric (greedy continuation, no
target given) where the runs measured it, under the item's "generated".
"""

from __future__ import annotations

from seqedit.analysis.ci import mean_ci
from seqedit.analysis.labels import BASELINES, MAIN, METHOD_LABEL

LABEL = {**METHOD_LABEL, "kne": "KNE"}  # the claims name KNE as its paper does


def overall(final: dict) -> float | None:
    """The single-number summary: CounterFact's score (harmonic mean), else the mean accuracy."""
    if final.get("score") is not None:
        return final["score"]
    parts = [final.get(k) for k in ("efficacy", "generalization", "specificity")]
    return None if any(p is None for p in parts) else sum(parts) / 3


def _value(run: dict, metric: str):
    return overall(run["final"]) if metric == "overall" else run["final"].get(metric)


def _by_seed(runs: list[dict], metric: str) -> dict[int, float]:
    return {r["seed"]: _value(r, metric) for r in runs if _value(r, metric) is not None}


def compare(a_runs: list[dict], b_runs: list[dict], metric: str, a: str, b: str) -> dict:
    """Paired comparison of two groups of runs on one metric."""
    va, vb = _by_seed(a_runs, metric), _by_seed(b_runs, metric)
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return {"verdict": "not tested", "measured": f"no paired seeds of {a} and {b}"}
    diff, half, n = mean_ci(va[s] - vb[s] for s in seeds)
    ma, _, _ = mean_ci(va[s] for s in seeds)
    mb, _, _ = mean_ci(vb[s] for s in seeds)
    if half is None:
        verdict = "holds (1 seed)" if diff > 0 else "does not hold (1 seed)" if diff < 0 else "inconclusive (1 seed, a tie)"
        interval = ""
    elif half == 0 and diff != 0:
        verdict = "holds (no spread)" if diff > 0 else "does not hold (no spread)"
        interval = ", the same on every seed (a zero-width interval)"
    else:
        verdict = "holds" if diff - half > 0 else "does not hold" if diff + half < 0 else "inconclusive"
        interval = f", 95% CI [{diff - half:+.1f}, {diff + half:+.1f}]"
    name = "score" if metric == "overall" else metric
    measured = f"{name}: {a} {ma:.1f} vs {b} {mb:.1f}; difference {diff:+.1f}{interval} over {n} seed{'s' * (n > 1)}"
    return {"verdict": verdict, "measured": measured}


# The generation-based counterpart of each teacher-forced metric (evaluate/generation.py).
GENERATED = {"efficacy": "efficacy_gen", "generalization": "generalization_gen", "specificity": "specificity_gen"}


def paired(a_runs: list[dict], b_runs: list[dict], metric: str, a: str, b: str) -> dict:
    """`compare` on `metric` and, where both sides measured its generation-based counterpart,
    the same comparison on that one under "generated"."""
    res = compare(a_runs, b_runs, metric, a, b)
    gen = GENERATED.get(metric)
    if gen and _by_seed(a_runs, gen) and _by_seed(b_runs, gen):
        res["generated"] = compare(a_runs, b_runs, gen, a, b)
    return res


def _main(study: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in study["runs"]:
        if r["variant"] == MAIN:
            out.setdefault(r["method"], []).append(r)
    return out


PROJECTOR = ("threshold_mode", "l2")  # with the cut of the mode: what NMKE's matched control copies


def _same_projector(a: dict, b: dict) -> bool:
    """AlphaEdit-family hyperparameters with the same projector rule, cut and ridge."""
    if any(a.get(k) is None or a.get(k) != b.get(k) for k in PROJECTOR):
        return False
    cut = "nullspace_threshold" if a["threshold_mode"] == "absolute" else "nullspace_energy"
    return a.get(cut) is not None and a.get(cut) == b.get(cut)


def _controls(study: dict, method: str, match: str, main: dict) -> tuple[list[dict], bool]:
    """Runs of the matched control of `method` with `match`'s settings (the first such control),
    and whether they are `method`'s main runs: the workflow runs no control where the method's
    own settings already match (the same projector and ridge)."""
    runs = [r for r in study["runs"] if r.get("control") and r["method"] == method and r.get("match") == match]
    if runs:
        return [r for r in runs if r["control"] == runs[0]["control"]], False
    if method in main and match in main and _same_projector(main[method][0]["hparams"], main[match][0]["hparams"]):
        return main[method], True
    return [], False


def _ablation_pair(study: dict, method: str, param: str, on, off) -> tuple[list[dict], list[dict]] | None:
    """Runs of an ablation of `method` over `param` at values `on` and `off` (labels), if present."""
    runs = [r for r in study["runs"] if r.get("ablation") and r["method"] == method and r.get("param") == param]
    a = [r for r in runs if r["value"] == on]
    b = [r for r in runs if r["value"] == off]
    return (a, b) if a and b else None


def checklist(study: dict) -> list[dict]:
    """[{paper, claim, measured, verdict}] for every claim, tested or not."""
    main = _main(study)
    items = []

    def methods_claim(paper, claim, a, b, metric):
        if a not in main or b not in main:
            missing = [LABEL.get(m, m) for m in (a, b) if m not in main]
            res = {"verdict": "not tested", "measured": f"{', '.join(missing)} not in the main comparison"}
        else:
            res = paired(main[a], main[b], metric, LABEL[a], LABEL[b])
        items.append({"paper": paper, "claim": claim, **res})

    def ablation_claim(paper, claim, method, param, on, off, metric):
        pair = _ablation_pair(study, method, param, on, off)
        if pair is None:
            res = {"verdict": "not tested", "measured": f"no ablation of {LABEL[method]} over {param} with values {on} and {off}"}
        else:
            res = paired(pair[0], pair[1], metric, f"{param}={on}", f"{param}={off}")
        items.append({"paper": paper, "claim": claim, **res})

    methods_claim("NSE", "NSE keeps specificity where MEMIT (plain) collapses (higher specificity after the stream)",
                  "nse", "memit", "specificity")
    methods_claim("NSE", "NSE keeps its edits better than MEMIT (plain) (higher efficacy after the stream)", "nse", "memit",
                  "efficacy")
    methods_claim("NSE", "NSE outperforms AlphaEdit overall (score)", "nse", "alphaedit", "overall")
    ablation_claim("NSE", "Weights rewinding prevents model failure (specificity with rewinding > without)",
                   "nse", "rewind", "true", "false", "specificity")
    ablation_claim("NSE", "Neuron-level updates preserve unrelated knowledge (specificity, p = 0.8 vs all neurons p = 1.0)",
                   "nse", "neuron_threshold", "0.8", "1.0", "specificity")
    matched, own = _controls(study, "alphaedit", "nmke", main)

    def matched_claim(claim, metric):
        if "nmke" not in main or not matched:
            missing = (["NMKE"] if "nmke" not in main else []) + ([] if matched else ["the matched AlphaEdit control"])
            res = {"verdict": "not tested", "measured": f"{', '.join(missing)} not in the study"}
        else:
            res = paired(main["nmke"], matched, metric, "NMKE", "AlphaEdit (NMKE's projector and ridge)")
            if own:
                res["measured"] += " (AlphaEdit's own settings are NMKE's: its main runs are the control)"
        items.append({"paper": "NMKE", "claim": claim, **res})

    methods_claim("NMKE", "NMKE outperforms AlphaEdit in long sequences (score after the stream)", "nmke", "alphaedit", "overall")
    matched_claim("NMKE outperforms AlphaEdit in long sequences: matched control, mask only (score)", "overall")
    methods_claim("NMKE", "NMKE's sparse mask keeps specificity above AlphaEdit's", "nmke", "alphaedit", "specificity")
    matched_claim("NMKE's sparse mask keeps specificity above AlphaEdit's: matched control, mask only", "specificity")
    methods_claim("KNE", "KNE improves editing accuracy over knowledge neurons (efficacy, KNE vs KN)", "kne", "kn", "efficacy")
    best = None
    present = [b for b in BASELINES if b in main]
    if present:
        best = max(present, key=lambda b: mean_ci(r["final"].get("specificity") for r in main[b])[0] or -1)
    if "kne" in main and best:
        items.append({"paper": "KNE", "claim": "KNE matches or exceeds the best baseline in locality (specificity)",
                      **paired(main["kne"], main[best], "specificity", "KNE", f"best baseline {LABEL[best]}")})
    else:
        items.append({"paper": "KNE", "claim": "KNE matches or exceeds the best baseline in locality (specificity)",
                      "verdict": "not tested", "measured": "KNE or every baseline missing from the main comparison"})
    methods_claim("AlphaEdit", "Null-space projection preserves knowledge (AlphaEdit specificity > MEMIT, plain)",
                  "alphaedit", "memit", "specificity")
    return items
