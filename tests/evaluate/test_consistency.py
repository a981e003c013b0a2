"""Consistency: sklearn-compatible TF-IDF written out, hand-computed cosines, the three snippet sources."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.consistency import (
    ConsistencyConfig, Tfidf, build_scorer, load_snippets, snippets_from_records, tokenize,
)


def record(case_id, relation, subject, new, new_id=None, attribute=(), generation=()) -> EditRecord:
    extra = {} if new_id is None else {"target_new_id": new_id}
    return EditRecord(EditRequest(case_id, "{} was born in", subject, new, "Quell", relation), kind="counterfact",
                      attribute_prompts=tuple(attribute), generation_prompts=tuple(generation), extra=extra)


def test_tokens_follow_sklearns_default_pattern():
    # lower-cased runs of two or more word characters: "t", "u", "s" and "x" fall out
    assert tokenize("Don't stop, U.S. x2 Café x") == ["don", "stop", "x2", "café"]


def test_fitted_idf_is_sklearns_smoothed_idf():
    tfidf = Tfidf.fit(["the cat sat", "the dog sat", "a cat ran"])
    assert tfidf.vocab == {"cat": 0, "dog": 1, "ran": 2, "sat": 3, "the": 4}  # sorted; "a" is too short
    seen_twice, seen_once = 1 + math.log(4 / 3), 1 + math.log(4 / 2)  # ln((1 + n) / (1 + df)) + 1, n = 3
    np.testing.assert_allclose(tfidf.idf, [seen_twice, seen_once, seen_once, seen_twice, seen_twice], rtol=1e-15)


def test_cosines_by_hand():
    tfidf = Tfidf.fit(["the cat sat", "the dog sat", "a cat ran"])
    # equal idf on both sides: {cat, the} against {cat, sat}, one term shared of two -> 1/2
    assert tfidf.similarity("The cat, the cat!", "cat sat") == pytest.approx(0.5, abs=1e-15)
    # dog (idf i1) shared, cat / sat (idf i2) not: cos = i1² / (i1² + i2²)
    i1, i2 = 1 + math.log(2), 1 + math.log(4 / 3)
    assert tfidf.similarity("dog cat", "dog sat") == pytest.approx(i1**2 / (i1**2 + i2**2), abs=1e-15)
    assert tfidf.similarity("dog cat", "dog sat") == pytest.approx(0.633553, abs=1e-6)
    # term counts weigh in (tf = raw counts): (2 i1, i2) against (i1, 0): cos = 2 i1 / sqrt(4 i1² + i2²)
    assert tfidf.similarity("dog dog cat", "dog") == pytest.approx(2 * i1 / math.sqrt(4 * i1**2 + i2**2), abs=1e-15)
    assert tfidf.similarity("unknown words only", "dog") == 0.0  # zero vector: 0, not NaN
    assert tfidf.similarity("cat sat", "Cat SAT") == pytest.approx(1.0, abs=1e-15)


@pytest.fixture
def rome_files(tmp_path):
    """ROME-format snippets (two entries of one key, joined), a vocabulary and an idf."""
    snippets = [
        {"relation_id": "P19", "target_id": "Q1", "samples": [{"name": "Tessa Brink", "text": "dog"}]},
        {"relation_id": "P19", "target_id": "Q2", "samples": [{"name": "Orin Tallow", "text": "cat cat"}]},
        {"relation_id": "P19", "target_id": "Q1", "samples": [{"name": "Mirel Astan", "text": "sat"}]},
    ]
    (tmp_path / "snips.json").write_text(json.dumps(snippets))
    (tmp_path / "vocab.json").write_text(json.dumps({"dog": 0, "cat": 1, "sat": 2}))
    np.save(tmp_path / "idf.npy", np.array([2.0, 1.0, 1.0]))
    return tmp_path


def test_configured_files_give_the_reference_score(rome_files):
    assert load_snippets(rome_files / "snips.json")[("P19", "Q1")] == ["dog", "sat"]
    cfg = ConsistencyConfig(snippets=str(rome_files / "snips.json"), idf=str(rome_files / "idf.npy"),
                            vocab=str(rome_files / "vocab.json"))
    scorer = build_scorer(cfg, [])
    assert scorer.source == "configured"
    rec = record(0, "P19", "Varkel Dunmore", "Zorvia", new_id="Q1")
    # generations joined "dog cat" -> (dog 1·2, cat 1·1, sat 0) = (2, 1, 0); snippets joined "dog sat" -> (2, 0, 1)
    # cos = 2·2 / (√5 · √5) = 0.8
    assert scorer.record_score(rec, ["dog", "cat"]) == pytest.approx(80.0, abs=1e-12)
    assert scorer.record_score(rec, ["dog dog cat cat"]) == pytest.approx(80.0, abs=1e-12)  # only proportions count
    other = record(1, "P19", "Orin Tallow", "Quell", new_id="Q9")  # no snippets for its key
    out = scorer.score([rec, other], [["dog", "cat"], ["dog"]])
    assert out == {"consistency": pytest.approx(80.0), "per_record": [pytest.approx(80.0), None]}


def test_snippets_alone_fit_the_idf_on_them(rome_files):
    scorer = build_scorer({"snippets": str(rome_files / "snips.json")}, [])
    assert scorer.source == "fitted-on-snippets"
    # three snippet documents "dog", "cat cat", "sat": each term in one of them
    assert scorer.tfidf.vocab == {"cat": 0, "dog": 1, "sat": 2}
    np.testing.assert_allclose(scorer.tfidf.idf, [1 + math.log(4 / 2)] * 3)
    rec = record(0, "P19", "Varkel Dunmore", "Zorvia", new_id="Q1")
    assert scorer.record_score(rec, ["dog", "cat"]) == pytest.approx(50.0)  # equal idf: (1, 1, 0)·(0, 1, 1) / 2


def test_without_snippets_the_attribute_prompts_are_the_reference():
    records = [
        record(0, "P19", "Varkel Dunmore", "Zorvia", "Q1", attribute=["Tessa Brink was born in"]),
        record(1, "P19", "Orin Tallow", "Zorvia", "Q1", attribute=["Mirel Astan was born in", "Tessa Brink was born in"]),
        record(2, "P19", "Mirel Astan", "Quell", "Q2"),  # no attribute prompts: no reference
    ]
    snippets = snippets_from_records(records)
    assert snippets == {("P19", "Q1"): ["Tessa Brink was born in Zorvia", "Mirel Astan was born in Zorvia"]}
    scorer = build_scorer(None, records)
    assert scorer.source == "attribute-prompts"
    # idf over the two distinct texts: every term in both has idf 1, tessa / brink / mirel / astan ln(3/2) + 1
    assert scorer.tfidf.idf[scorer.tfidf.vocab["zorvia"]] == pytest.approx(1.0)
    assert scorer.tfidf.idf[scorer.tfidf.vocab["tessa"]] == pytest.approx(1 + math.log(1.5))
    assert scorer.record_score(records[0], ["Zorvia"]) > scorer.record_score(records[0], ["Quell is far"]) == 0.0
    assert scorer.record_score(records[2], ["Zorvia"]) is None
    assert build_scorer(None, [records[2]]) is None  # nothing to compare against


@pytest.mark.parametrize("values, message", [
    ({"idf": "idf.npy"}, "idf and vocab go together"),
    ({"idf": "idf.npy", "vocab": "v.json"}, "need snippets"),
    ({"snipets": "s.json"}, r"unknown key\(s\) \['snipets'\]"),
])
def test_config_errors(values, message):
    with pytest.raises(ValueError, match=message):
        build_scorer(values, [])


def test_bad_files_are_one_line_errors(rome_files):
    (rome_files / "bad.json").write_text(json.dumps([{"relation_id": "P19", "samples": []}]))
    with pytest.raises(ValueError, match=r"bad\.json: entry 0: needs relation_id, target_id"):
        load_snippets(rome_files / "bad.json")
    with pytest.raises(FileNotFoundError, match="attribute snippets file .*nowhere.json does not exist"):
        load_snippets(rome_files / "nowhere.json")
    np.save(rome_files / "short.npy", np.array([1.0]))
    cfg = {"snippets": str(rome_files / "snips.json"), "idf": str(rome_files / "short.npy"),
           "vocab": str(rome_files / "vocab.json")}
    with pytest.raises(ValueError, match="the vocabulary has index 2, the idf only 1 entries"):
        build_scorer(cfg, [])


def test_evaluate_records_reports_consistency_and_its_source(tiny_tokenizer, tiny_gpt2):
    from seqedit.evaluate import evaluate_records, prepare_evaluation

    from .test_counterfact import make_records

    records = [replace(r, generation_prompts=(r.request.query,), attribute_prompts=("Tessa Brink lives in",),
                       extra={"target_new_id": f"Q{r.case_id}"}) for r in make_records()]
    gen = {"n_records": 2, "n_prompts": 1, "max_length": 16, "top_k": 5, "seed": 0}
    out = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"generation": gen})
    assert out["summary"]["consistency_source"] == "attribute-prompts"
    assert 0.0 <= out["summary"]["consistency"] <= 100.0
    per_record = [e.get("consistency", "absent") for e in out["per_record"]]
    assert per_record[2] == "absent" and all(0.0 <= v <= 100.0 for v in per_record[:2])
    assert out["summary"]["consistency"] == pytest.approx(sum(per_record[:2]) / 2)
    # a scorer prepared once from all records gives the same numbers
    prepared = prepare_evaluation({"generation": gen}, records)
    assert evaluate_records(tiny_gpt2, tiny_tokenizer, records, prepared)["summary"] == out["summary"]
    off = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"generation": {**gen, "n_records": 0}})
    assert "consistency" not in off["summary"]
