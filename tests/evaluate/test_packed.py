"""The shared scorer: the reference scorer's numbers for every layout, from less work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.evaluate.hidden import hidden_states
from seqedit.evaluate.packed import score_prompts
from seqedit.evaluate.scoring import score_targets
from seqedit.evaluate.zsre import evaluate_zsre
from seqedit.models.arch import spec_for

from .test_counterfact import cf_record, make_records

# float32 forwards of a 3-layer model: sums of a few dozen terms of size ~1, so round-off
# stays near 1e-6; 1e-5 leaves an order of magnitude.
RTOL, ATOL = 1e-5, 1e-5

# (token_budget, row_tokens): one segment per row; a few prompts per row, several batches;
# one row per batch narrower than the longest segment (which then gets a row alone).
PACKINGS = [(4096, 1), (48, 24), (8, 4), (4096, 4096)]


def records_with_shared_prompts() -> list[EditRecord]:
    """make_records plus a record whose neighbourhood prompts repeat other records' prompts
    (with other targets) and repeat each other, so equal prompts are merged."""
    extra = cf_record(
        3, "{} speaks", "Orin Tallow", "Velorian lute", "Zorvia",
        para=["Orin Tallow works for"],
        neigh=["Tessa Brink was born in", "Tessa Brink was born in", "Mirel Astan is employed by"],
    )
    return make_records() + [extra]


def assert_same_counterfact(ref: dict, new: dict) -> None:
    for a, b in zip(ref["per_record"], new["per_record"]):
        assert a["case_id"] == b["case_id"]
        for which in ("nll_new", "nll_true"):
            for kind in a[which]:
                np.testing.assert_allclose(b[which][kind], a[which][kind], rtol=RTOL, atol=ATOL)
        for kind in ("rewrite", "paraphrase", "neighborhood"):
            assert b[f"{kind}_success"] == a[f"{kind}_success"]
            assert b[f"{kind}_acc"] == a[f"{kind}_acc"]
            if a[f"{kind}_diff"] is not None:
                assert b[f"{kind}_diff"] == pytest.approx(a[f"{kind}_diff"], rel=RTOL, abs=ATOL)
    for key, value in ref["summary"].items():
        if isinstance(value, float):
            assert new["summary"][key] == pytest.approx(value, rel=RTOL, abs=100 * ATOL), key
        else:
            assert new["summary"][key] == value, key


@pytest.mark.parametrize("budget", [4096, 48, 8, 1])  # rows of 128 tokens; of the budget below that
def test_counterfact_matches_the_reference_for_every_layout(tiny_model, tiny_tokenizer, budget):
    records = records_with_shared_prompts()
    ref = evaluate_counterfact(tiny_model, tiny_tokenizer, records, batch_size=4, reference=True)
    new = evaluate_counterfact(tiny_model, tiny_tokenizer, records, token_budget=budget)
    assert_same_counterfact(ref, new)


@pytest.mark.parametrize("budget,row_tokens", PACKINGS)
def test_scores_match_per_pair_scoring_token_by_token(tiny_model, tiny_tokenizer, budget, row_tokens):
    prompts = ["Varkel Dunmore was born in", "The capital of Zorvia is", "Orin", "The capital of Zorvia is",
               "Mirel Astan works for a company named"]
    targets = [[" Zorvia", " Quell land"], [" Quell", " Mirel Astan"], [" Tallow", " x"], [" Tallow"],
               [" Quandex", " Velorian lute", " Quandex"]]
    ref = score_targets(tiny_model, tiny_tokenizer, [p for p, ts in zip(prompts, targets) for _ in ts],
                        [t for ts in targets for t in ts], batch_size=3)
    new, _ = score_prompts(tiny_model, tiny_tokenizer, prompts, targets, budget, row_tokens)
    flat = [s for row in new for s in row]
    assert len(flat) == len(ref)
    for a, b in zip(ref, flat):
        np.testing.assert_allclose(b.token_logprobs, a.token_logprobs, rtol=RTOL, atol=ATOL)
        assert b.token_correct == a.token_correct


def test_zsre_matches_the_reference_for_every_layout(tiny_model, tiny_tokenizer):
    def rec(i, template, subject, answer, para=(), loc=None, loc_ans=None):
        req = EditRequest(case_id=i, prompt=template, subject=subject, target_new=answer)
        return EditRecord(req, kind="zsre", paraphrase_prompts=tuple(para),
                          neighborhood_prompts=(loc,) if loc else (), neighborhood_answer=loc_ans)

    records = [
        rec(0, "Where was {} born?", "Varkel Dunmore", "Zorvia Quell", para=["Varkel Dunmore was born in"],
            loc="nq question: who founded quandex?", loc_ans="Mirel Astan"),
        rec(1, "What does {} play?", "Tessa Brink", "the lute", para=["Tessa Brink plays", "Tessa Brink plays"]),
        rec(2, "{} works for", "Mirel Astan", "Quandex", loc="Tessa Brink plays", loc_ans="the lute Quell"),
    ]
    ref = evaluate_zsre(tiny_model, tiny_tokenizer, records, batch_size=2, reference=True)
    for budget in (4096, 16):
        new = evaluate_zsre(tiny_model, tiny_tokenizer, records, token_budget=budget)
        assert new["per_record"] == ref["per_record"]  # 0/1 hits: no tolerance
        assert new["summary"] == ref["summary"]


def test_hidden_probe_matches_a_separate_pass(tiny_model, tiny_tokenizer):
    records = records_with_shared_prompts()
    out = evaluate_counterfact(tiny_model, tiny_tokenizer, records, hidden_probe=3, token_budget=64)
    alone = hidden_states(tiny_model, tiny_tokenizer, records[:3])
    assert set(out["hidden"]) == set(alone) == {"rewrite", "neighborhood"}
    d_model = spec_for(tiny_model).d_model(tiny_model)
    for k in alone:
        assert out["hidden"][k].shape == alone[k].shape == (3, d_model)
        np.testing.assert_allclose(out["hidden"][k], alone[k], rtol=RTOL, atol=ATOL)
    assert "hidden" not in evaluate_counterfact(tiny_model, tiny_tokenizer, records)


def test_logits_only_at_scored_positions_and_batches_within_the_budget(tiny_gpt2, tiny_tokenizer):
    """The trunk sees each distinct prompt once, plus every target's tokens but its last; the
    unembedding sees one position per predicted token (the first one shared by the targets)."""
    spec = spec_for(tiny_gpt2)
    shapes, heads = [], []
    spec.trunk(tiny_gpt2).register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                    with_kwargs=True)
    spec.head(tiny_gpt2).register_forward_hook(lambda m, a, out: heads.append(out.shape[0]))
    prompts = ["Varkel Dunmore was born in", "The capital of Zorvia is", "Varkel Dunmore was born in", "Orin"]
    targets = [[" Zorvia", " Quell land"], [" Quell", " Mirel Astan"], [" Mirel Astan"], [" Tallow"]]

    def n_ids(text, special=True):
        return len(tiny_tokenizer(text, add_special_tokens=special)["input_ids"])

    distinct = {"Varkel Dunmore was born in": [" Zorvia", " Quell land", " Mirel Astan"],
                "The capital of Zorvia is": [" Quell", " Mirel Astan"], "Orin": [" Tallow"]}
    extra = {p: sum(n_ids(t, False) - 1 for t in ts) for p, ts in distinct.items()}
    tokens = sum(n_ids(p) + extra[p] for p in distinct)
    budget, row_tokens = 24, 12
    assert max(n_ids(p) + extra[p] for p in distinct) <= row_tokens  # every segment fits a row
    score_prompts(tiny_gpt2, tiny_tokenizer, prompts, targets, budget, row_tokens)
    assert sum(heads) == sum(1 + extra[p] for p in distinct)
    assert all(b * t <= budget for b, t in shapes) and all(t <= row_tokens for _, t in shapes)
    assert sum(b * t for b, t in shapes) < tokens + row_tokens * len(shapes)  # padding: under a row per batch


def test_bad_input_is_a_one_line_error(tiny_gpt2, tiny_tokenizer):
    with pytest.raises(ValueError, match="2 prompts but 1 target lists"):
        score_prompts(tiny_gpt2, tiny_tokenizer, ["a", "b"], [[" c"]])
    with pytest.raises(ValueError, match="token_budget and row_tokens must be >= 1"):
        score_prompts(tiny_gpt2, tiny_tokenizer, ["a"], [[" c"]], token_budget=0)
    with pytest.raises(ValueError, match="prompt '' tokenises to nothing"):
        score_prompts(tiny_gpt2, tiny_tokenizer, [""], [[" c"]])
    with pytest.raises(ValueError, match="not scored"):
        score_prompts(tiny_gpt2, tiny_tokenizer, ["a"], [[" c"]], hidden_of=["b"])
    with pytest.raises(ValueError, match="hidden_probe needs the shared scorer"):
        evaluate_counterfact(tiny_gpt2, tiny_tokenizer, make_records(), reference=True, hidden_probe=1)


def test_training_mode_is_restored(tiny_gpt2, tiny_tokenizer):
    tiny_gpt2.train()
    with torch.no_grad():
        score_prompts(tiny_gpt2, tiny_tokenizer, ["Orin"], [[" Tallow"]])
    assert tiny_gpt2.training
