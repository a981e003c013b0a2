"""General-capability probes: perplexity against a direct computation, held-out facts on
hand-made records, disjointness from the stream, matrix norms against torch.linalg.norm."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tiny_model
from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.capability import (CapabilityProbe, build_probe, fact_accuracy, heldout_candidates,
                                         matrix_norms, perplexity)

TEXTS = [
    "Varkel Dunmore was born in Zorvia.",
    "The capital of Zorvia is Quell, a city by the sea.",
    "Mirel Astan",
    "Orin Tallow speaks Velorian and plays the lute every evening.",
]


def direct_nll(model, tokenizer, texts, max_length=64):
    """Summed token NLL and token count, one text at a time in float64, no padding."""
    total, count = 0.0, 0
    for t in texts:
        ids = tokenizer(t)["input_ids"][:max_length]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        total -= sum(float(logp[j - 1, ids[j]]) for j in range(1, len(ids)))
        count += len(ids) - 1
    return total, count


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_perplexity_matches_direct_computation(tiny_tokenizer, model_type):
    model = make_tiny_model(model_type, len(tiny_tokenizer), seed=4)
    total, count = direct_nll(model, tiny_tokenizer, TEXTS)
    for batch_size in (1, 3, 8):  # batches with and without padding
        res = perplexity(model, tiny_tokenizer, TEXTS, batch_size=batch_size)
        assert res["n_tokens"] == count
        # float32 logits over a vocabulary of a few hundred, summed over ~40 tokens
        assert res["nll"] == pytest.approx(total / count, rel=1e-5)
        assert res["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    cut = perplexity(model, tiny_tokenizer, TEXTS, max_length=4)
    t4, c4 = direct_nll(model, tiny_tokenizer, TEXTS, max_length=4)
    assert cut["n_tokens"] == c4 and cut["nll"] == pytest.approx(t4 / c4, rel=1e-5)


def test_perplexity_refuses_bad_input(tiny_tokenizer, tiny_gpt2):
    with pytest.raises(ValueError, match="no texts"):
        perplexity(tiny_gpt2, tiny_tokenizer, [])
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        perplexity(tiny_gpt2, tiny_tokenizer, ["a"])


def cf(case_id, subject, new, true, template="{} was born in", neigh=()):
    req = EditRequest(case_id=case_id, prompt=template, subject=subject, target_new=new, target_true=true)
    return EditRecord(request=req, kind="counterfact", neighborhood_prompts=tuple(neigh))


def test_fact_accuracy_on_hand_made_records(tiny_tokenizer):
    model = make_tiny_model("gpt2", len(tiny_tokenizer), seed=6)
    tok = tiny_tokenizer
    base = [cf(0, "Varkel Dunmore", "Quell", "Zorvia"), cf(1, "Mirel Astan", "lute", "Quandex", "{} works for"),
            cf(2, "Orin Tallow", "Velorian", "Zorvia", "{} speaks")]

    def prefers_true(r):
        def nll(target):
            p = tok(r.request.query)["input_ids"]
            t = tok(target, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + t])).logits[0].double(), -1)
            return -sum(float(logp[len(p) - 1 + j, x]) for j, x in enumerate(t)) / len(t)
        return nll(r.request.true_text) < nll(r.request.new_text)

    # each record and its swap (new and true exchanged): exactly one of the two is known
    swapped = [cf(10 + r.case_id, r.request.subject, r.request.target_true, r.request.target_new, r.request.prompt)
               for r in base]
    records = base + swapped
    acc, known = fact_accuracy(model, tok, records)
    assert known == [prefers_true(r) for r in records]
    assert known[:3] == [not k for k in known[3:]]
    assert acc == pytest.approx(50.0)


def test_heldout_candidates_are_disjoint_from_stream_and_neighbourhoods():
    stream = [cf(0, "Varkel Dunmore", "Quell", "Zorvia", neigh=["Tessa Brink was born in"])]
    records = stream + [
        cf(1, "Varkel Dunmore", "Paris", "Zorvia", "{} lives in"),  # an edited subject
        cf(2, "Tessa Brink", "Quell", "Zorvia"),  # named by the stream's neighbourhood prompt
        cf(3, "Orin Tallow", "Quell", "Velorian", "{} speaks"),
        cf(4, "Mirel Astan", "Quell", "Quandex", "{} works for"),
    ]
    got = heldout_candidates(records, stream, seed=0)
    assert sorted(r.case_id for r in got) == [3, 4]
    assert [r.case_id for r in got] == [r.case_id for r in heldout_candidates(records, stream, seed=0)]


def test_build_probe_keeps_only_known_facts(tiny_tokenizer):
    model = make_tiny_model("gpt2", len(tiny_tokenizer), seed=6)
    stream = [cf(0, "Varkel Dunmore", "Quell", "Zorvia")]
    pool = [cf(1, "Mirel Astan", "lute", "Quandex", "{} works for"), cf(2, "Orin Tallow", "Velorian", "Zorvia", "{} speaks"),
            cf(3, "Tessa Brink", "Quell", "Zorvia")]
    pool += [cf(10 + r.case_id, r.request.subject + " Jr", r.request.target_true, r.request.target_new, r.request.prompt)
             for r in pool]
    probe = build_probe({"n_facts": 10, "n_texts": 2}, model, tiny_tokenizer, stream + pool, stream)
    _, known = fact_accuracy(model, tiny_tokenizer, pool)
    assert sorted(r.case_id for r in probe.facts) == sorted(r.case_id for r, k in zip(pool, known) if k)
    assert probe.evaluate(model, tiny_tokenizer)["heldout_accuracy"] == 100.0  # the unedited model knows them all
    statements = {r.request.query + r.request.true_text: r.case_id for r in pool}
    assert len(probe.texts) == 2
    assert not {statements[t] for t in probe.texts} & {r.case_id for r in probe.facts}  # texts are not the facts
    assert "Varkel Dunmore" not in " ".join(probe.texts)
    with pytest.raises(ValueError, match="unknown evaluation.capability keys"):
        build_probe({"n_fact": 1}, model, tiny_tokenizer, pool, stream)
    assert CapabilityProbe().evaluate(model, tiny_tokenizer) == {"heldout_n_facts": 0, "heldout_n_texts": 0,
                                                                  "heldout_text_source": "none"}


def test_matrix_norms_match_linalg(tiny_gpt2):
    params = {n: p for n, p in tiny_gpt2.named_parameters() if n.endswith("mlp.c_proj.weight")}
    assert len(params) >= 2
    norms = matrix_norms(params)
    for n, p in params.items():
        assert norms[n] == pytest.approx(float(torch.linalg.norm(p.detach().double())), rel=1e-6)
        assert norms[n] == pytest.approx(float(p.detach().double().pow(2).sum().sqrt()), rel=1e-6)


def test_probe_numbers_reach_the_summary_and_norms_the_curve(tmp_path, tiny_tokenizer):
    import json

    from seqedit.evaluate import evaluate_records
    from seqedit.models.arch import spec_for
    from seqedit.runner import RunConfig, run_sequential
    from test_runner import RECORDS, NoisyEditor, fake_evaluate

    model = make_tiny_model("gpt2", len(tiny_tokenizer), seed=6)
    probe = CapabilityProbe(texts=TEXTS[:2], facts=[cf(1, "Mirel Astan", "lute", "Quandex", "{} works for")])
    out = evaluate_records(model, tiny_tokenizer, [cf(0, "Varkel Dunmore", "Quell", "Zorvia")],
                           {"generation": {"n_records": 0}, "generation_success": {"n_records": 0}, "capability": probe})
    assert out["summary"]["perplexity"] == pytest.approx(perplexity(model, tiny_tokenizer, TEXTS[:2])["perplexity"])
    assert out["summary"]["heldout_accuracy"] == fact_accuracy(model, tiny_tokenizer, probe.facts)[0]

    editor = NoisyEditor(model, spec_for(model))
    name = editor.param_names()[0]
    w0 = float(torch.linalg.norm(dict(model.named_parameters())[name].detach()))
    run_sequential(model, None, RECORDS, editor, RunConfig(n_edits=4, batch_size=2, eval_every=1), {}, tmp_path,
                   {"x": 1}, seed=0, progress=False, evaluate=fake_evaluate, hidden_probe=False)
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert curve["weight_norm_before"][name] == pytest.approx(w0, rel=1e-6)
    last = float(torch.linalg.norm(dict(model.named_parameters())[name].detach()))
    assert curve["drift"][-1]["weight_norm"][name] == pytest.approx(last, rel=1e-6)
    assert curve["drift"][0]["weight_norm"][name] != pytest.approx(w0, rel=1e-9)  # the first round changed it


def test_defaults_match_the_schema():
    from pathlib import Path

    import yaml

    from seqedit.evaluate import GENERATION_SUCCESS_DEFAULTS
    from seqedit.evaluate.capability import CAPABILITY_DEFAULTS

    schema = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml").read_text())
    ev = schema["properties"]["evaluation"]["properties"]
    assert {k: v["default"] for k, v in ev["capability"]["properties"].items()} == CAPABILITY_DEFAULTS
    assert {k: v["default"] for k, v in ev["generation_success"]["properties"].items()} == GENERATION_SUCCESS_DEFAULTS
