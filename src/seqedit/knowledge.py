"""Does the unedited model know the facts it is about to have rewritten?

For each record to be edited: P(true) > P(new) on the rewrite prompt and on each paraphrase
prompt, and on each neighborhood prompt (whose correct answer is the true target). For ZsRE
records the neighborhood is an unrelated question, checked by teacher-forced token accuracy
of its gold answer. Editing a fact the model never knew measures nothing, so the workflow
stops when the known fractions fall below the configured thresholds.

For a pretrained model, which knows only part of a benchmark, `known_records` keeps the records
it knows instead: those where it prefers the true object over the new one on the rewrite prompt
(mean token NLL, scored as the CounterFact evaluation scores efficacy).
"""

from __future__ import annotations

from dataclasses import asdict, replace

from seqedit.config import KnowledgeCheckConfig
from seqedit.data.records import EditRecord


def check_knowledge(model, tokenizer, records: list[EditRecord], thresholds: KnowledgeCheckConfig, batch_size: int = 64) -> dict:
    from seqedit.evaluate.counterfact import evaluate_counterfact
    from seqedit.evaluate.zsre import evaluate_zsre

    missing = [r.case_id for r in records if r.request.target_true is None]
    if missing:
        raise ValueError(f"the knowledge check needs a true target; records without one: {missing[:10]}")
    kind = records[0].kind
    as_cf = [replace(r, kind="counterfact", neighborhood_prompts=r.neighborhood_prompts if kind == "counterfact" else ())
             for r in records]
    cf = evaluate_counterfact(model, tokenizer, as_cf, batch_size=batch_size)["per_record"]
    n_para = sum(len(r.paraphrase_prompts) for r in records)
    known = {
        # success means P(new) > P(true), so "known" is its complement
        "rewrite": sum(1 - p["rewrite_success"] for p in cf) / len(cf),
        "paraphrase": sum((1 - p["paraphrase_success"]) * len(r.paraphrase_prompts) for p, r in zip(cf, records)) / max(1, n_para),
    }
    if kind == "counterfact":
        n_nb = sum(len(r.neighborhood_prompts) for r in records)
        known["neighborhood"] = sum(p["neighborhood_success"] * len(r.neighborhood_prompts) for p, r in zip(cf, records)) / max(1, n_nb)
    else:
        known["neighborhood"] = evaluate_zsre(model, tokenizer, records, batch_size=batch_size)["summary"]["specificity"] / 100
    limits = asdict(thresholds)
    failed = {k: v for k, v in known.items() if v < limits[k]}
    message = ", ".join(f"{k} {100 * v:.1f}% (need {100 * limits[k]:.0f}%)" for k, v in known.items())
    return {
        "passed": not failed, "known": known, "thresholds": limits, "n_records": len(records),
        "message": ("knowledge check passed: " if not failed else "knowledge check FAILED: ") + message,
    }


def known_records(model, tokenizer, records: list[EditRecord], batch_size: int = 64,
                  progress: bool = False) -> tuple[list[bool], list[dict]]:
    """Per record, whether the unedited model knows it (NLL of target_true < NLL of target_new on
    the rewrite prompt), and the two NLLs. Only the rewrite prompts are scored."""
    from seqedit.evaluate.counterfact import evaluate_counterfact

    missing = [r.case_id for r in records if r.request.target_true is None]
    if missing:
        raise ValueError(f"telling known records needs a true target; records without one: {missing[:10]}")
    rewrite_only = [replace(r, kind="counterfact", paraphrase_prompts=(), neighborhood_prompts=()) for r in records]
    per_record = evaluate_counterfact(model, tokenizer, rewrite_only, batch_size=batch_size, progress=progress)["per_record"]
    # efficacy's rewrite_success is 1[NLL_true > NLL_new]; a known record is its complement (a tie is not known)
    known = [p["nll_true"]["rewrite"][0] < p["nll_new"]["rewrite"][0] for p in per_record]
    scores = [{"case_id": p["case_id"], "nll_true": p["nll_true"]["rewrite"][0], "nll_new": p["nll_new"]["rewrite"][0]}
              for p in per_record]
    return known, scores
