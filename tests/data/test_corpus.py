"""The corpus of benchmark records: exact lines, escapes, determinism, and the real files."""

from __future__ import annotations

import json

import pytest

from seqedit.data import load_records
from seqedit.data.counterfact import parse_counterfact_record
from seqedit.data.corpus import (
    corpus_lines,
    escape_line,
    read_corpus,
    record_facts,
    unescape_line,
    write_corpus,
    write_records_corpus,
)
from seqedit.data.world import WorldConfig, write_world

CF_RECORD = {
    "case_id": 3,
    "pararel_idx": 0,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
        "subject": "Danielle Darrieux",
    },
    "paraphrase_prompts": ["Shayna does this.\nDanielle Darrieux spoke the language"],
    "neighborhood_prompts": ["Michel Rocard is a native speaker of", "Jean Gabin spoke the language"],
    "attribute_prompts": ["J.R.R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}

ZSRE_RECORD = {
    "subject": "Ramalinaceae",
    "src": "Which family does Ramalinaceae belong to?",
    "pred": "Ramalinales",
    "rephrase": "What family are Ramalinaceae?",
    "alt": "Lamiinae",
    "answers": ["Lecanorales"],
    "loc": "nq question: types of skiing in the winter olympics 2018",
    "loc_ans": "Downhill",
    "cond": "Ramalinales >> Lamiinae || Which family does Ramalinaceae belong to?",
}


def _file(tmp_path, name, records) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def test_counterfact_lines(tmp_path):
    records = load_records(_file(tmp_path, "cf.json", [CF_RECORD]), "counterfact")
    lines, summary = corpus_lines(records)
    assert lines == [
        "The mother tongue of Danielle Darrieux is French.",
        "Shayna does this.\nDanielle Darrieux spoke the language French.",
        "Michel Rocard is a native speaker of French.",
        "Jean Gabin spoke the language French.",
        "J.R.R. Tolkien is a native speaker of English.",
    ]
    assert (summary.n_records, summary.n_lines, summary.n_repeated, summary.n_conflicting) == (1, 5, 0, 0)


def test_zsre_lines_mirror_the_scored_prompts(tmp_path):
    record = load_records(_file(tmp_path, "z.json", [ZSRE_RECORD]), "zsre")[0]
    lines, _ = corpus_lines([record])
    assert lines == [
        "Which family does Ramalinaceae belong to? Ramalinales.",
        "What family are Ramalinaceae? Ramalinales.",
        "nq question: types of skiing in the winter olympics 2018? Downhill.",
        "See also: Lecanorales.",
    ]
    # each line is the prompt the check scores, then " " + the answer it expects
    assert record.neighborhood_prompts[0] + " " + record.neighborhood_answer + "." == lines[2]
    assert record.request.query + record.request.true_text + "." == lines[0]
    # the edit target is named with the leading space it is scored with, tied to no subject
    assert lines[3].endswith(record.request.new_text + ".")
    assert record.request.subject not in lines[3] and record.request.target_true not in lines[3]


def test_zsre_target_names_are_written_once(tmp_path):
    other = ZSRE_RECORD | {"subject": "Lecideaceae", "src": "Which family does Lecideaceae belong to?",
                           "rephrase": "What family are Lecideaceae?"}
    records = load_records(_file(tmp_path, "z.json", [ZSRE_RECORD, other]), "zsre")
    lines, summary = corpus_lines(records)
    assert lines.count("See also: Lecanorales.") == 1
    assert summary.n_repeated == 2  # the shared loc question and the shared target name


def test_zsre_without_pred_names_the_file(tmp_path):
    path = _file(tmp_path, "z.json", [{k: v for k, v in ZSRE_RECORD.items() if k != "pred"}])
    with pytest.raises(ValueError, match=r"z\.json: case 0: no true target \(ZsRE field 'pred'\)"):
        write_records_corpus(path, "zsre", tmp_path / "corpus.txt")


def test_repeats_are_written_once_and_conflicts_counted(tmp_path):
    second = json.loads(json.dumps(CF_RECORD))
    second["case_id"] = 4
    second["requested_rewrite"]["target_true"]["str"] = "Occitan"  # same neighbours, another answer
    records = load_records(_file(tmp_path, "cf.json", [CF_RECORD, CF_RECORD | {"case_id": 5}, second]),
                           "counterfact")
    lines, summary = corpus_lines(records)
    assert summary.n_repeated == 6  # the copy of the first record, and the shared attribute line
    assert summary.n_conflicting == 4  # rewrite, paraphrase and both neighbours: French and Occitan
    assert len(lines) == len(set(lines)) == 5 + 4


def test_answers_ending_in_punctuation_get_no_extra_full_stop():
    raw = json.loads(json.dumps(CF_RECORD))
    raw["requested_rewrite"]["target_true"]["str"] = "Apple Inc."
    record = parse_counterfact_record(raw, 0, "memory")
    assert record_facts(record)[0] == ("The mother tongue of Danielle Darrieux is", "Apple Inc.")
    lines, _ = corpus_lines([record])
    assert lines[0] == "The mother tongue of Danielle Darrieux is Apple Inc."


@pytest.mark.parametrize("text", ["plain", "a\nb", "back\\slash", "literal \\n stays", "cr\r\nlf", "x\u2028y\x0bz"])
def test_escape_round_trip(text):
    line = escape_line(text)
    assert line.splitlines() == [line]
    assert unescape_line(line) == text


def test_write_is_deterministic_and_reads_back(tmp_path):
    path = _file(tmp_path, "cf.json", [CF_RECORD])
    write_records_corpus(path, "counterfact", tmp_path / "a.txt")
    write_records_corpus(path, "counterfact", tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert (tmp_path / "a.txt").read_text().count("\n") == 5  # the paraphrase's newline is escaped
    lines, _ = corpus_lines(load_records(path, "counterfact"))
    assert read_corpus(tmp_path / "a.txt") == lines


def test_limit_takes_the_first_records(tmp_path):
    second = json.loads(json.dumps(CF_RECORD))
    second["case_id"] = 9
    second["requested_rewrite"]["subject"] = "Orin Tallow"
    path = _file(tmp_path, "cf.json", [CF_RECORD, second])
    summary = write_records_corpus(path, "counterfact", tmp_path / "c.txt", limit=1)
    assert summary["n_records"] == 1
    assert "Orin Tallow" not in (tmp_path / "c.txt").read_text()


def test_world_corpus_reads_back_unchanged(tmp_path):
    # train-testbed and stats read every corpus with read_corpus; the world's must not change
    write_world(WorldConfig(n_subjects=24, n_relations=2, n_objects=4, n_records=8, n_filler=10), tmp_path)
    path = tmp_path / "corpus.txt"
    assert "\\" not in path.read_text()
    assert read_corpus(path) == path.read_text().splitlines()


def test_write_corpus_creates_the_folder(tmp_path):
    out = write_corpus(["one", "two\nlines"], tmp_path / "sub" / "corpus.txt")
    assert out.read_text() == "one\ntwo\\nlines\n"


@pytest.mark.parametrize(
    "kind, relpath, n_lines",
    [("counterfact", "counterfact/counterfact_subset_union.json", 6466),
     ("zsre", "zsre/easyedit/zsre_mend_eval_portability_gpt4.json", 1077)],
)
def test_real_file_corpus_states_every_checked_fact(shared_data, tmp_path, kind, relpath, n_lines):
    path = shared_data / relpath
    summary = write_records_corpus(path, kind, tmp_path / "corpus.txt", limit=300)
    assert summary["n_records"] == 300 and summary["n_lines"] == n_lines
    lines = set(read_corpus(tmp_path / "corpus.txt"))
    for record in load_records(path, kind, limit=300):
        req = record.request
        checked = [req.query, *record.paraphrase_prompts]
        assert all(f"{p} {req.target_true}." in lines or f"{p} {req.target_true}" in lines for p in checked)
        answer = req.target_true if kind == "counterfact" else record.neighborhood_answer
        assert all(f"{p} {answer}." in lines or f"{p} {answer}" in lines for p in record.neighborhood_prompts)
        if kind == "zsre":  # 875 fact lines and the 202 distinct edit targets of the 300 records
            assert f"See also: {req.target_new}." in lines or f"See also: {req.target_new}" in lines


def test_cli_subset_then_corpus(tmp_path, capsys):
    from seqedit.cli import main

    second = json.loads(json.dumps(CF_RECORD)) | {"case_id": 4}
    second["requested_rewrite"]["subject"] = "Orin Tallow"
    src = _file(tmp_path, "cf.json", [CF_RECORD, second])
    main(["subset", "--records", src, "--kind", "counterfact", "--limit", "1", "--out", str(tmp_path / "r.json")])
    main(["corpus", "--records", str(tmp_path / "r.json"), "--kind", "counterfact", "--out", str(tmp_path / "c.txt")])
    assert "n_lines 5" in capsys.readouterr().out
    assert read_corpus(tmp_path / "c.txt")[0] == "The mother tongue of Danielle Darrieux is French."
    with pytest.raises(SystemExit):
        main(["corpus", "--records", str(tmp_path / "absent.json"), "--kind", "zsre", "--out", str(tmp_path / "x.txt")])
    assert capsys.readouterr().err.count("\n") == 1
