"""ZsRE metrics: teacher-forced token-level top-1 accuracy (MEMIT `eval_utils_zsre`).

Design notes §5.2. For an answer with tokens t_1..t_m (of " " + answer), token i scores 1
when the argmax of the next-token distribution after prompt + t_<i is t_i. The reference
re-tokenises prompt + decode(t_<i) once per token; here prompt ids and answer ids are
concatenated, so one forward per row gives every position: by default through
`packed.score_prompts` (logits only at the answer's positions, batches of at most
`token_budget` tokens), with `reference=True` through `scoring.score_targets`.
This also avoids the reference's Llama quirk (an extra space before decoded prefixes).

- rewrite: `request.query` vs target_new (efficacy);
- paraphrase: each paraphrase prompt vs target_new (generalization);
- neighborhood: `neighborhood_prompts[0]` vs the gold `neighborhood_answer` (specificity),
  not the pre-edit prediction, which is why unedited models score only about 25–30 %.

Per record, a kind's value is the mean over all its answer tokens (tokens of several
paraphrases pooled, as the reference does); the summary is the mean over records ×100.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from seqedit.data.records import EditRecord
from seqedit.evaluate.hidden import PROBES, hidden_probe_prompts
from seqedit.evaluate.packed import DEFAULT_TOKEN_BUDGET, score_prompts
from seqedit.evaluate.scoring import score_targets

# summary name -> per-record key
SUMMARY_KEYS = {"efficacy": "rewrite_acc", "generalization": "paraphrase_acc", "specificity": "neighborhood_acc"}


def _rows_of(record: EditRecord) -> list[tuple[str, str, str]]:
    """(kind, prompt, answer text) rows scored for one record."""
    req = record.request
    rows = [("rewrite", req.query, req.new_text)]
    rows += [("paraphrase", p, req.new_text) for p in record.paraphrase_prompts]
    if record.neighborhood_prompts:
        if record.neighborhood_answer is None:
            raise ValueError(f"case {record.case_id}: ZsRE record has a neighborhood prompt but no neighborhood_answer")
        rows.append(("neighborhood", record.neighborhood_prompts[0], " " + record.neighborhood_answer))
    return rows


def evaluate_zsre(
    model: nn.Module,
    tokenizer,
    records: Sequence[EditRecord],
    batch_size: int = 64,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    reference: bool = False,
    hidden_probe: int = 0,
) -> dict:
    """ZsRE token accuracies of `model` on `records`: {"summary": {...}, "per_record": [...]}.

    Per-record entries hold `case_id`, `rewrite_acc`, `paraphrase_acc`, `neighborhood_acc`
    (fractions in [0, 1]; None when the record has no prompt of that kind) and the
    per-token hits (`*_correct`, lists of 0/1). `hidden_probe` as in `evaluate_counterfact`.
    """
    if reference and hidden_probe:
        raise ValueError("hidden_probe needs the shared scorer; the reference scorer returns no hidden states")
    prompts, answers, index = [], [], []  # index[j] = (record position, kind)
    for ri, r in enumerate(records):
        for kind, prompt, answer in _rows_of(r):
            prompts.append(prompt)
            answers.append(answer)
            index.append((ri, kind))
    hidden = None
    if reference:
        scores = score_targets(model, tokenizer, prompts, answers, batch_size)
    else:
        probes = [hidden_probe_prompts(r) for r in records[:hidden_probe]]
        nested, states = score_prompts(model, tokenizer, prompts, [[a] for a in answers], token_budget,
                                       hidden_of={p for pair in probes for p in pair}, desc="zsre")
        scores = [s for (s,) in nested]
        if hidden_probe:
            hidden = {name: np.stack([states[pair[k]] for pair in probes]) for k, name in enumerate(PROBES)}

    hits: list[dict[str, list[int]]] = [{"rewrite": [], "paraphrase": [], "neighborhood": []} for _ in records]
    for (ri, kind), score in zip(index, scores):
        hits[ri][kind] += [int(h) for h in score.token_correct]

    per_record = []
    for r, h in zip(records, hits):
        entry: dict = {"case_id": r.case_id}
        for kind, tokens in h.items():
            entry[f"{kind}_acc"] = sum(tokens) / len(tokens) if tokens else None
        for kind, tokens in h.items():
            entry[f"{kind}_correct"] = tokens
        per_record.append(entry)

    summary: dict = {}
    for name, key in SUMMARY_KEYS.items():
        values = [e[key] for e in per_record if e[key] is not None]
        summary[name] = 100.0 * sum(values) / len(values) if values else None
    summary["n_records"] = len(per_record)
    result = {"summary": summary, "per_record": per_record}
    if hidden is not None:
        result["hidden"] = hidden
    return result
