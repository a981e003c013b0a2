"""The deviations table: read from the study's config, the statistics config and the papers'
hyperparameter files, with nothing written per study."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqedit.analysis.deviations import PAPER, deviations, hparam_differences
from seqedit.report.build import deviations_section

REPO = Path(__file__).resolve().parents[2]


def study(model="testbed", dtype="float32", n_edits=120, batch_size=10, methods=("memit", "nmke", "kn"), hparams=None):
    return {"setup": {"model": {"name": model, "path": None, "dtype": dtype},
                      "run": {"n_edits": n_edits, "batch_size": batch_size}, "methods": list(methods),
                      "hparams": hparams or {}}}


def by_aspect(rows):
    return {r["aspect"]: r for r in rows}


def test_a_testbed_study_names_each_deviation():
    stats = {"source": "corpus", "n_samples": 2000, "max_length": 32}
    rows = by_aspect(deviations(study(hparams={"kn": {"steps": 10}}), stats))
    assert rows["Model"]["deviates"] and rows["Model"]["here"] == "testbed"
    assert not rows["Weights and edits dtype"]["deviates"]
    assert rows["Edit stream"]["deviates"] and rows["Edit stream"]["here"] == "120 edits in batches of 10"
    assert rows["Layer statistics E[kkᵀ]"]["deviates"]
    assert rows["Layer statistics E[kkᵀ]"]["here"] == "the world's corpus, 2000 texts of at most 32 tokens"
    assert rows["NMKE's mask"]["deviates"] and "pooled over the 10 requests" in rows["NMKE's mask"]["here"]
    assert rows["KN integrated-gradient steps"] == {"aspect": "KN integrated-gradient steps", "papers": "20",
                                                    "here": "10", "deviates": True}
    assert "KNE" not in rows  # not in the study


def test_the_papers_setup_deviates_nowhere_but_the_model_file_comparison():
    stats = {"source": "dataset", "dataset": {"path": "wikipedia", "name": "20200501.en"},
             "n_samples": PAPER["stats_n_samples"], "max_length": 8192}
    rows = by_aspect(deviations(study(model="llama3-8b", n_edits=2000, batch_size=100, methods=("memit",)), stats))
    assert [a for a, r in rows.items() if r["deviates"]] == []
    assert rows["Layer statistics E[kkᵀ]"]["here"].startswith("dataset wikipedia (20200501.en), 100000 texts")
    half = by_aspect(deviations(study(model="llama3-8b", dtype="bfloat16", n_edits=2000, batch_size=100,
                                      methods=("memit",)), stats))
    assert [a for a, r in half.items() if r["deviates"]] == ["Weights and edits dtype"]


def test_hyperparameters_are_compared_with_the_papers_files():
    paper = yaml.safe_load((REPO / "config/hparams/memit/llama3-8b.yaml").read_text())
    changed = {**paper, "v_lr": paper["v_lr"] * 2, "v_loss_layer": 3}  # v_loss_layer is informational
    rows = by_aspect(deviations(study(methods=("memit",), hparams={"memit": changed}), None,
                                REPO / "config/hparams", "testbed"))
    assert rows["memit hyperparameters"]["papers"] == "llama3-8b file"  # no paper file for the testbed
    assert rows["memit hyperparameters"]["here"] == f"v_lr: {paper['v_lr']} → {paper['v_lr'] * 2}"
    gptj = yaml.safe_load((REPO / "config/hparams/memit/gpt-j-6b.yaml").read_text())
    same = by_aspect(deviations(study(model="gpt-j-6b", methods=("memit",), hparams={"memit": gptj}), None,
                                REPO / "config/hparams", "gpt-j-6b"))
    assert same["memit hyperparameters"] == {"aspect": "memit hyperparameters", "papers": "gpt-j-6b file",
                                             "here": "the same", "deviates": False}
    assert "Layer statistics E[kkᵀ]" not in same  # no statistics config given
    assert hparam_differences({"a": True, "b": 1}, {"a": False, "b": 1, "c": 2}) == ["a: false → true"]


def test_report_section_counts_the_deviations():
    rows = deviations(study(methods=("memit",)), None)
    (section,) = deviations_section(rows)
    table = section["blocks"][1]
    assert section["heading"] == "Deviations from the papers' protocols"
    assert len(table["rows"]) == len(rows) and [r[3] for r in table["rows"]] == ["yes", "no", "yes"]
    assert section["blocks"][0]["text"].startswith("2 of 3 aspects")
    assert deviations_section(None) == []


def test_streams_of_known_records_are_a_deviation_with_their_counts():
    known = {"tried": 1454, "known": 1114, "known_fraction": 1114 / 1454}
    rows = by_aspect(deviations(study(model="smollm2-135m"), None, known=known))
    assert rows["Records edited"] == {
        "aspect": "Records edited", "papers": PAPER["records"], "deviates": True,
        "here": "seeded streams from the 1114 of 1454 records the unedited model knows "
                "(true object preferred on the rewrite prompt)"}
    assert "Records edited" not in by_aspect(deviations(study(), None))
