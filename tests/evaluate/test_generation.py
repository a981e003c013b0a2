"""Generation-based success: word-level matching, exact greedy decoding in left-padded batches,
and success on a tiny model whose greedy continuations are read first."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.generation import begins_with, evaluate_generation, exact_match, greedy_continuations, words

PROMPTS = [
    "Varkel Dunmore was born in",
    "The capital of Zorvia is",
    "Mirel",
    "Where was Varkel Dunmore born? He was born in the",
    "Orin Tallow speaks",
    "nq question: who founded quandex?",
]


def oracle_greedy(model, tokenizer, prompt: str, n: int) -> list[int]:
    """Greedy ids one row at a time, no padding, no cache: the full sequence recomputed each step."""
    ids = tokenizer(prompt)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


@pytest.mark.parametrize("continuation,target,expected", [
    ("Paris, France", "Paris", True),
    (" Parisian", " Paris", False),
    ("   PARIS\n is lovely", " paris", True),
    (" New   York City", "new york", True),
    (" New", " New York", False),
    (" the Paris", "Paris", False),
    ("Paris-based", "Paris", True),  # punctuation separates words
])
def test_begins_with_compares_normalised_words(continuation, target, expected):
    assert begins_with(continuation, target) is expected


def test_exact_match_and_words():
    assert words("  Hello,  WORLD! ") == ["hello", "world"]
    assert exact_match(" Paris.", "paris")
    assert not exact_match(" Paris France", "Paris")
    assert not exact_match(" Pari", "Paris")
    with pytest.raises(ValueError, match="no words"):
        begins_with("Paris", " ,")


@pytest.mark.parametrize("model_type", ["gpt2", "gptj", "llama"])
def test_batched_greedy_equals_one_row_without_cache(tiny_tokenizer, model_type):
    model = make_tiny_model(model_type, len(tiny_tokenizer), seed=5)
    n = [4, 2, 5, 3, 1, 6]
    expected = [oracle_greedy(model, tiny_tokenizer, p, k) for p, k in zip(PROMPTS, n)]
    for batch_size in (1, 2, len(PROMPTS)):
        assert greedy_continuations(model, tiny_tokenizer, PROMPTS, n, batch_size=batch_size) == expected
    assert [len(c) for c in expected] == n


def test_greedy_rejects_bad_counts(tiny_tokenizer, tiny_gpt2):
    with pytest.raises(ValueError, match="2 prompts but 1"):
        greedy_continuations(tiny_gpt2, tiny_tokenizer, PROMPTS[:2], [3])
    with pytest.raises(ValueError, match="at least 1"):
        greedy_continuations(tiny_gpt2, tiny_tokenizer, PROMPTS[:1], 0)


def cf(case_id, template, subject, new, true, para=(), neigh=()):
    req = EditRequest(case_id=case_id, prompt=template, subject=subject, target_new=new, target_true=true)
    return EditRecord(request=req, kind="counterfact", paraphrase_prompts=tuple(para), neighborhood_prompts=tuple(neigh))


def first_word(model, tokenizer, prompt: str) -> str:
    text = tokenizer.decode(oracle_greedy(model, tokenizer, prompt, 6))
    return words(text)[0]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_counterfact_success_on_known_continuations(tiny_tokenizer, model_type):
    tok = tiny_tokenizer
    model = make_tiny_model(model_type, len(tok), seed=1)
    w = {p: first_word(model, tok, p) for p in (PROMPTS[0], PROMPTS[4])}
    other = "zzzq"  # a string no greedy continuation here starts with
    assert other not in w.values()
    records = [
        # rewrite continues with the new object, the paraphrase does not, the neighbour keeps the true one
        cf(0, "{} was born in", "Varkel Dunmore", w[PROMPTS[0]], other,
           para=[PROMPTS[1]], neigh=[PROMPTS[4]]),
        cf(1, "The capital of {} is", "Zorvia", other, w[PROMPTS[4]],
           para=[PROMPTS[3], PROMPTS[2]], neigh=[PROMPTS[4], PROMPTS[0]]),
    ]
    # the targets chosen: what each prompt's continuation of the metric's length begins with
    def oracle(prompt, target, rec):
        n = max(len(tok(" " + rec.request.target_new, add_special_tokens=False)["input_ids"]),
                len(tok(" " + rec.request.target_true, add_special_tokens=False)["input_ids"])) + 1
        return float(begins_with(tok.decode(oracle_greedy(model, tok, prompt, n)), target))

    res = evaluate_generation(model, tok, records, batch_size=3)
    r0, r1 = res["per_record"]
    assert r0["rewrite_gen"] == oracle(PROMPTS[0], w[PROMPTS[0]], records[0]) == 1.0
    assert r0["paraphrase_gen"] == 0.0
    assert r0["neighborhood_gen"] == 0.0
    assert r1["rewrite_gen"] == 0.0
    para1 = (oracle(PROMPTS[3], other, records[1]) + oracle(PROMPTS[2], other, records[1])) / 2
    assert r1["paraphrase_gen"] == para1 == 0.0
    neigh1 = (oracle(PROMPTS[4], w[PROMPTS[4]], records[1]) + oracle(PROMPTS[0], w[PROMPTS[4]], records[1])) / 2
    assert r1["neighborhood_gen"] == neigh1
    assert neigh1 >= 0.5  # the first neighbour continues with its own first word
    s = res["summary"]
    assert s["efficacy_gen"] == pytest.approx(50.0)
    assert s["generalization_gen"] == pytest.approx(0.0)
    assert s["specificity_gen"] == pytest.approx(100.0 * neigh1 / 2)
    assert s["n_records_gen"] == 2
    # one record at a time gives the same numbers as the batch
    alone = [evaluate_generation(model, tok, [r], batch_size=1)["per_record"][0] for r in records]
    assert alone == res["per_record"]


def test_zsre_exact_match_on_known_answer(tiny_tokenizer):
    tok = tiny_tokenizer
    model = make_tiny_model("gpt2", len(tok), seed=2)
    prompt, para = "Varkel Dunmore was born in", "Mirel"
    # an answer that is exactly the greedy answer of its own token count
    answer = None
    for k in range(1, 6):
        text = tok.decode(oracle_greedy(model, tok, prompt, k)).strip()
        if text and words(text):
            n = len(tok(" " + text, add_special_tokens=False)["input_ids"])
            if exact_match(tok.decode(oracle_greedy(model, tok, prompt, n)), text):
                answer = text
                break
    assert answer is not None
    req = EditRequest(case_id=7, prompt="{} was born in", subject="Varkel Dunmore", target_new=answer)
    rec = EditRecord(request=req, kind="zsre", paraphrase_prompts=(para,),
                     neighborhood_prompts=("nq question: who founded quandex?",), neighborhood_answer="zzzq qq")
    res = evaluate_generation(model, tok, [rec])
    e = res["per_record"][0]
    assert e["rewrite_gen"] == 1.0
    n = len(tok(" " + answer, add_special_tokens=False)["input_ids"])
    assert e["paraphrase_gen"] == float(exact_match(tok.decode(oracle_greedy(model, tok, para, n)), answer))
    assert e["neighborhood_gen"] == 0.0
    assert res["summary"]["efficacy_gen"] == 100.0
    assert len(e["continuations"]["rewrite"]) == 1


def test_mixed_kinds_and_missing_true_are_refused(tiny_tokenizer, tiny_gpt2):
    req = EditRequest(case_id=1, prompt="{} was born in", subject="Mirel Astan", target_new="Quell")
    with pytest.raises(ValueError, match="target_true is None"):
        evaluate_generation(tiny_gpt2, tiny_tokenizer, [EditRecord(request=req, kind="counterfact")])
    with pytest.raises(ValueError, match="mix kinds"):
        evaluate_generation(tiny_gpt2, tiny_tokenizer, [
            cf(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"), EditRecord(request=req, kind="zsre")])


def test_evaluate_records_adds_generation_success_of_the_first_records(tiny_tokenizer, tiny_gpt2):
    from seqedit.evaluate import evaluate_records

    from .test_counterfact import make_records

    records = make_records()
    out = evaluate_records(tiny_gpt2, tiny_tokenizer, records,
                           {"generation": {"n_records": 0}, "generation_success": {"n_records": 2}})
    direct = evaluate_generation(tiny_gpt2, tiny_tokenizer, records[:2])
    for key in ("efficacy_gen", "generalization_gen", "specificity_gen", "n_records_gen"):
        assert out["summary"][key] == direct["summary"][key]
    assert out["summary"]["n_records_gen"] == 2
    assert out["per_record"][0]["rewrite_gen"] == direct["per_record"][0]["rewrite_gen"]
    assert "rewrite_gen" not in out["per_record"][2]
    every = evaluate_records(tiny_gpt2, tiny_tokenizer, records,
                             {"generation": {"n_records": 0}, "generation_success": {"n_records": None}})
    assert every["summary"]["n_records_gen"] == 3
    off = evaluate_records(tiny_gpt2, tiny_tokenizer, records,
                           {"generation": {"n_records": 0}, "generation_success": {"n_records": 0}})
    assert "efficacy_gen" not in off["summary"]
    with pytest.raises(ValueError, match="unknown generation_success config keys"):
        evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"generation_success": {"records": 1}})
