"""CounterFact metrics: efficacy, generalization, specificity (ROME/MEMIT definitions).

Design notes §5.1. For every prompt x of a record (the rewrite query, its paraphrases and
its neighborhood prompts) the mean per-token NLL of x + " " + target_new and of
x + " " + target_true is computed teacher-forced; all prompts of all records, times two
targets, go through the model in batches: by default each prompt once for both targets
(`packed.score_prompts`, batches of at most `token_budget` tokens), or, with
`reference=True`, one row per (prompt, target) pair (`scoring.score_targets`, `batch_size`
rows per batch); both give the same numbers up to float round-off.

Per record (each a mean over that record's prompts of a kind):
- rewrite_success = 1[NLL_true > NLL_new], rewrite_diff = exp(-NLL_new) - exp(-NLL_true);
- paraphrase_success / paraphrase_diff: the same on paraphrase prompts;
- neighborhood_success = 1[NLL_true < NLL_new], neighborhood_diff = exp(-NLL_true) - exp(-NLL_new);
- rewrite_acc / paraphrase_acc: every token of target_new is the argmax;
  neighborhood_acc: every token of target_true is the argmax.

The summary averages over records and multiplies by 100; `score` is the harmonic mean
of efficacy, generalization and specificity. A record without paraphrase (or
neighborhood) prompts has None for those numbers and is left out of that mean.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from torch import nn

from seqedit.data.records import EditRecord
from seqedit.evaluate.hidden import PROBES, hidden_probe_prompts
from seqedit.evaluate.packed import DEFAULT_TOKEN_BUDGET, score_prompts
from seqedit.evaluate.scoring import TargetScore, score_targets

KINDS = ("rewrite", "paraphrase", "neighborhood")


def _prompts_of(record: EditRecord) -> dict[str, list[str]]:
    return {
        "rewrite": [record.request.query],
        "paraphrase": list(record.paraphrase_prompts),
        "neighborhood": list(record.neighborhood_prompts),
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _record_metrics(pairs: dict[str, list[tuple[TargetScore, TargetScore]]]) -> dict[str, float | None]:
    """Per-record numbers from (new, true) score pairs for each prompt kind."""
    out: dict[str, float | None] = {}
    for kind in ("rewrite", "paraphrase"):
        ps = pairs[kind]
        out[f"{kind}_success"] = _mean([float(true.nll > new.nll) for new, true in ps])
        out[f"{kind}_diff"] = _mean([math.exp(-new.nll) - math.exp(-true.nll) for new, true in ps])
        out[f"{kind}_acc"] = _mean([float(new.all_correct) for new, _ in ps])
    ps = pairs["neighborhood"]
    out["neighborhood_success"] = _mean([float(true.nll < new.nll) for new, true in ps])
    out["neighborhood_diff"] = _mean([math.exp(-true.nll) - math.exp(-new.nll) for new, true in ps])
    out["neighborhood_acc"] = _mean([float(true.all_correct) for _, true in ps])
    return out


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (or negative)."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _summary_mean(per_record: list[dict], key: str) -> float | None:
    """100 × mean over records that have `key`; None when no record has it."""
    mean = _mean([r[key] for r in per_record if r[key] is not None])
    return None if mean is None else 100.0 * mean


def summarize_counterfact(per_record: list[dict]) -> dict:
    """Summary numbers (×100) from `evaluate_counterfact`'s per-record entries."""
    s = {
        "efficacy": _summary_mean(per_record, "rewrite_success"),
        "efficacy_magnitude": _summary_mean(per_record, "rewrite_diff"),
        "generalization": _summary_mean(per_record, "paraphrase_success"),
        "generalization_magnitude": _summary_mean(per_record, "paraphrase_diff"),
        "specificity": _summary_mean(per_record, "neighborhood_success"),
        "specificity_magnitude": _summary_mean(per_record, "neighborhood_diff"),
        "rewrite_acc": _summary_mean(per_record, "rewrite_acc"),
        "paraphrase_acc": _summary_mean(per_record, "paraphrase_acc"),
        "neighborhood_acc": _summary_mean(per_record, "neighborhood_acc"),
    }
    parts = [s["efficacy"], s["generalization"], s["specificity"]]
    s["score"] = None if any(p is None for p in parts) else harmonic_mean(parts)
    s["n_records"] = len(per_record)
    return s


def evaluate_counterfact(
    model: nn.Module,
    tokenizer,
    records: Sequence[EditRecord],
    batch_size: int = 64,
    progress: bool = False,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    reference: bool = False,
    hidden_probe: int = 0,
) -> dict:
    """CounterFact metrics of `model` on `records`: {"summary": {...}, "per_record": [...]}.

    Per-record entries hold `case_id`, the success / diff / acc numbers above, and the raw
    NLLs (`nll_new`, `nll_true`: dict kind -> list, one per prompt) for inspection. With
    `hidden_probe` n > 0 (not with `reference`) the result also holds "hidden": {"rewrite",
    "neighborhood"} -> (n, d_model) float32, the final hidden states at the last token of the
    probe prompts of the first n records, read from the same forward passes.
    """
    for r in records:
        if r.request.target_true is None:
            raise ValueError(
                f"case {r.case_id}: CounterFact evaluation requires a true target (target_true is None); "
                "ZsRE-style records are scored by evaluate_zsre"
            )
    if reference and hidden_probe:
        raise ValueError("hidden_probe needs the shared scorer; the reference scorer returns no hidden states")
    # Every prompt of every record, with its (new, true) targets.
    prompts, index = [], []  # index[j] = (record position, kind)
    for ri, r in enumerate(records):
        for kind, kind_prompts in _prompts_of(r).items():
            for p in kind_prompts:
                prompts.append(p)
                index.append((ri, kind))
    targets = [(records[ri].request.new_text, records[ri].request.true_text) for ri, _ in index]

    hidden = None
    if reference:
        flat = score_targets(model, tokenizer, [p for p in prompts for _ in range(2)],
                             [t for pair in targets for t in pair], batch_size, progress=progress, desc="counterfact")
        pair_scores = [(flat[j], flat[j + 1]) for j in range(0, len(flat), 2)]  # appended new-then-true
    else:
        probes = [hidden_probe_prompts(r) for r in records[:hidden_probe]]
        scores, states = score_prompts(model, tokenizer, prompts, targets, token_budget,
                                       hidden_of={p for pair in probes for p in pair}, progress=progress,
                                       desc="counterfact")
        pair_scores = [(new, true) for new, true in scores]
        if hidden_probe:
            hidden = {name: np.stack([states[pair[k]] for pair in probes]) for k, name in enumerate(PROBES)}

    grouped: list[dict[str, list]] = [{k: [] for k in KINDS} for _ in records]
    for (ri, kind), pair in zip(index, pair_scores):
        grouped[ri][kind].append(pair)

    per_record = []
    for r, pairs in zip(records, grouped):
        entry = {"case_id": r.case_id, **_record_metrics(pairs)}
        entry["nll_new"] = {k: [new.nll for new, _ in pairs[k]] for k in KINDS}
        entry["nll_true"] = {k: [true.nll for _, true in pairs[k]] for k in KINDS}
        per_record.append(entry)
    result = {"summary": summarize_counterfact(per_record), "per_record": per_record}
    if hidden is not None:
        result["hidden"] = hidden
    return result
