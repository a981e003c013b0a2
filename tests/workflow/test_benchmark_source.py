"""A local benchmark file reruns the study when its content changes, not when a copy only gives it
newer timestamps (a re-copied or re-mounted data folder must not redo hours of edit runs)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

from .conftest import workflow_env

RECORDS = "data/counterfact/records.json"
CF_RECORD = {
    "case_id": 0,
    "requested_rewrite": {"prompt": "{} was born in", "relation_id": "P19", "subject": "Varkel Dunmore",
                          "target_new": {"str": "Zorvia", "id": "Q1"}, "target_true": {"str": "Quell", "id": "Q2"}},
    "paraphrase_prompts": ["The birthplace of Varkel Dunmore is"],
    "neighborhood_prompts": ["Mirel Astan was born in"],
    "attribute_prompts": ["Tessa Brink was born in"],
    "generation_prompts": ["Varkel Dunmore grew up in a town where"],
}


def _records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        record = copy.deepcopy(CF_RECORD)
        record["case_id"] = i
        out.append(record)
    return out


def _snakemake(work, source, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", RECORDS, "--configfile",
         "config/counterfact-testbed.yaml", "--config", f"data={{counterfact_path: {source}, limit: null}}", *args],
        cwd=work, env=workflow_env(), capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def test_benchmark_file_reruns_the_subset_on_new_content_not_on_new_timestamps(workflow_copy, tmp_path):
    work = workflow_copy("benchmark_source")
    source = tmp_path / "shared" / "cf.json"
    source.parent.mkdir()
    source.write_text(json.dumps(_records(3)))
    _snakemake(work, source)
    records = work / RECORDS
    assert [r["case_id"] for r in json.loads(records.read_text())] == [0, 1, 2]

    # The same bytes, copied anew: a newer timestamp than the records made from it.
    now = time.time()
    os.utime(records, (now - 500, now - 500))
    written = records.stat().st_mtime_ns
    os.utime(source, (now - 100, now - 100))
    assert "data_subset" not in _snakemake(work, source, "-n")
    _snakemake(work, source)
    assert records.stat().st_mtime_ns == written

    # New content with the same timestamp: the subset runs again and reads it.
    source.write_text(json.dumps(_records(2)))
    os.utime(source, (now - 100, now - 100))
    dry = _snakemake(work, source, "-n")
    assert "data_subset" in dry and "params" in dry.lower(), dry
    _snakemake(work, source)
    assert [r["case_id"] for r in json.loads(records.read_text())] == [0, 1]
