"""The Snakemake workflow: lint, dry-run DAGs, config validation, and the edit-curves notebook.

Everything here is a dry run (`snakemake -n --forceall`, so existing results do not change the
counts) or a papermill run on fake curves; no rule's command is executed, so these tests do not
need the `seqedit` CLI. Subprocesses get the running interpreter's bin folder first on PATH, so
`papermill` and the `python3` kernel resolve to this environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
BASIC_CONFIG = REPO / ".test" / "config_basic" / "config.yaml"
# Real-data configs: source, benchmark file under the shared data folder.
REAL_CONFIGS = {
    "counterfact": (REPO / "config" / "counterfact-testbed.yaml", "counterfact/counterfact_subset_union.json"),
    "zsre": (REPO / "config" / "zsre-testbed.yaml", "zsre/easyedit/zsre_mend_eval_portability_gpt4.json"),
}
NOTEBOOK = REPO / "notebooks" / "edit_curves.ipynb"


def run(cmd: list[str], cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "snakemake", *args])


def dry_run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`snakemake -n --forceall --nolock ARGS` in `cwd` (the repository), through Snakemake's command-line
    entry point called in this process: the same parsing, profile, DAG and output as the command
    (its stdout and stderr are captured at the file descriptors), without a new interpreter that
    imports the workflow's libraries again for each of the suite's many dry runs. --nolock: dry
    runs from several test workers share the repository's .snakemake folder."""
    from snakemake.cli import main

    argv = ["-n", "--forceall", "--nolock", *args]
    here = os.getcwd()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        try:
            os.chdir(cwd)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(argv)
                    returncode = 0
                except SystemExit as exit_:  # main() always ends in sys.exit
                    returncode = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            os.chdir(here)
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(["snakemake", *argv], returncode, out.read(), err.read())


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}, without the total."""
    assert "Job stats:" in output, output
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match:
            if match[1] == "total":
                break
            counts[match[1]] = int(match[2])
    return counts


def merge(base: dict, over: dict) -> dict:
    """Snakemake's merge of config files: mappings key by key, everything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def reused_arm_runs(config: dict, seeds: list[int] | None = None) -> int:
    """Ablation runs that reuse a main run instead of running: an arm whose effective settings
    (hyperparameters, run settings) are its method's own, on an ablation seed that is also a main
    seed (`seeds`, default the config's)."""
    from seqedit.registry import effective_settings

    model = config.get("hparams_model") or config["model"]["name"]
    shared_seeds = set(config.get("ablation_seeds", [0])) & set(seeds if seeds is not None else config["seeds"])
    reused = 0
    for ab in config.get("ablations", []):
        for method in ab["method"] if isinstance(ab["method"], list) else [ab["method"]]:
            if method not in config["methods"]:
                continue
            path = REPO / "config" / "hparams" / method / f"{model}.yaml"
            own = {**yaml.safe_load(path.read_text()), **config.get("hparams", {}).get(method, {})}
            for value in ab["values"]:
                settings = {ab["param"]: value} if "param" in ab else value
                hparams = {k: v for k, v in settings.items() if not k.startswith("run.")}
                run = {k[len("run."):]: v for k, v in settings.items() if k.startswith("run.")}
                same_run = all(config["run"][k] == v for k, v in run.items())
                if same_run and effective_settings(method, {**own, **hparams}) == effective_settings(method, own):
                    reused += len(shared_seeds)
    return reused


def expected_counts(config_file: Path, n_seeds: int | None = None, fetch: bool = False) -> dict[str, int]:
    """One world (or records subset and corpus), testbed, check and stats job per model; one edit
    run (and config) per method and seed, less the ablation arms that reuse a main run (their
    config is still written); `fetch`: the benchmark file is downloaded first."""
    config = yaml.safe_load(config_file.read_text())
    n_runs = len(config["methods"]) * (n_seeds or len(config["seeds"]))
    n_runs += len(config.get("controls", [])) * (n_seeds or len(config["seeds"]))  # one per control and seed
    for ab in config.get("ablations", []):  # one run per value, method and ablation seed
        methods = ab["method"] if isinstance(ab["method"], list) else [ab["method"]]
        n_runs += len(methods) * len(ab["values"]) * len(config.get("ablation_seeds", [0]))
    full = merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), config)
    reused = reused_arm_runs(full, list(range(n_seeds)) if n_seeds else None)
    figures = ["edit_curves", "results_table", "ablations", "drift", "hidden_shift", "neurons", "cost"]
    if config.get("data", {}).get("source", "synthetic") == "synthetic":
        data = {"config_data": 1, "data_world": 1}
    else:
        data = {"data_subset": 1, "data_corpus": 1, **({"data_fetch": 1} if fetch else {})}
    return {
        **data,
        "config_stage": 3,  # testbed, knowledge_check, stats
        "config_edit": n_runs,
        "testbed_train": 1,
        "testbed_check": 1,
        "stats_collect": 1,
        "edit_run": n_runs - reused,
        "study_collect": 1,
        **{f"figure_{f}": 1 for f in figures},
        "report_render": 1,
        "all": 1,
    }


def test_lint_reports_nothing_on_default_config():
    result = snakemake("--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output
    assert "Congratulations" in output, output


@pytest.mark.parametrize(
    "config_args, config_file",
    [([], DEFAULT_CONFIG), (["--configfile", str(BASIC_CONFIG)], BASIC_CONFIG)],
    ids=["default", "config_basic"],
)
def test_dry_run_job_counts(config_args, config_file):
    result = dry_run(*config_args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert job_counts(output) == expected_counts(config_file)


def real_data_args(source: str, shared_data: Path) -> list[str]:
    """A real-data config, its benchmark file taken from the shared data folder wherever it lies."""
    config_file, relpath = REAL_CONFIGS[source]
    return ["--configfile", str(config_file), "--config", f"data={{{source}_path: {shared_data / relpath}}}"]


@pytest.mark.parametrize("source", sorted(REAL_CONFIGS))
def test_real_data_dry_run_job_counts(source, shared_data):
    result = dry_run(*real_data_args(source, shared_data))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert job_counts(output) == expected_counts(REAL_CONFIGS[source][0])


@pytest.mark.parametrize("source", sorted(REAL_CONFIGS))
def test_real_data_wires_records_and_corpus(source, shared_data):
    config_file, relpath = REAL_CONFIGS[source]
    config = yaml.safe_load(config_file.read_text())
    model = config["model"]["name"]
    drop = " --drop-unchanged" if config["data"].get("drop_unchanged") else ""
    result = dry_run(*real_data_args(source, shared_data), "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for command in [
        f"seqedit subset --records {shared_data / relpath} --kind {source} --limit 300{drop}"
        f" --out data/{source}/records.json",
        f"seqedit corpus --records data/{source}/records.json --kind {source} --out data/{source}/corpus.txt",
        f"seqedit train-testbed --config results/{model}/config/testbed.json --corpus data/{source}/corpus.txt",
        f"seqedit check-knowledge --config results/{model}/config/knowledge_check.json"
        f" --model results/{model}/testbed/model --records data/{source}/records.json --kind {source}",
        f"--corpus data/{source}/corpus.txt --out results/{model}/stats/mom2.pt",
        f"--records data/{source}/records.json --kind {source} --out-dir results/{model}/edit/memit/main/seed~0",
    ]:
        assert command in output, command
    assert "seqedit world" not in output and "data/world" not in output


def test_missing_benchmark_file_is_fetched_first(tmp_path):
    missing = tmp_path / "nowhere" / "cf.json"
    config_file = REAL_CONFIGS["counterfact"][0]
    result = dry_run("--configfile", str(config_file), "--config", f"data={{counterfact_path: {missing}}}",
                     "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert job_counts(output) == expected_counts(config_file, fetch=True)
    assert (f"seqedit fetch --out data/counterfact/download/cf.json --place {missing}"
            " --url-setting data.counterfact_url") in output
    assert "seqedit subset --records data/counterfact/download/cf.json" in output


def test_configured_url_is_passed_with_its_sha256(tmp_path):
    sha = "ab" * 32
    result = dry_run("--configfile", str(REAL_CONFIGS["zsre"][0]), "--printshellcmds", "--config",
                     f"data={{zsre_path: {tmp_path / 'z.json'}, zsre_url: 'https://example.org/z.json', zsre_sha256: {sha}}}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"--url https://example.org/z.json --sha256 {sha}" in output


@pytest.mark.parametrize(
    "data, message",
    [("{source: counterfact, counterfact_url: 'https://example.org/cf.json'}",
      "data.counterfact_url is set without data.counterfact_sha256"),
     ("{source: counterfact, limit: 50}", "data.limit (50) is below run.n_edits (120)")],
    ids=["url_without_sha256", "limit_below_n_edits"],
)
def test_benchmark_settings_fail_before_running(data, message):
    result = dry_run("--config", f"data={data}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output


def test_hparams_model_names_the_hyperparameter_files():
    result = dry_run("--config", "model={name: other}", "hparams_model=testbed", "methods=[memit]", "seeds=[0]",
                     "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    result = dry_run("--config", "model={name: other}", "methods=[memit]", "seeds=[0]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "config/hparams/memit/other.yaml is missing" in output, output


def test_dry_run_wires_the_cli_and_papermill():
    result = dry_run("--configfile", str(BASIC_CONFIG), "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for command in [
        "seqedit world --config data/world/config.json --out-dir data/world",
        "seqedit train-testbed --config results/testbed/config/testbed.json --corpus data/world/corpus.txt"
        " --out results/testbed/testbed/model",
        "seqedit check-knowledge --config results/testbed/config/knowledge_check.json"
        " --model results/testbed/testbed/model --records data/world/counterfact.json --kind counterfact",
        "seqedit stats --config results/testbed/config/stats.json --model results/testbed/testbed/model",
        "seqedit edit --config results/testbed/config/edit/memit/main/seed~0.json --model results/testbed/testbed/model"
        " --stats results/testbed/stats/mom2.pt --records data/world/counterfact.json --kind counterfact"
        " --out-dir results/testbed/edit/memit/main/seed~0",
        # the workflow's own notebook by its place in the repository, not by the working directory
        f"papermill {REPO}/notebooks/edit_curves.ipynb results/testbed/notebooks/edit_curves.ipynb -k python3",
    ]:
        assert command in output, command


def test_an_ablation_arm_with_the_main_settings_reuses_the_main_run():
    """NSE's rewind: true is its file's own setting: on seed 0 (a main seed) that arm is not run
    again; its settings file is still written and the collection labels the main run with it."""
    result = dry_run("--configfile", str(BASIC_CONFIG), "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    edits = re.findall(r"seqedit edit --config (\S+)", output)
    assert "results/testbed/config/edit/nse/nse_rewind~false/seed~0.json" in edits
    assert "results/testbed/config/edit/nse/main/seed~0.json" in edits
    assert not any("nse_rewind~true" in e for e in edits)
    assert "output: results/testbed/config/edit/nse/nse_rewind~true/seed~0.json" in output
    runs = re.search(r"seqedit collect --runs (.*?) --out", output)[1].split()
    assert runs[-2:] == ["results/testbed/edit/nse/main/seed~0@results/testbed/config/edit/nse/nse_rewind~true/seed~0.json",
                         "results/testbed/edit/nse/nse_rewind~false/seed~0"]
    # on an ablation seed that is no main seed there is no main run to reuse: the arm runs
    result = dry_run("--configfile", str(BASIC_CONFIG), "--printshellcmds", "--config", "ablation_seeds=[5]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "results/testbed/config/edit/nse/nse_rewind~true/seed~5.json" in re.findall(r"seqedit edit --config (\S+)", output)
    assert "@" not in re.search(r"seqedit collect --runs (.*?) --out", output)[1]


def test_extra_seed_adds_one_edit_run_per_method():
    result = dry_run("--config", "seeds=[0,1]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert job_counts(output) == expected_counts(DEFAULT_CONFIG, n_seeds=2)


def test_external_model_skips_the_testbed():
    result = dry_run("--config", "model={path: openai-community/gpt2}", "methods=[memit]", "seeds=[0]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = job_counts(output)
    assert "testbed_train" not in counts and "testbed_check" not in counts
    assert counts["stats_collect"] == 1 and counts["edit_run"] == 1
    assert counts["config_stage"] == 1  # stats only


@pytest.mark.parametrize(
    "override, key",
    [
        ({"run": {"n_edits": "many"}}, "n_edits"),  # wrong type
        ({"run": {"batch_size": 0}}, "batch_size"),  # out of range
        ({"knowledge_check": {"rewrite": 1.5}}, "rewrite"),  # out of range
        ({"data": {"source": "wikipedia"}}, "source"),  # not in enum
        ({"testbed": {"n_layers": 4}}, "n_layers"),  # unknown key (typo of n_layer)
        ({"method": ["memit"]}, "method"),  # unknown top-level key (typo of methods)
        ({"methods": ["memitt"]}, "memitt"),  # unknown method
        ({"ablations": [{"name": "a", "method": "nsee", "param": "rewind", "values": [True]}]}, "nsee"),
        ({"hparams": {"memitt": {"layers": [1]}}}, "memitt"),  # overrides of an unknown method
    ],
    ids=["wrong_type", "out_of_range", "out_of_unit_range", "bad_enum", "unknown_key", "unknown_top_level_key",
         "unknown_method", "unknown_ablation_method", "unknown_hparams_method"],
)
def test_invalid_config_fails_naming_the_key(tmp_path, override, key):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(override))
    result = dry_run("--configfile", str(config_file))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Error validating config file" in output, output
    assert key in output, output


def test_invalid_command_line_value_fails_naming_the_key():
    # --config parses mappings with YAML's BaseLoader ('0' stays a string); common.smk converts it
    # back to a number, so the error is the range, not the type.
    result = dry_run("--config", "run={n_edits: 0}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "0 is less than the minimum of 1" in output and "n_edits" in output, output


def test_unknown_model_name_fails_before_running():
    # model.name picks the hyperparameter files; a name without them stops the workflow at load time
    result = dry_run("--configfile", str(BASIC_CONFIG), "--config", "model={name: gpt5}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert ("no hyperparameters for model 'gpt5': config/hparams/memit/gpt5.yaml, config/hparams/memit_seq/gpt5.yaml, "
            "config/hparams/nse/gpt5.yaml are missing") in output, output
    assert "Building DAG of jobs" not in output, output


@pytest.mark.parametrize(
    "config_args, message",
    [
        (["hparams={memit: {v_lrr: 0.1}}"], "hparams of method 'memit': unknown key(s) ['v_lrr']"),
        (["hparams={nse: {rewind: maybe}}"], "hparams of method 'nse'.rewind: expected true/false"),
    ],
    ids=["misspelled_override", "override_of_wrong_type"],
)
def test_bad_hparams_override_fails_when_the_dag_is_built(config_args, message):
    result = dry_run("--configfile", str(BASIC_CONFIG), "--config", *config_args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert "Building DAG of jobs" not in output, output


def test_misspelled_ablation_param_fails_when_the_dag_is_built(tmp_path):
    config_file = tmp_path / "ablation.yaml"
    config_file.write_text(yaml.safe_dump(
        {"ablations": [{"name": "typo", "method": "nse", "param": "rewnd", "values": [True, False]}]}
    ))
    result = dry_run("--configfile", str(BASIC_CONFIG), "--configfile", str(config_file))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "hparams of method 'nse' (run typo~true): unknown key(s) ['rewnd']" in output, output
    assert "Building DAG of jobs" not in output, output


def test_layers_beyond_testbed_fail_before_running():
    result = dry_run("--config", "stats={layers: [0, 9]}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "do not fit the testbed" in output, output


@pytest.mark.parametrize("name", ["edit_curves", "results_table", "ablations", "drift", "hidden_shift",
                                  "neurons", "cost"])
def test_notebook_has_a_parameters_cell(name):
    # the notebooks run on toy results in tests/analysis/test_study.py
    notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(name in tagged[0].source for name in ["study", "out_dir", "model"])


# The schema and the library each state the defaults; these keep the two from drifting apart.
SCHEMA_SECTIONS = {
    "data.synthetic": ("seqedit.data.world", "WorldConfig"),
    "testbed": ("seqedit.models.testbed", "TestbedConfig"),
    "model": ("seqedit.config", "ModelConfig"),
    "stats": ("seqedit.config", "StatsConfig"),
    "stats.dataset": ("seqedit.data.texts", "TextDatasetConfig"),
    "stats.generated": ("seqedit.data.texts", "GeneratedTextConfig"),
    "knowledge_check": ("seqedit.config", "KnowledgeCheckConfig"),
    "run": ("seqedit.runner", "RunConfig"),
    "evaluation.consistency": ("seqedit.evaluate.consistency", "ConsistencyConfig"),
}
# Sections whose schema sets no defaults on purpose, so that a config leaving them out keeps its
# stage config (and its cached outputs) unchanged: the library's defaults apply there.
LIBRARY_DEFAULTS = {"stats.generated", "stats.seed", "stats.convergence"}


@pytest.mark.parametrize("where", sorted(SCHEMA_SECTIONS))
def test_schema_defaults_equal_library_defaults(where):
    import dataclasses
    import importlib

    module, name = SCHEMA_SECTIONS[where]
    config_cls = getattr(importlib.import_module(module), name)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for key in where.split("."):
        schema = schema["properties"][key]
    library = {field.name: field.default for field in dataclasses.fields(config_cls)}
    for key, subschema in schema["properties"].items():
        assert key in library, f"{where}.{key} is in the schema but not in {name}"
        if "properties" in subschema:  # a nested section: compared under its own entry
            assert f"{where}.{key}" in SCHEMA_SECTIONS, f"{where}.{key} needs an entry in SCHEMA_SECTIONS"
            continue
        if where in LIBRARY_DEFAULTS or f"{where}.{key}" in LIBRARY_DEFAULTS:
            assert "default" not in subschema, f"{where}.{key}: the schema must leave the default to {name}"
            continue
        assert subschema["default"] == library[key], f"{where}.{key}: schema {subschema['default']!r}, {name} {library[key]!r}"


@pytest.mark.parametrize(
    "hparams_file",
    sorted((REPO / "config" / "hparams").glob("*/*.yaml")),
    ids=lambda path: str(path.relative_to(REPO)),
)
def test_hparams_files_build_their_method_config(hparams_file):
    import seqedit.methods  # noqa: F401  (registers the methods)
    from seqedit.registry import build_config, get_method

    method = hparams_file.parent.name
    config_cls, _ = get_method(method)
    build_config(config_cls, yaml.safe_load(hparams_file.read_text()) or {}, str(hparams_file))
