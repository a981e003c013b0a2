"""The knowledge check: the trained testbed passes it, an untrained model fails it with numbers."""

import json

import pytest

from seqedit.cli import main
from seqedit.config import KnowledgeCheckConfig
from seqedit.data import load_records
from seqedit.knowledge import check_knowledge
from seqedit.models.load import load_model

from conftest import make_tiny_model


def test_trained_testbed_knows_its_facts(toy_testbed, toy_world):
    model, tok = load_model(str(toy_testbed))
    records = load_records(toy_world / "counterfact.json", "counterfact")
    result = check_knowledge(model, tok, records, KnowledgeCheckConfig())
    assert result["passed"], result["message"]
    assert result["known"]["rewrite"] >= 0.95 and result["known"]["neighborhood"] >= 0.90


def test_zsre_check_reads_the_evaluations_numbers(toy_testbed, toy_world):
    # ZsRE records: rewrite / paraphrase known = P(true) > P(new) on the question and its
    # paraphrases (the CounterFact comparison), neighborhood = token accuracy of the unrelated
    # question's gold answer; passed exactly when every fraction meets its threshold.
    from dataclasses import asdict, replace

    from seqedit.evaluate.counterfact import evaluate_counterfact
    from seqedit.evaluate.zsre import evaluate_zsre

    model, tok = load_model(str(toy_testbed))
    records = load_records(toy_world / "zsre.json", "zsre")
    thresholds = KnowledgeCheckConfig()
    zsre = check_knowledge(model, tok, records, thresholds)
    as_cf = [replace(r, kind="counterfact", neighborhood_prompts=()) for r in records]
    cf = evaluate_counterfact(model, tok, as_cf)
    per = cf["per_record"]
    n_para = sum(len(r.paraphrase_prompts) for r in records)
    para_known = sum((1 - p["paraphrase_success"]) * len(r.paraphrase_prompts) for p, r in zip(per, records)) / n_para
    assert zsre["known"]["rewrite"] == pytest.approx(1 - cf["summary"]["efficacy"] / 100, abs=1e-9)
    assert zsre["known"]["paraphrase"] == pytest.approx(para_known, abs=1e-9)
    spec = evaluate_zsre(model, tok, records)["summary"]["specificity"]
    assert zsre["known"]["neighborhood"] == pytest.approx(spec / 100, abs=1e-9)
    assert zsre["passed"] == all(zsre["known"][k] >= v for k, v in asdict(thresholds).items())
    assert zsre["n_records"] == len(records) > 0


def test_untrained_model_fails_with_the_numbers(toy_world, tmp_path, capsys):
    from seqedit.models.tokenizer import train_tokenizer

    lines = (toy_world / "corpus.txt").read_text().splitlines()
    tok = train_tokenizer(lines, vocab_size=512)
    model = make_tiny_model("gpt2", len(tok))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"knowledge_check": {"rewrite": 0.95, "paraphrase": 0.9, "neighborhood": 0.9},
                               "run": {"n_edits": 8, "batch_size": 4}}))
    out = tmp_path / "check.json"
    with pytest.raises(SystemExit) as exc:
        main(["check-knowledge", "--config", str(cfg), "--model", str(tmp_path / "m"),
              "--records", str(toy_world / "counterfact.json"), "--kind", "counterfact", "--out", str(out)])
    assert "knowledge check FAILED" in str(exc.value) and "need 95%" in str(exc.value)
    assert "testbed.steps" in str(exc.value) and "knowledge_check" in str(exc.value)  # what to change
    assert not out.exists()  # nothing written as if it were a result
