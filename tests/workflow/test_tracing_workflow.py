"""The tracing stage in the workflow: absent unless `tracing.enabled`, wired to `seqedit trace` and
its notebook when enabled, refused for records without a true object. Dry runs only."""

from __future__ import annotations

import nbformat

from .test_workflow import BASIC_CONFIG, REPO, dry_run, job_counts


def test_tracing_is_off_by_default():
    result = dry_run("--configfile", str(BASIC_CONFIG))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert "trace_run" not in counts and "figure_tracing" not in counts


def test_enabled_tracing_adds_the_stage_and_its_figure():
    result = dry_run("--configfile", str(BASIC_CONFIG), "--printshellcmds", "--config", "tracing={enabled: true}")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["trace_run"] == 1 and counts["figure_tracing"] == 1
    out = result.stdout
    assert ("seqedit trace --config results/testbed/config/tracing.json --model results/testbed/testbed/model"
            " --records data/world/counterfact.json --kind counterfact --out results/testbed/tracing/tracing.json") in out
    assert f"papermill {REPO}/notebooks/tracing.ipynb results/testbed/notebooks/tracing.ipynb" in out
    assert "-r tracing results/testbed/tracing/tracing.json" in out
    assert ("--tracing results/testbed/tracing/tracing.json --tracing-figure figures/testbed_tracing.png"
            " --hparams-dir config/hparams --hparams-model testbed --html") in out  # the report shows it
    assert "--stats-config results/testbed/config/stats.json" in out  # and the deviations from the papers


def test_tracing_without_a_true_object_fails_before_running():
    result = dry_run("--configfile", str(BASIC_CONFIG), "--config", "tracing={enabled: true}",
                     "data={source: zsre}")
    assert result.returncode != 0
    assert "tracing.enabled needs records with a true object" in result.stdout + result.stderr


def test_tracing_notebook_has_a_parameters_cell():
    notebook = nbformat.read(REPO / "notebooks" / "tracing.ipynb", as_version=4)
    nbformat.validate(notebook)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "tracing =" in tagged[0].source
