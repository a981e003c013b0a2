"""ZsRE token accuracy: hand counts under controlled logits, and a one-row-per-token oracle."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.zsre import evaluate_zsre

from .test_counterfact import BiasedLM


def zsre_record(case_id, template, subject, answer, para=(), loc=None, loc_ans=None) -> EditRecord:
    req = EditRequest(case_id=case_id, prompt=template, subject=subject, target_new=answer)
    return EditRecord(
        request=req, kind="zsre", paraphrase_prompts=tuple(para),
        neighborhood_prompts=(loc,) if loc else (), neighborhood_answer=loc_ans,
    )


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_accuracy_equals_hand_count(tiny_tokenizer, tiny_gpt2):
    """With " Zorvia" boosted, the argmax is " Zorvia" at every position.

    " Zorvia Zorvia Quell" has tokens [Zorvia, Zorvia, Quell]: 2 of 3 tokens are hits.
    " Zorvia" alone: 1 of 1. The NQ answer " Quell": 0 of 1.
    """
    zorvia, quell = ids_of(tiny_tokenizer, " Zorvia"), ids_of(tiny_tokenizer, " Quell")
    assert len(zorvia) == 1 and len(quell) == 1
    assert ids_of(tiny_tokenizer, " Zorvia Zorvia Quell") == zorvia * 2 + quell
    records = [
        zsre_record(0, "Where was {} born?", "Varkel Dunmore", "Zorvia Zorvia Quell",
                    para=["What is the birthplace of Varkel Dunmore?"],
                    loc="nq question: who founded quandex?", loc_ans="Quell"),
        zsre_record(1, "What is the capital of {}?", "Zorvia", "Zorvia",
                    para=["Zorvia's capital is?", "Name the capital of Zorvia."],
                    loc="nq question: what does tessa brink play?", loc_ans="Zorvia Quell"),
    ]
    model = BiasedLM(tiny_gpt2, zorvia)
    out = evaluate_zsre(model, tiny_tokenizer, records, batch_size=2)
    r0, r1 = out["per_record"]
    assert r0["case_id"] == 0 and r1["case_id"] == 1
    assert r0["rewrite_correct"] == [1, 1, 0] and r0["rewrite_acc"] == pytest.approx(2 / 3)
    assert r0["paraphrase_acc"] == pytest.approx(2 / 3)
    assert r0["neighborhood_correct"] == [0] and r0["neighborhood_acc"] == 0.0
    assert r1["rewrite_acc"] == 1.0
    assert r1["paraphrase_correct"] == [1, 1]  # two paraphrases, tokens pooled
    assert r1["neighborhood_correct"] == [1, 0] and r1["neighborhood_acc"] == 0.5
    s = out["summary"]
    assert s["efficacy"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert s["generalization"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert s["specificity"] == pytest.approx(100 * (0 + 0.5) / 2)
    assert s["n_records"] == 2


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_matches_prefix_by_prefix_oracle(tiny_tokenizer, model_type):
    """Oracle: one forward per answer token on prompt + t_<i (the reference's loop), argmax at the end."""
    model = make_tiny_model(model_type, len(tiny_tokenizer), seed=5)
    records = [
        zsre_record(0, "Where was {} born?", "Varkel Dunmore", "Mirel Astan", para=["Varkel Dunmore's birthplace?"],
                    loc="nq question: who founded quandex?", loc_ans="Mirel Astan"),
        zsre_record(1, "Who employs {}?", "Orin Tallow", "Paris", loc="nq question: capital of zorvia?", loc_ans="Quell"),
    ]
    out = evaluate_zsre(model, tiny_tokenizer, records, batch_size=3)

    def oracle(prompt: str, answer: str) -> list[int]:
        p_ids, a_ids = tiny_tokenizer(prompt)["input_ids"], ids_of(tiny_tokenizer, " " + answer)
        hits = []
        for i, t in enumerate(a_ids):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([p_ids + a_ids[:i]])).logits  # (1, T, V)
            hits.append(int(logits[0, -1].argmax()) == t)
        return [int(h) for h in hits]

    for rec, entry in zip(records, out["per_record"]):
        assert entry["rewrite_correct"] == oracle(rec.request.query, rec.request.target_new)
        assert entry["paraphrase_correct"] == [h for p in rec.paraphrase_prompts for h in oracle(p, rec.request.target_new)]
        assert entry["neighborhood_correct"] == oracle(rec.neighborhood_prompts[0], rec.neighborhood_answer)
    assert out["per_record"][1]["paraphrase_acc"] is None  # no paraphrase prompts


def test_neighborhood_prompt_without_answer_is_an_error(tiny_tokenizer, tiny_gpt2):
    rec = zsre_record(3, "Where was {} born?", "Varkel Dunmore", "Zorvia", loc="nq question: who?", loc_ans=None)
    with pytest.raises(ValueError, match="case 3.*neighborhood_answer"):
        evaluate_zsre(tiny_gpt2, tiny_tokenizer, [rec])
