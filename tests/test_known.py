"""Records the model knows: on a tiny model whose preferences are read off its logits, the
records built to be known are kept, the others dropped, and the counts and files are right."""

from __future__ import annotations

import json

import pytest
import torch

from seqedit.cli import main
from seqedit.data import load_records
from seqedit.data.stream import edit_stream
from seqedit.knowledge import known_records

from conftest import make_tiny_model

PROMPTS = ["Varkel Dunmore was born in", "The capital of Zorvia is", "Mirel Astan works for",
           "Orin Tallow speaks", "Tessa Brink plays the", "Where was Varkel Dunmore born?"]
KNOWN = {0, 2, 3, 5}  # records whose true object is the model's favourite; the others get its least liked


def one_token_words(tok) -> dict[int, str]:
    """Token id -> word for the tokens that are " word" alone (a target of one token)."""
    words = {}
    for i in range(len(tok)):
        text = tok.decode([i])
        if text.startswith(" ") and text[1:].isalpha() and tok(text).input_ids == [i]:
            words[i] = text[1:]
    return words


@pytest.fixture
def controlled(tiny_tokenizer, tmp_path):
    """(model dir, records file): each record's targets are the model's most and least likely
    one-token words after its prompt, read off the logits directly."""
    model = make_tiny_model("gpt2", len(tiny_tokenizer), seed=3)
    words = one_token_words(tiny_tokenizer)
    ids = torch.tensor(sorted(words))
    raws = []
    for case_id, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            logits = model(**tiny_tokenizer(prompt, return_tensors="pt")).logits[0, -1, ids]
        best, worst = words[int(ids[logits.argmax()])], words[int(ids[logits.argmin()])]
        assert logits.max() - logits.min() > 0.1  # a clear preference, far beyond float noise
        true, new = (best, worst) if case_id in KNOWN else (worst, best)
        subject = "Varkel Dunmore" if "Varkel" in prompt else prompt.split()[-2]
        raws.append({"case_id": case_id, "prompt": prompt, "subject": subject, "target_new": new,
                     "ground_truth": true, "rephrase_prompt": prompt, "locality_prompt": prompt,
                     "locality_ground_truth": true})
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    path = tmp_path / "records.json"
    path.write_text(json.dumps(raws))
    return tmp_path / "m", path


def test_known_records_follow_the_models_preferences(controlled):
    from seqedit.models.load import load_model

    model_dir, path = controlled
    model, tok = load_model(str(model_dir))
    records = load_records(path, "counterfact_easyedit")
    known, scores = known_records(model, tok, records, batch_size=4)
    assert [r.request.query for r in records] == PROMPTS
    assert {r.case_id for r, k in zip(records, known) if k} == KNOWN
    assert all((s["nll_true"] < s["nll_new"]) == (s["case_id"] in KNOWN) for s in scores)


def write_cfg(tmp_path, n_edits):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"dtype": "float32", "device": "cpu"}, "evaluation": {"batch_size": 4},
                               "run": {"n_edits": n_edits}}))
    return str(cfg)


def test_cli_writes_the_known_records_and_counts(controlled, tmp_path, capsys):
    model_dir, path = controlled
    out, kept = tmp_path / "known" / "known.json", tmp_path / "known" / "records.json"
    main(["known", "--config", write_cfg(tmp_path, 3), "--model", str(model_dir), "--records", str(path),
          "--kind", "counterfact_easyedit", "--out", str(out), "--records-out", str(kept), "--quiet"])
    counts = json.loads(out.read_text())
    assert (counts["tried"], counts["known"]) == (len(PROMPTS), len(KNOWN))
    assert counts["known_fraction"] == pytest.approx(len(KNOWN) / len(PROMPTS))
    assert counts["known_case_ids"] == sorted(KNOWN)
    # the kept file is the input's records, unchanged, in file order, and loads as that kind
    raws = json.loads(path.read_text())
    assert json.loads(kept.read_text()) == [raws[i] for i in sorted(KNOWN)]
    known = load_records(kept, "counterfact_easyedit")
    # every seed's stream is drawn from the known records only
    for seed in (0, 1, 2):
        assert {r.case_id for r in edit_stream(known, 3, seed)} <= KNOWN
    assert "knows 4 of 6 records" in capsys.readouterr().out


def test_cli_stops_when_fewer_are_known_than_edited(controlled, tmp_path, capsys):
    model_dir, path = controlled
    with pytest.raises(SystemExit):
        main(["known", "--config", write_cfg(tmp_path, 5), "--model", str(model_dir), "--records", str(path),
              "--kind", "counterfact_easyedit", "--out", str(tmp_path / "k.json"), "--records-out",
              str(tmp_path / "r.json"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the loader's progress bar
    assert err.startswith("seqedit known: error: the model knows 4 of the 6 records") and "run.n_edits (5)" in err
    assert not (tmp_path / "k.json").exists() and not (tmp_path / "r.json").exists()
