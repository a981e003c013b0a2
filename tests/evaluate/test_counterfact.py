"""CounterFact metrics: batched NLLs against a one-prompt-at-a-time oracle, and flips under controlled logits."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conftest import make_tiny_model
from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.counterfact import evaluate_counterfact, harmonic_mean


def cf_record(case_id: int, template: str, subject: str, new: str, true: str, para=(), neigh=()) -> EditRecord:
    req = EditRequest(case_id=case_id, prompt=template, subject=subject, target_new=new, target_true=true)
    return EditRecord(request=req, kind="counterfact", paraphrase_prompts=tuple(para), neighborhood_prompts=tuple(neigh))


def make_records() -> list[EditRecord]:
    """Prompts of different lengths and targets of 1 to 5 tokens, so batches carry padding."""
    return [
        cf_record(
            0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia",
            para=["Where was Varkel Dunmore born? He was born in", "Varkel Dunmore, born in"],
            neigh=["Tessa Brink was born in", "Orin Tallow was born in", "Mirel Astan was born in"],
        ),
        cf_record(
            1, "{} works for", "Mirel Astan", "Paris", "Quandex",
            para=["Mirel Astan is employed by"],
            neigh=["Orin Tallow works for"],
        ),
        cf_record(
            2, "The capital of {} is", "Zorvia", "Mirel Astan", "Quell",
            para=["nq question: what is the capital of Zorvia?", "Zorvia's capital:"],
            neigh=["The capital of Velorian is", "Tessa Brink plays the"],
        ),
    ]


def naive_scores(model, tokenizer, prompt: str, target: str) -> tuple[float, bool]:
    """Mean NLL of `target` after `prompt` and whether every token is the argmax, one row, no padding."""
    p_ids = tokenizer(prompt)["input_ids"]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + t_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (T, V)
    nll, hits = 0.0, True
    for j, t in enumerate(t_ids):
        row = logp[len(p_ids) - 1 + j]
        nll -= row[t].item()
        hits &= int(row.argmax()) == t
    return nll / len(t_ids), hits


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gptj"])
def test_batched_nll_matches_one_prompt_at_a_time(tiny_tokenizer, model_type):
    model = make_tiny_model(model_type, len(tiny_tokenizer), seed=3)
    records = make_records()
    result = evaluate_counterfact(model, tiny_tokenizer, records, batch_size=4)  # several padded batches
    for rec, entry in zip(records, result["per_record"]):
        assert entry["case_id"] == rec.case_id
        prompts = {
            "rewrite": [rec.request.query],
            "paraphrase": list(rec.paraphrase_prompts),
            "neighborhood": list(rec.neighborhood_prompts),
        }
        for kind, ps in prompts.items():
            new = [naive_scores(model, tiny_tokenizer, p, rec.request.new_text) for p in ps]
            true = [naive_scores(model, tiny_tokenizer, p, rec.request.true_text) for p in ps]
            assert entry["nll_new"][kind] == pytest.approx([n for n, _ in new], rel=1e-4)
            assert entry["nll_true"][kind] == pytest.approx([n for n, _ in true], rel=1e-4)
            m = len(ps)
            if kind == "neighborhood":
                success = sum(t < n for (n, _), (t, _) in zip(new, true)) / m
                diff = sum(math.exp(-t) - math.exp(-n) for (n, _), (t, _) in zip(new, true)) / m
                acc = sum(h for _, h in true) / m
            else:
                success = sum(t > n for (n, _), (t, _) in zip(new, true)) / m
                diff = sum(math.exp(-n) - math.exp(-t) for (n, _), (t, _) in zip(new, true)) / m
                acc = sum(h for _, h in new) / m
            assert entry[f"{kind}_success"] == pytest.approx(success)
            assert entry[f"{kind}_diff"] == pytest.approx(diff, rel=1e-4, abs=1e-7)
            assert entry[f"{kind}_acc"] == pytest.approx(acc)


def test_batch_size_does_not_change_numbers(tiny_tokenizer, tiny_gpt2):
    records = make_records()
    one = evaluate_counterfact(tiny_gpt2, tiny_tokenizer, records, batch_size=1)
    many = evaluate_counterfact(tiny_gpt2, tiny_tokenizer, records, batch_size=64)
    for a, b in zip(one["per_record"], many["per_record"]):
        for kind in ("rewrite", "paraphrase", "neighborhood"):
            assert a["nll_new"][kind] == pytest.approx(b["nll_new"][kind], rel=1e-5)
            assert a["nll_true"][kind] == pytest.approx(b["nll_true"][kind], rel=1e-5)
    assert one["summary"] == pytest.approx(many["summary"], rel=1e-5)


def BiasedLM(base: nn.Module, token_ids: list[int], strength: float = 30.0) -> nn.Module:
    """A copy of `base` whose unembedding adds +`strength` to the logits of chosen token ids at
    every position (a bias on lm_head), so every scorer sees the same biased model."""
    model = copy.deepcopy(base)
    old = model.lm_head
    head = nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[token_ids] = strength
    model.lm_head = head
    return model.eval()


def single_token_records(tokenizer) -> list[EditRecord]:
    """Targets are one token each (checked), so a biased token is the argmax of the whole target."""
    recs = [
        cf_record(10, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia",
                  para=["Varkel Dunmore, born in", "He was born in"], neigh=["Tessa Brink was born in"]),
        cf_record(11, "{} speaks", "Orin Tallow", "Quandex", "Velorian",
                  para=["Orin Tallow's language is"], neigh=["Mirel Astan speaks", "Tessa Brink speaks"]),
    ]
    for r in recs:
        for text in (r.request.new_text, r.request.true_text):
            assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1
    return recs


def target_ids(tokenizer, records, which: str) -> list[int]:
    texts = [r.request.new_text if which == "new" else r.request.true_text for r in records]
    return [tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in texts]


@pytest.mark.parametrize("index", [0, 1])
def test_success_flips_with_controlled_logits(tiny_tokenizer, tiny_gpt2, index):
    """One record at a time, so exactly one token is boosted and it is the argmax everywhere."""
    record = single_token_records(tiny_tokenizer)[index]

    favour_new = BiasedLM(tiny_gpt2, target_ids(tiny_tokenizer, [record], "new"))
    s = evaluate_counterfact(favour_new, tiny_tokenizer, [record])["summary"]
    assert s["efficacy"] == 100.0 and s["generalization"] == 100.0 and s["specificity"] == 0.0
    assert s["rewrite_acc"] == 100.0 and s["paraphrase_acc"] == 100.0 and s["neighborhood_acc"] == 0.0
    assert s["efficacy_magnitude"] > 99.0  # P(new) ~ 1, P(true) ~ 0
    assert s["generalization_magnitude"] > 99.0
    assert s["specificity_magnitude"] < -99.0
    assert s["score"] == 0.0
    assert s["n_records"] == 1

    favour_true = BiasedLM(tiny_gpt2, target_ids(tiny_tokenizer, [record], "true"))
    s = evaluate_counterfact(favour_true, tiny_tokenizer, [record])["summary"]
    assert s["efficacy"] == 0.0 and s["generalization"] == 0.0 and s["specificity"] == 100.0
    assert s["rewrite_acc"] == 0.0 and s["paraphrase_acc"] == 0.0 and s["neighborhood_acc"] == 100.0
    assert s["efficacy_magnitude"] < -99.0 and s["specificity_magnitude"] > 99.0


def test_mixed_outcomes_average_per_record_then_over_records(tiny_tokenizer, tiny_gpt2):
    """Bias only record 10's new target: record 10 succeeds on rewrite, record 11 does not."""
    records = single_token_records(tiny_tokenizer)
    model = BiasedLM(tiny_gpt2, target_ids(tiny_tokenizer, records[:1], "new") + target_ids(tiny_tokenizer, records[1:], "true"))
    out = evaluate_counterfact(model, tiny_tokenizer, records)
    per = {e["case_id"]: e for e in out["per_record"]}
    assert per[10]["rewrite_success"] == 1.0 and per[11]["rewrite_success"] == 0.0
    assert per[10]["neighborhood_success"] == 0.0 and per[11]["neighborhood_success"] == 1.0
    s = out["summary"]
    assert s["efficacy"] == pytest.approx(50.0)
    assert s["generalization"] == pytest.approx(50.0)
    assert s["specificity"] == pytest.approx(50.0)
    assert s["score"] == pytest.approx(50.0)


def test_harmonic_mean():
    assert harmonic_mean([100.0, 50.0, 50.0]) == pytest.approx(3 / (1 / 100 + 2 / 50))
    assert harmonic_mean([100.0, 0.0, 80.0]) == 0.0


def test_missing_true_target_is_an_error(tiny_tokenizer, tiny_gpt2):
    req = EditRequest(case_id=7, prompt="{} was born in", subject="Varkel Dunmore", target_new="Quell")
    with pytest.raises(ValueError, match="case 7.*requires a true target"):
        evaluate_counterfact(tiny_gpt2, tiny_tokenizer, [EditRecord(request=req, kind="counterfact")])


def test_record_without_paraphrases_is_left_out_of_that_mean(tiny_tokenizer, tiny_gpt2):
    records = single_token_records(tiny_tokenizer)
    bare = cf_record(12, "{} plays the", "Tessa Brink", "Quell", "Zorvia")
    model = BiasedLM(tiny_gpt2, target_ids(tiny_tokenizer, records + [bare], "new"))
    out = evaluate_counterfact(model, tiny_tokenizer, records + [bare])
    assert out["per_record"][2]["paraphrase_success"] is None
    assert out["summary"]["generalization"] == 100.0
    assert out["summary"]["efficacy"] == 100.0
