"""Layer statistics from the model's own generations in the workflow: no corpus input, no --corpus.
Dry runs only."""

from __future__ import annotations

from .test_workflow import BASIC_CONFIG, dry_run


def test_generated_statistics_read_no_corpus():
    result = dry_run("--configfile", str(BASIC_CONFIG), "--printshellcmds", "--config",
                     "stats={source: generated, seed: 3, generated: {n_tokens: 16, prompts: ['', The]}}")
    assert result.returncode == 0, result.stderr
    (command,) = [line[line.index("seqedit stats"):] for line in result.stdout.splitlines() if "seqedit stats" in line]
    assert command.startswith("seqedit stats --config results/testbed/config/stats.json --model results/testbed/testbed/model")
    assert "--corpus" not in command
    (inputs,) = [line for line in result.stdout.splitlines() if "input: results/testbed/config/stats.json" in line]
    assert "corpus" not in inputs


def test_unknown_generation_setting_fails_naming_it():
    result = dry_run("--configfile", str(BASIC_CONFIG), "--config", "stats={source: generated, generated: {top_q: 1}}")
    assert result.returncode != 0
    assert "top_q" in result.stdout + result.stderr
