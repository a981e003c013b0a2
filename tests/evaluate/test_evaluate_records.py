"""evaluate_records: dispatch on record kind, config checks, fluency toggle."""

from __future__ import annotations

import pytest

from seqedit.evaluate import evaluate_records
from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.evaluate.zsre import evaluate_zsre

from .test_counterfact import make_records
from .test_zsre import zsre_record

GEN = {"n_records": 2, "n_prompts": 1, "max_length": 20, "top_k": 5, "seed": 0}


def with_generation_prompts(records):
    from dataclasses import replace

    return [replace(r, generation_prompts=(r.request.query,)) for r in records]


def test_counterfact_dispatch_and_fluency(tiny_tokenizer, tiny_gpt2):
    records = with_generation_prompts(make_records())
    out = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"batch_size": 5, "generation": GEN})
    direct = evaluate_counterfact(tiny_gpt2, tiny_tokenizer, records, batch_size=64)
    assert set(out) == {"summary", "per_record"}
    assert [e["case_id"] for e in out["per_record"]] == [0, 1, 2]
    assert out["summary"]["efficacy"] == pytest.approx(direct["summary"]["efficacy"])
    assert out["summary"]["specificity"] == pytest.approx(direct["summary"]["specificity"])
    assert 0.0 < out["summary"]["fluency"] < 1000.0

    off = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"generation": {**GEN, "n_records": 0}})
    assert "fluency" not in off["summary"]


def test_zsre_dispatch(tiny_tokenizer, tiny_gpt2):
    records = [zsre_record(4, "Where was {} born?", "Varkel Dunmore", "Zorvia", loc="nq question: who?", loc_ans="Quell")]
    out = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"generation": GEN, "generation_success": {"n_records": 0}})
    assert out == evaluate_zsre(tiny_gpt2, tiny_tokenizer, records)
    assert set(out["summary"]) == {"efficacy", "generalization", "specificity", "n_records"}


def test_mixed_kinds_and_unknown_keys_are_errors(tiny_tokenizer, tiny_gpt2):
    cf = make_records()[:1]
    zs = [zsre_record(4, "Where was {} born?", "Varkel Dunmore", "Zorvia")]
    with pytest.raises(ValueError, match="mix kinds"):
        evaluate_records(tiny_gpt2, tiny_tokenizer, cf + zs, {})
    with pytest.raises(ValueError, match="batchsize"):
        evaluate_records(tiny_gpt2, tiny_tokenizer, cf, {"batchsize": 8})
    with pytest.raises(ValueError, match="no records"):
        evaluate_records(tiny_gpt2, tiny_tokenizer, [], {})


def test_generation_defaults_match_the_schema():
    from pathlib import Path

    import yaml

    from seqedit.evaluate import GENERATION_DEFAULTS

    schema_path = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    props = schema["properties"]["evaluation"]["properties"]["generation"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == GENERATION_DEFAULTS
    assert schema["properties"]["evaluation"]["properties"]["batch_size"]["default"] == 64
    from seqedit.evaluate.packed import DEFAULT_ROW_TOKENS, DEFAULT_TOKEN_BUDGET

    budget = schema["properties"]["evaluation"]["properties"]["token_budget"]
    assert budget["default"] == DEFAULT_TOKEN_BUDGET and f"{DEFAULT_ROW_TOKENS} tokens" in budget["description"]


def test_reference_scorer_and_token_budget_keys(tiny_tokenizer, tiny_gpt2):
    """evaluate_records passes the scorer's keys on: the reference scorer and any budget give
    the same numbers; the probe states come back only when asked for."""
    records = make_records()
    shared = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"token_budget": 16, "generation": {"n_records": 0}})
    ref = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"reference": True, "generation": {"n_records": 0}})
    assert shared["summary"] == pytest.approx(ref["summary"], rel=1e-5, abs=1e-3)
    assert "hidden" not in shared and "hidden" not in ref
    probed = evaluate_records(tiny_gpt2, tiny_tokenizer, records, {"hidden_probe": 2, "generation": {"n_records": 0}})
    assert probed["hidden"]["rewrite"].shape == (2, 32)
