"""benchmarks/pipeline.py without running it: the README command it times, its options, its job count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def pipeline():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pipeline

        yield pipeline
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_times_the_readme_command(pipeline):
    setup, run = pipeline.readme_command()
    assert setup == "python3 -m venv .venv && . .venv/bin/activate && pip install -e ."
    assert run == "snakemake --cores all"


def test_readme_without_the_command_is_one_line_error(pipeline, tmp_path):
    (tmp_path / "README.md").write_text("# nothing to run\n```bash\npytest\n```\n")
    with pytest.raises(pipeline.PipelineError, match="no command of the form"):
        pipeline.readme_command(tmp_path / "README.md")


def test_options(pipeline, tmp_path, capsys):
    args = pipeline.parse_args(["--configfile", ".test/config_basic/config.yaml", "--keep"])
    assert args.configfile == ".test/config_basic/config.yaml" and args.keep and args.workdir is None
    assert pipeline.config_argument(".test/config_basic/config.yaml") == ".test/config_basic/config.yaml"  # the clone's copy
    outside = tmp_path / "tiny.yaml"
    outside.write_text("seeds: [0]\n")
    assert pipeline.config_argument(str(outside)) == str(outside.resolve())
    for bad, message in ((["--configfile", "nowhere.yaml"], "no such file"),
                         (["--shared", str(tmp_path / "none")], "no such folder"),
                         (["--workdir", str(tmp_path)], "is not empty")):
        with pytest.raises(SystemExit) as stop:
            pipeline.parse_args(bad)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_counts_the_jobs_of_snakemakes_table(pipeline):
    output = "Building DAG of jobs...\nJob stats:\njob        count\n-------  -------\nall            1\nedit_run       4\ntotal          5\n"
    assert pipeline.count_jobs(output) == 5
    assert pipeline.count_jobs("Nothing to be done (all requested files are present and up to date).") is None
