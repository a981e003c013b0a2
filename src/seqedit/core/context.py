"""Every scored prompt + target must fit the model's context window.

A row longer than the model's learned positions (GPT-2's `n_positions`) fails deep inside the
forward pass with an index error that names no record. `check_records_fit` runs before any
work, over every prompt the evaluation scores (rewrite, paraphrase and neighbourhood prompts,
each with the longest of its targets), and names the first record and prompt that do not fit.
"""

from __future__ import annotations

from typing import Sequence

from seqedit.core.prompts import encode, encode_target
from seqedit.data.records import EditRecord


def context_length(model) -> int | None:
    """Positions the model can attend over, from its config; None when unbounded or unknown (e.g. rotary)."""
    cfg = model.config
    if getattr(cfg, "model_type", None) == "gpt2":
        return int(cfg.n_positions)
    return None


def check_records_fit(model, tokenizer, records: Sequence[EditRecord], generation_length: int = 0) -> None:
    """Raise ValueError naming the first record whose prompt + target exceeds the model's context,
    or when `generation_length` (prompt included) does."""
    limit = context_length(model)
    if limit is None:
        return
    if generation_length > limit:
        raise ValueError(f"evaluation.generation.max_length ({generation_length}) exceeds the model's context of "
                         f"{limit} tokens")
    for r in records:
        targets = [t for t in (r.request.new_text, r.request.true_text) if t is not None]
        if r.neighborhood_answer is not None:
            targets.append(" " + r.neighborhood_answer)
        longest = max(len(encode_target(tokenizer, t)) for t in targets)
        prompts = [("rewrite", r.request.query)] + [("paraphrase", p) for p in r.paraphrase_prompts] + [
            ("neighborhood", p) for p in r.neighborhood_prompts]
        for kind, prompt in prompts:
            n = len(encode(tokenizer, prompt)) + longest
            if n > limit:
                raise ValueError(f"case {r.case_id}: {kind} prompt {prompt!r} with its target is {n} tokens, "
                                 f"longer than the model's context of {limit}")
