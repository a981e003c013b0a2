"""CounterFact in EasyEdit's reduced form: the mapping onto EditRecord, its errors, and the real splits."""

from __future__ import annotations

import json

import pytest

from seqedit.data import RecordError, load_records, read_raw_records
from seqedit.data.subset import write_subset

RECORD = {
    "case_id": 3,
    "prompt": "The mother tongue of Varkel Dunmore is",
    "target_new": "Velorian",
    "subject": "Varkel Dunmore",
    "ground_truth": "Zorvian",
    "rephrase_prompt": "Where Varkel Dunmore is from, people speak",
    "locality_prompt": "Mirel Astan is a native speaker of",
    "locality_ground_truth": "Zorvian",
}


def write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_mapping_onto_a_counterfact_record(tmp_path):
    (record,) = load_records(write(tmp_path / "cf.json", [RECORD]), "counterfact_easyedit")
    assert record.kind == "counterfact" and record.case_id == 3
    assert record.request.prompt == "The mother tongue of {} is"
    assert record.request.query == RECORD["prompt"]
    assert (record.request.target_new, record.request.target_true) == ("Velorian", "Zorvian")
    assert record.paraphrase_prompts == (RECORD["rephrase_prompt"],)
    assert record.neighborhood_prompts == (RECORD["locality_prompt"],)
    assert record.attribute_prompts == () and record.generation_prompts == ()


@pytest.mark.parametrize("change, field", [
    ({"prompt": "The mother tongue of him is"}, "prompt"),
    ({"locality_ground_truth": "Velorian"}, "locality_ground_truth"),
    ({"rephrase_prompt": " "}, "rephrase_prompt"),
    ({"case_id": "3"}, "case_id"),
])
def test_bad_record_names_file_case_and_field(tmp_path, change, field):
    path = write(tmp_path / "cf.json", [{**RECORD, **change}])
    with pytest.raises(RecordError, match=rf"cf.json: case \d+: field '{field}'"):
        load_records(path, "counterfact_easyedit")


def test_folder_reads_the_three_splits_sorted_and_names_a_missing_one(tmp_path):
    for name, ids in (("counterfact-train.json", [2, 0]), ("counterfact-val.json", [4]),
                      ("counterfact-edit.json", [1, 3])):
        write(tmp_path / name, [{**RECORD, "case_id": i} for i in ids])
    assert [r.case_id for r in load_records(tmp_path, "counterfact_easyedit")] == [0, 1, 2, 3, 4]
    assert [r["case_id"] for r in read_raw_records(tmp_path, "counterfact_easyedit")] == [0, 1, 2, 3, 4]
    n, _ = write_subset(tmp_path, "counterfact_easyedit", tmp_path / "out" / "records.json", limit=3)
    assert n == 3 and [r.case_id for r in load_records(tmp_path / "out" / "records.json", "counterfact_easyedit")] == [0, 1, 2]
    (tmp_path / "counterfact-val.json").unlink()
    with pytest.raises(FileNotFoundError, match="lacks counterfact-val.json"):
        load_records(tmp_path, "counterfact_easyedit")


def test_real_easyedit_counterfact_has_every_case_once(shared_data):
    folder = shared_data / "counterfact" / "easyedit"
    records = load_records(folder, "counterfact_easyedit")
    assert len(records) == 21919
    assert [r.case_id for r in records] == list(range(21919))
    assert all(len(r.paraphrase_prompts) == 1 and len(r.neighborhood_prompts) == 1 for r in records)
    first = records[0]
    assert first.request.prompt == "The mother tongue of {} is"
    assert first.request.subject == "Danielle Darrieux"
    assert (first.request.target_new, first.request.target_true) == ("English", "French")
    assert first.paraphrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert first.neighborhood_prompts == ("Michel Rocard is a native speaker of",)
    assert len(load_records(folder / "counterfact-val.json", "counterfact_easyedit")) == 1919
