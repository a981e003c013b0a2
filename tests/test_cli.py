"""Reliability drills at the command line: each bad input ends `seqedit <stage>` with one line on
stderr naming the problem, exit status 1, and nothing written where a result would go.

The stages run in-process (`seqedit.cli.main`) on a tiny random GPT-2 saved with
`save_pretrained` and a tiny synthetic world, so every drill takes about a second.
"""

from __future__ import annotations

import json

import pytest
import torch

from seqedit.cli import main

from conftest import make_tiny_model
from conftest import testbed_hparams as method_config

# MEMIT with short target optimisation: the drills fail before or at the first solve.
MEMIT = {"layers": [0, 1, 2], "mom2_update_weight": 5.0, "v_num_grad_steps": 2, "n_context_templates": 0}
RUN = {"n_edits": 2, "batch_size": 1, "eval_every": 1, "curve_max_records": 2, "checkpoint_every": 1}
EVALUATION = {"batch_size": 8, "generation": {"n_records": 0}}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_tokenizer):
    """A folder with a saved 3-layer GPT-2, its layer statistics, a world and a good edit config."""
    from seqedit.core.stats import collect_second_moments
    from seqedit.data.world import WorldConfig, write_world
    from seqedit.models.arch import spec_for

    d = tmp_path_factory.mktemp("cli")
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    model.save_pretrained(d / "model")
    tiny_tokenizer.save_pretrained(d / "model")
    write_world(WorldConfig(seed=0, n_subjects=8, n_relations=1, n_objects=2, n_records=4, n_filler=0), d / "world")
    lines = (d / "world" / "corpus.txt").read_text().splitlines()
    stats = collect_second_moments(model, tiny_tokenizer, spec_for(model), lines, [0, 1, 2], progress=False)
    stats.save(d / "mom2.pt")
    write_config(d / "edit.json")
    return d


def write_config(path, method=None, **sections) -> str:
    cfg = {"method": method or {"name": "memit", "hparams": MEMIT}, "run": RUN, "evaluation": EVALUATION,
           "model": {"dtype": "float32", "device": "cpu"}, "seed": 0,
           "stats": {"layers": [0, 1], "n_samples": 20, "max_length": 16, "batch_size": 8},
           "knowledge_check": {"rewrite": 0.0, "paraphrase": 0.0, "neighborhood": 0.0}, "seeds": [0]}
    cfg.update(sections)
    path.write_text(json.dumps(cfg))
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit status, stderr) of `seqedit *argv`."""
    capsys.readouterr()
    try:
        main([*argv, "--quiet"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, stage: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("seqedit ")]
    assert code == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"seqedit {stage}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def edit_args(d, out, config=None, model=None, stats=None, records=None) -> list[str]:
    return ["edit", "--config", str(config or d / "edit.json"), "--model", str(model or d / "model"),
            "--stats", str(stats or d / "mom2.pt"), "--records", str(records or d / "world" / "counterfact.json"),
            "--kind", "counterfact", "--out-dir", str(out)]


def assert_nothing_written(out) -> None:
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), sorted(out.rglob("*"))


def test_good_config_edits(tiny_dir, tmp_path, capsys):
    # the baseline of every drill below: the same inputs, unbroken, give a result (here with generation on)
    generation = {"n_records": 2, "n_prompts": 1, "max_length": 20, "top_k": 5, "seed": 0}
    config = write_config(tmp_path / "c.json", evaluation={"batch_size": 8, "generation": generation})
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config))
    assert code == 0, err
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    assert final["consistency_source"] == "attribute-prompts" and 0.0 <= final["consistency"] <= 100.0
    points = json.loads((tmp_path / "run" / "curve.json").read_text())["points"]
    assert all(0.0 <= p["consistency"] <= 100.0 for p in points) and points[-1]["consistency"] == final["consistency"]


def test_unknown_method(tiny_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.json", method={"name": "memitt", "hparams": {}})
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config))
    assert_one_line_error(code, err, "edit", "unknown method 'memitt'", "memit, memit_seq, nmke")
    assert_nothing_written(tmp_path / "run")


def test_unknown_hyperparameter(tiny_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.json", method={"name": "memit", "hparams": {**MEMIT, "layer": [1]}})
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config))
    assert_one_line_error(code, err, "edit", "hparams.memit", "unknown key(s) ['layer']")
    assert_nothing_written(tmp_path / "run")


@pytest.mark.parametrize("stage", ["edit", "stats", "check-knowledge"])
def test_model_path_that_does_not_exist(tiny_dir, tmp_path, capsys, stage):
    config = str(tiny_dir / "edit.json")
    records = str(tiny_dir / "world" / "counterfact.json")
    out = tmp_path / "out"
    argv = {
        "edit": edit_args(tiny_dir, out, model="/nonexistent"),
        "stats": ["stats", "--config", config, "--model", "/nonexistent", "--corpus",
                  str(tiny_dir / "world" / "corpus.txt"), "--out", str(out / "mom2.pt")],
        "check-knowledge": ["check-knowledge", "--config", config, "--model", "/nonexistent", "--records", records,
                            "--kind", "counterfact", "--out", str(out / "knowledge_check.json")],
    }[stage]
    code, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, stage, "model path /nonexistent does not exist")
    assert_nothing_written(out)


def test_layer_beyond_the_model_at_edit(tiny_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.json", method={"name": "memit", "hparams": {**MEMIT, "layers": [1, 5]}})
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config))
    assert_one_line_error(code, err, "edit", "layer index [5] out of range", "3 layers")
    assert_nothing_written(tmp_path / "run")


def test_layer_beyond_the_model_at_stats(tiny_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.json", stats={"layers": [0, 3], "n_samples": 20})
    out = tmp_path / "stats" / "mom2.pt"
    code, err = run_cli(capsys, "stats", "--config", config, "--model", str(tiny_dir / "model"),
                        "--corpus", str(tiny_dir / "world" / "corpus.txt"), "--out", str(out))
    assert_one_line_error(code, err, "stats", "layer index [3] out of range")
    assert_nothing_written(out.parent)


@pytest.mark.parametrize("method", ["memit", "alphaedit", "nse", "nmke", "kne", "rome", "ft_l", "kn"])
def test_layer_beyond_the_model_in_the_library(method, tiny_gpt2, tiny_tokenizer):
    from seqedit.core.stats import LayerStats
    from seqedit.models.arch import spec_for
    from seqedit.registry import get_method

    cfg = method_config(method, layers=[7])
    stats = LayerStats(mom2={7: torch.eye(64, dtype=torch.float64)}, count=1, meta={})
    with pytest.raises(ValueError, match=r"layer index \[7\] out of range: the model has 3 layers \(0\.\.2\)"):
        get_method(method)[1](cfg, tiny_gpt2, tiny_tokenizer, spec_for(tiny_gpt2), stats, seed=0)


def _bad_records(tiny_dir, tmp_path, edit) -> str:
    records = json.loads((tiny_dir / "world" / "counterfact.json").read_text())
    edit(records[1]["requested_rewrite"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    return str(path)


@pytest.mark.parametrize("edit, fragment", [
    (lambda rw: rw["target_new"].update(str=" "), "field 'requested_rewrite.target_new.str'"),
    (lambda rw: rw.update(subject="Nobody Here", prompt="The prompt without a placeholder"),
     "field 'requested_rewrite.prompt': must contain exactly one '{}'"),
], ids=["empty_target", "subject_not_in_prompt"])
def test_bad_record_file(tiny_dir, tmp_path, capsys, edit, fragment):
    records = _bad_records(tiny_dir, tmp_path, edit)
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", records=records))
    assert_one_line_error(code, err, "edit", "bad.json: case 1:", fragment)
    assert_nothing_written(tmp_path / "run")


def test_zsre_subject_not_in_question(tiny_dir, tmp_path, capsys):
    records = json.loads((tiny_dir / "world" / "zsre.json").read_text())
    records[2]["subject"] = "Nobody Here"
    path = tmp_path / "bad_zsre.json"
    path.write_text(json.dumps(records))
    argv = edit_args(tiny_dir, tmp_path / "run", records=path)
    argv[argv.index("counterfact")] = "zsre"
    code, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "edit", "bad_zsre.json: case 2:", "field 'src'")
    assert_nothing_written(tmp_path / "run")


def test_unreadable_stats_file(tiny_dir, tmp_path, capsys):
    stats = tmp_path / "mom2.pt"
    stats.write_bytes((tiny_dir / "mom2.pt").read_bytes()[:200])  # what a full disk leaves
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", stats=stats))
    assert_one_line_error(code, err, "edit", f"layer statistics file {stats} is unreadable")
    assert_nothing_written(tmp_path / "run")


@pytest.mark.parametrize("method, layer", [("memit", 1), ("alphaedit", 1), ("nse", 0), ("rome", 1)])
def test_non_finite_statistics_stop_the_run_naming_method_and_layer(tiny_dir, tmp_path, capsys, method, layer):
    from seqedit.core.stats import LayerStats

    stats = LayerStats.load(tiny_dir / "mom2.pt")
    stats.mom2[layer][3, 3] = float("nan")
    stats.save(tmp_path / "nan.pt")
    hparams = {**hparams_file(method), "v_num_grad_steps": 2}
    hparams["layers"] = [layer] if method == "rome" else [0, 1, 2]
    config = write_config(tmp_path / "c.json", method={"name": method, "hparams": hparams})
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config, stats=tmp_path / "nan.pt"))
    assert_one_line_error(code, err, "edit", f"{method}: layer {layer}: the layer statistics hold non-finite values")
    assert_nothing_written(tmp_path / "run")


def hparams_file(method: str) -> dict:
    import yaml

    from conftest import REPO

    return yaml.safe_load((REPO / "config" / "hparams" / method / "testbed.yaml").read_text())


@pytest.mark.parametrize("stage", ["edit", "check-knowledge"])
def test_prompt_longer_than_the_context(tiny_dir, tmp_path, capsys, stage):
    # the tiny GPT-2 has 128 positions; a paraphrase of ~200 characters does not fit
    long_prompt = "Far away and long ago, " * 8 + "where was {} born? He was born in"
    records = _bad_records(tiny_dir, tmp_path, lambda rw: None)
    data = json.loads(open(records).read())
    data[1]["paraphrase_prompts"] = [long_prompt.format(data[1]["requested_rewrite"]["subject"])]
    open(records, "w").write(json.dumps(data))
    config = write_config(tmp_path / "c.json", run={**RUN, "n_edits": 4, "shuffle": False})
    out = tmp_path / "out"
    argv = edit_args(tiny_dir, out, config=config, records=records) if stage == "edit" else [
        "check-knowledge", "--config", config, "--model", str(tiny_dir / "model"), "--records", records,
        "--kind", "counterfact", "--out", str(out / "knowledge_check.json")]
    code, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, stage, "case 1: paraphrase prompt", "longer than the model's context of 128")
    assert_nothing_written(out)


def test_generation_longer_than_the_context(tiny_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.json", evaluation={"generation": {"n_records": 1, "max_length": 200}})
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config))
    assert_one_line_error(code, err, "edit", "evaluation.generation.max_length (200) exceeds the model's context of 128")
    assert_nothing_written(tmp_path / "run")


def test_missing_consistency_snippets(tiny_dir, tmp_path, capsys):
    evaluation = {"generation": {"n_records": 1}, "consistency": {"snippets": "/nonexistent/attribute_snippets.json"}}
    config = write_config(tmp_path / "c.json", evaluation=evaluation)
    code, err = run_cli(capsys, *edit_args(tiny_dir, tmp_path / "run", config=config))
    assert_one_line_error(code, err, "edit", "attribute snippets file /nonexistent/attribute_snippets.json does not exist")
    assert_nothing_written(tmp_path / "run")
