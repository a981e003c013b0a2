"""The records a study uses: the first N records of a benchmark file, unchanged and validated."""

from __future__ import annotations

import json

import pytest

from seqedit.data import RecordError, load_records
from seqedit.data.subset import write_subset

from .test_loaders import CF_RECORD


def _records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        raw = json.loads(json.dumps(CF_RECORD))
        raw["case_id"] = i
        raw["extra_field"] = {"kept": i}
        out.append(raw)
    return out


def test_first_records_copied_unchanged(tmp_path):
    src = tmp_path / "cf.json"
    src.write_text(json.dumps(_records(5)))
    assert write_subset(src, "counterfact", tmp_path / "out" / "records.json", limit=3) == (3, 0)
    assert json.loads((tmp_path / "out" / "records.json").read_text()) == _records(3)
    assert [r.case_id for r in load_records(tmp_path / "out" / "records.json", "counterfact")] == [0, 1, 2]


def test_no_limit_copies_all_and_bytes_are_stable(tmp_path):
    src = tmp_path / "cf.json"
    src.write_text(json.dumps(_records(4)))
    write_subset(src, "counterfact", tmp_path / "a.json")
    write_subset(src, "counterfact", tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert len(json.loads((tmp_path / "a.json").read_text())) == 4


def test_limit_beyond_the_file_fails(tmp_path):
    src = tmp_path / "cf.json"
    src.write_text(json.dumps(_records(2)))
    with pytest.raises(ValueError, match=r"cf\.json: data\.limit is 5 but the file has only 2 records"):
        write_subset(src, "counterfact", tmp_path / "out.json", limit=5)


def test_bad_record_within_the_limit_fails_naming_the_field(tmp_path):
    records = _records(3)
    del records[1]["requested_rewrite"]["subject"]
    src = tmp_path / "cf.json"
    src.write_text(json.dumps(records))
    with pytest.raises(RecordError, match="requested_rewrite.subject"):
        write_subset(src, "counterfact", tmp_path / "out.json", limit=2)
    assert not (tmp_path / "out.json").exists()
    write_subset(src, "counterfact", tmp_path / "out.json", limit=1)  # the bad record lies beyond it


def _zsre(i: int, pred: str) -> dict:
    return {"case_id": i, "subject": f"Stellan {i}", "src": f"Where was Stellan {i} born?", "pred": pred,
            "rephrase": f"What is the birthplace of Stellan {i}?", "answers": ["Quell"], "alt": "Zorvia",
            "loc": "nq question: who wrote the book", "loc_ans": "Marta"}


def test_drop_unchanged_leaves_out_no_op_edits_before_the_limit(tmp_path):
    src = tmp_path / "zsre.json"
    raws = [_zsre(0, "Quell"), _zsre(1, "Orrin"), _zsre(2, "Quell"), _zsre(3, "Tamsk"), _zsre(4, "Vell")]
    src.write_text(json.dumps(raws))
    out = tmp_path / "records.json"
    assert write_subset(src, "zsre", out, limit=2, drop_unchanged=True) == (2, 2)
    assert [r["case_id"] for r in json.loads(out.read_text())] == [1, 3]
    assert all(r.request.target_new != r.request.target_true for r in load_records(out, "zsre"))
    with pytest.raises(ValueError, match="limit is 4 but the file has only 3 records with a changed target"):
        write_subset(src, "zsre", out, limit=4, drop_unchanged=True)
    assert write_subset(src, "zsre", out, limit=4) == (4, 0)  # without the flag, no record is left out
