"""Loaders: mapping of both schemas, error reporting on bad files, and the real data."""

from __future__ import annotations

import copy
import json

import pytest

from seqedit.data import RecordError, load_counterfact, load_records, load_zsre

CF_RECORD = {
    "case_id": 7,
    "pararel_idx": 12,
    "requested_rewrite": {
        "prompt": "{} was born in",
        "relation_id": "P19",
        "target_new": {"str": "Zorvia", "id": "Q1"},
        "target_true": {"str": "Quell", "id": "Q2"},
        "subject": "Varkel Dunmore",
    },
    "paraphrase_prompts": ["Orin Tallow speaks Velorian. The birthplace of Varkel Dunmore is"],
    "neighborhood_prompts": ["Mirel Astan was born in"],
    "attribute_prompts": ["Tessa Brink was born in"],
    "generation_prompts": ["Varkel Dunmore grew up in a town where"],
}

ZSRE_RECORD = {
    "subject": "Varkel Dunmore",
    "src": "Where was Varkel Dunmore born?",
    "pred": "Quell",
    "rephrase": "What is the birthplace of Varkel Dunmore?",
    "alt": "Zorvia",
    "answers": ["Zorvia"],
    "loc": "nq question: who founded quandex",
    "loc_ans": "Mirel Astan",
}


def _write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def _cf_with(edit) -> list[dict]:
    """Two good records, the second modified in place by `edit`."""
    second = copy.deepcopy(CF_RECORD)
    second["case_id"] = 8
    edit(second)
    return [CF_RECORD, second]


def test_counterfact_mapping(tmp_path):
    rec = load_counterfact(_write(tmp_path, "cf.json", [CF_RECORD]))[0]
    assert rec.kind == "counterfact" and rec.case_id == 7
    assert rec.request.query == "Varkel Dunmore was born in"
    assert (rec.request.target_new, rec.request.target_true, rec.request.relation_id) == ("Zorvia", "Quell", "P19")
    assert rec.neighborhood_prompts == ("Mirel Astan was born in",) and rec.neighborhood_answer is None
    assert rec.attribute_prompts == ("Tessa Brink was born in",)
    assert rec.extra == {"pararel_idx": 12, "target_new_id": "Q1", "target_true_id": "Q2"}


def test_zsre_mapping_and_index_case_ids(tmp_path):
    other = {k: v for k, v in ZSRE_RECORD.items() if k != "pred"}
    other.update(subject="Orin Tallow", src="Orin Tallow speaks what? Orin Tallow")
    recs = load_zsre(_write(tmp_path, "z.json", [ZSRE_RECORD, other]))
    assert [r.case_id for r in recs] == [0, 1]
    req = recs[0].request
    assert recs[0].kind == "zsre"
    assert req.prompt == "Where was {} born?" and req.target_new == "Zorvia" and req.target_true == "Quell"
    assert recs[0].paraphrase_prompts == ("What is the birthplace of Varkel Dunmore?",)
    assert recs[0].neighborhood_prompts == ("nq question: who founded quandex?",)
    assert recs[0].neighborhood_answer == "Mirel Astan"
    assert recs[1].request.prompt == "{} speaks what? Orin Tallow"  # first occurrence only
    assert recs[1].request.target_true is None


def test_zsre_uses_case_id_when_present(tmp_path):
    recs = load_zsre(_write(tmp_path, "z.json", [dict(ZSRE_RECORD, case_id=42)]))
    assert recs[0].case_id == 42


def test_limit_and_dispatch(tmp_path):
    cf = _write(tmp_path, "cf.json", _cf_with(lambda r: None))
    assert [r.case_id for r in load_records(cf, "counterfact", limit=1)] == [7]
    assert len(load_records(cf, "counterfact")) == 2
    z = _write(tmp_path, "z.json", [ZSRE_RECORD] * 3)
    assert len(load_records(z, "zsre", limit=2)) == 2
    with pytest.raises(ValueError, match="counterfact.*zsre"):
        load_records(cf, "mquake")


def _del(*keys):
    def edit(r):
        obj = r
        for k in keys[:-1]:
            obj = obj[k]
        del obj[keys[-1]]
    return edit


def _set(value, *keys):
    def edit(r):
        obj = r
        for k in keys[:-1]:
            obj = obj[k]
        obj[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, field", [
    (_del("requested_rewrite"), "requested_rewrite"),
    (_del("requested_rewrite", "target_new", "str"), "requested_rewrite.target_new.str"),
    (_del("requested_rewrite", "subject"), "requested_rewrite.subject"),
    (_del("neighborhood_prompts"), "neighborhood_prompts"),
    (_set("{} was born in {}", "requested_rewrite", "prompt"), "requested_rewrite.prompt"),
    (_set("Varkel Dunmore was born in", "requested_rewrite", "prompt"), "requested_rewrite.prompt"),
    (_set("  ", "requested_rewrite", "target_new", "str"), "requested_rewrite.target_new.str"),
    (_set("", "requested_rewrite", "target_true", "str"), "requested_rewrite.target_true.str"),
    (_set("", "requested_rewrite", "subject"), "requested_rewrite.subject"),
    (_set("Zorvia", "requested_rewrite", "target_new"), "requested_rewrite.target_new"),
    (_set("a prompt", "paraphrase_prompts"), "paraphrase_prompts"),
    (_set([1], "paraphrase_prompts"), "paraphrase_prompts[0]"),
    (_set("8", "case_id"), "case_id"),
])
def test_counterfact_bad_record_names_file_case_and_field(tmp_path, edit, field):
    path = _write(tmp_path, "bad_cf.json", _cf_with(edit))
    with pytest.raises(RecordError) as info:
        load_counterfact(path)
    msg = str(info.value)
    assert "bad_cf.json" in msg and f"field '{field}'" in msg
    assert "case 8:" in msg or "case 1:" in msg  # the case id, or the index when case_id is unusable
    assert info.value.field_name == field


def test_counterfact_missing_case_id_reports_index(tmp_path):
    path = _write(tmp_path, "bad_cf.json", _cf_with(_del("case_id")))
    with pytest.raises(RecordError, match=r"bad_cf\.json: case 1: field 'case_id': missing"):
        load_counterfact(path)


def test_counterfact_duplicate_case_id(tmp_path):
    path = _write(tmp_path, "dup.json", [CF_RECORD, CF_RECORD])
    with pytest.raises(RecordError, match=r"dup\.json: case 7: field 'case_id': duplicate"):
        load_counterfact(path)


@pytest.mark.parametrize("change, field", [
    ({"subject": "Orin Tallow"}, "src"),
    ({"answers": []}, "answers"),
    ({"answers": [" "]}, "answers[0]"),
    ({"pred": ""}, "pred"),
    ({"subject": " "}, "subject"),
    ({"loc": "who founded quandex"}, "loc"),
    ({"src": "Where was {Varkel Dunmore} born?"}, "src"),
    ({"rephrase": None}, "rephrase"),
    ({"answers": None}, "answers"),
])
def test_zsre_bad_record_names_file_case_and_field(tmp_path, change, field):
    path = _write(tmp_path, "bad_zsre.json", [ZSRE_RECORD, dict(ZSRE_RECORD, **change)])
    with pytest.raises(RecordError) as info:
        load_zsre(path)
    msg = str(info.value)
    assert "bad_zsre.json" in msg and "case 1:" in msg and f"field '{field}'" in msg


@pytest.mark.parametrize("key", ["subject", "src", "answers", "loc", "loc_ans", "rephrase"])
def test_zsre_missing_field(tmp_path, key):
    rec = dict(ZSRE_RECORD, case_id=5)
    del rec[key]
    path = _write(tmp_path, "bad_zsre.json", [rec])
    with pytest.raises(RecordError, match=rf"bad_zsre\.json: case 5: field '{key}': missing"):
        load_zsre(path)


@pytest.mark.parametrize("loader", [load_counterfact, load_zsre])
@pytest.mark.parametrize("text", ["this is not json", json.dumps([CF_RECORD, ZSRE_RECORD])[:-40], ""])
def test_invalid_or_truncated_json(tmp_path, loader, text):
    path = _write(tmp_path, "broken.json", text)
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        loader(path)


@pytest.mark.parametrize("loader", [load_counterfact, load_zsre])
def test_top_level_must_be_list(tmp_path, loader):
    path = _write(tmp_path, "obj.json", {"records": []})
    with pytest.raises(ValueError, match=r"obj\.json: top level is a JSON dict"):
        loader(path)


@pytest.mark.parametrize("loader", [load_counterfact, load_zsre])
def test_record_must_be_object(tmp_path, loader):
    path = _write(tmp_path, "lst.json", [[1, 2]])
    with pytest.raises(RecordError, match=r"lst\.json: case 0: field '<record>'"):
        loader(path)


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "cf.json"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_records(missing, "counterfact")


def test_bad_limit(tmp_path):
    path = _write(tmp_path, "cf.json", [CF_RECORD])
    with pytest.raises(ValueError, match="limit"):
        load_counterfact(path, limit=-1)


def test_real_counterfact_union(shared_data):
    records = load_counterfact(shared_data / "counterfact" / "counterfact_subset_union.json")
    assert len(records) == 1454
    first = records[0]
    assert first.case_id == 18 and first.request.subject == "Porsche 911"
    assert first.request.query == "Porsche 911, created by"
    assert (first.request.target_new, first.request.target_true) == ("Honda", "Porsche")
    assert len({r.case_id for r in records}) == 1454
    assert all(len(r.paraphrase_prompts) == 2 and len(r.neighborhood_prompts) == 10 for r in records)


def test_real_zsre_easyedit(shared_data):
    records = load_zsre(shared_data / "zsre" / "easyedit" / "zsre_mend_eval_portability_gpt4.json")
    assert len(records) == 1037
    first = records[0]
    assert first.case_id == 0 and first.request.subject == "IAAF Combined Events Challenge"
    assert first.request.prompt == "When was the inception of {}?"
    assert (first.request.target_new, first.request.target_true) == ("1998", "2011")
    assert first.neighborhood_prompts == ("nq question: what is the name of the last episode of spongebob?",)
    assert first.neighborhood_answer == "The String"
    assert all(r.request.subject in r.request.query for r in records)


def test_real_limit(shared_data):
    records = load_records(shared_data / "counterfact" / "counterfact_subset_union.json", "counterfact", limit=5)
    assert len(records) == 5 and records[0].case_id == 18
