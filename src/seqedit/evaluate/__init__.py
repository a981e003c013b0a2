"""Evaluation of an (edited) model on edit records: one metric family per module.

- `counterfact.py`: efficacy / generalization / specificity by NLL comparison, *_acc, score;
- `zsre.py`: teacher-forced token accuracy;
- `fluency.py`: n-gram entropy of top-k sampled generations;
- `consistency.py`: TF-IDF similarity of those generations to texts about the new object;
- `packed.py`: the batched teacher-forced scorer, each prompt once for all its targets;
- `scoring.py`: the reference scorer, one row per (prompt, target) pair;
- `hidden.py`: the final hidden states of the probe prompts;
- `generation.py`: success of greedy continuations (no target given);
- `capability.py`: held-out perplexity, held-out known facts, matrix norms.

`evaluate_records` picks the family from the records' `kind`.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from seqedit.data.records import EditRecord
from seqedit.evaluate.consistency import ConsistencyScorer, build_scorer
from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.evaluate.fluency import evaluate_fluency, generate, ngram_entropy, word_tokenize
from seqedit.evaluate.capability import CapabilityProbe
from seqedit.evaluate.generation import evaluate_generation
from seqedit.evaluate.packed import DEFAULT_TOKEN_BUDGET
from seqedit.evaluate.zsre import evaluate_zsre

__all__ = [
    "evaluate_records",
    "evaluate_counterfact",
    "evaluate_zsre",
    "evaluate_fluency",
    "evaluate_generation",
    "prepare_evaluation",
    "generate",
    "ngram_entropy",
    "word_tokenize",
]

# Same defaults as `evaluation.generation` in workflow/schemas/config.schema.yaml.
GENERATION_DEFAULTS = {"n_records": 20, "n_prompts": 2, "max_length": 40, "top_k": 5, "seed": 0}


# Same default as `evaluation.generation_success` in the schema: records per evaluation whose
# prompts are continued greedily (0 = off, None = all).
GENERATION_SUCCESS_DEFAULTS = {"n_records": 10}

EVALUATION_KEYS = ("batch_size", "token_budget", "reference", "hidden_probe", "capability", "consistency",
                   "generation", "generation_success", "progress")


def _check_keys(cfg: dict) -> None:
    unknown = set(cfg) - set(EVALUATION_KEYS)
    if unknown:
        raise ValueError(f"unknown evaluation config keys {sorted(unknown)}; known: {', '.join(EVALUATION_KEYS)}")
    gen_unknown = set(cfg.get("generation") or {}) - set(GENERATION_DEFAULTS)
    if gen_unknown:
        raise ValueError(f"unknown generation config keys {sorted(gen_unknown)}; known: {sorted(GENERATION_DEFAULTS)}")
    gs_unknown = set(cfg.get("generation_success") or {}) - set(GENERATION_SUCCESS_DEFAULTS)
    if gs_unknown:
        raise ValueError(f"unknown generation_success config keys {sorted(gs_unknown)}; "
                         f"known: {sorted(GENERATION_SUCCESS_DEFAULTS)}")


def _with_probes(model, tokenizer, records: Sequence[EditRecord], cfg: dict, result: dict) -> dict:
    """`result` with the generation-based success of the first `generation_success.n_records`
    records and, when `cfg["capability"]` is a built `CapabilityProbe`, its numbers."""
    batch_size = int(cfg.get("batch_size", 64))
    n = {**GENERATION_SUCCESS_DEFAULTS, **(cfg.get("generation_success") or {})}["n_records"]
    if n is None or n > 0:
        subset = list(records) if n is None else list(records[: int(n)])
        gen = evaluate_generation(model, tokenizer, subset, batch_size=batch_size)
        result["summary"].update(gen["summary"])
        for entry, g in zip(result["per_record"], gen["per_record"]):
            entry.update({k: v for k, v in g.items() if k != "case_id"})
    if isinstance(cfg.get("capability"), CapabilityProbe):
        result["summary"].update(cfg["capability"].evaluate(model, tokenizer, batch_size))
    return result


def _generates(cfg: dict, records: Sequence[EditRecord]) -> bool:
    gen = {**GENERATION_DEFAULTS, **(cfg.get("generation") or {})}
    return gen["n_records"] > 0 and bool(records) and all(r.kind == "counterfact" for r in records)


def prepare_evaluation(cfg: dict | None, records: Sequence[EditRecord]) -> dict:
    """`cfg` with `consistency` built once into a `ConsistencyScorer` (None where nothing is
    generated or nothing can be compared), for evaluating many subsets of `records`: the
    attribute prompts of all `records` (not of each subset) then give the reference texts and idf."""
    cfg = dict(cfg or {})
    _check_keys(cfg)
    consistency = cfg.get("consistency")
    if not isinstance(consistency, ConsistencyScorer):
        cfg["consistency"] = build_scorer(consistency, records) if _generates(cfg, records) else None
    return cfg


def evaluate_records(model: nn.Module, tokenizer, records: Sequence[EditRecord], cfg: dict | None = None) -> dict:
    """Evaluate `model` on `records` of one kind: {"summary": {...}, "per_record": [...]}.

    cfg keys: `token_budget` (padded tokens per forward pass, default `packed.DEFAULT_TOKEN_BUDGET`),
    `reference` (score with the reference scorer, `batch_size` rows per pass, default 64),
    `hidden_probe` (n: also return "hidden", the probe states of the first n records, read
    from the scoring passes; not with `reference`), `progress` (CounterFact progress bar), `generation`, a
    dict with `n_records`, `n_prompts`, `max_length`, `top_k`, `seed` (defaults in
    GENERATION_DEFAULTS; n_records 0 disables it), and `consistency`: the files of
    `consistency.ConsistencyConfig` (a dict, or None for the attribute prompts of `records`) or
    a scorer from `prepare_evaluation`. For CounterFact with generation enabled the summary
    gains `fluency` (×100 n-gram entropy) and, where reference texts exist, `consistency` (×100
    TF-IDF cosine) with `consistency_source`, and the generating records' entries gain their
    `consistency`; ZsRE has no fluency metric. Both kinds gain `efficacy_gen`, `generalization_gen`,
    `specificity_gen` (greedy continuations, `generation.py`) on the first
    `generation_success.n_records` records, and, with `capability` a `capability.CapabilityProbe`
    (built by the caller with the unedited model; a plain mapping is not evaluated), `perplexity`
    and `heldout_accuracy`.
    """
    cfg = dict(cfg or {})
    if not records:
        raise ValueError("evaluate_records got no records")
    kinds = sorted({r.kind for r in records})
    if len(kinds) > 1:
        raise ValueError(f"records mix kinds {kinds}; evaluate each kind separately")
    _check_keys(cfg)
    scoring = dict(batch_size=int(cfg.get("batch_size", 64)), reference=bool(cfg.get("reference", False)),
                   token_budget=int(cfg.get("token_budget", DEFAULT_TOKEN_BUDGET)),
                   hidden_probe=int(cfg.get("hidden_probe", 0)))
    gen = {**GENERATION_DEFAULTS, **(cfg.get("generation") or {})}

    kind = kinds[0]
    if kind == "counterfact":
        result = evaluate_counterfact(model, tokenizer, records, progress=bool(cfg.get("progress")), **scoring)
        if gen["n_records"] > 0:
            flu = evaluate_fluency(model, tokenizer, records, **gen)
            result["summary"]["fluency"] = flu["fluency"]
            scorer = prepare_evaluation(cfg, records)["consistency"]
            if scorer is not None:
                cons = scorer.score(records[: gen["n_records"]], flu["texts_per_record"])
                result["summary"]["consistency"] = cons["consistency"]
                result["summary"]["consistency_source"] = scorer.source
                for entry, value in zip(result["per_record"], cons["per_record"]):
                    entry["consistency"] = value
        return _with_probes(model, tokenizer, records, cfg, result)
    if kind == "zsre":
        return _with_probes(model, tokenizer, records, cfg, evaluate_zsre(model, tokenizer, records, **scoring))
    raise ValueError(f"unknown record kind {kind!r}; expected 'counterfact' or 'zsre'")
