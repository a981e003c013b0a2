"""The paper-scale configurations (config/paper/*.yaml) and the resources jobs request.

Dry runs only (`snakemake -n --forceall`): the DAG of each paper config builds offline, without
the benchmark files, the models or the Wikipedia dataset, with the expected jobs; the rules that
run the model on a CUDA device request one GPU and the memory and time of the config's
`resources`, and no other rule requests a GPU. The testbed's resources stay those of the
schema's defaults.
"""

from __future__ import annotations

import re

import pytest
import yaml

from .test_workflow import REPO, dry_run, job_counts, merge, reused_arm_runs

PAPER = REPO / "config" / "paper"
MODELS = ["gpt2-xl", "gpt-j-6b", "llama3-8b"]
ZSRE = PAPER / "zsre.yaml"  # the benchmark overlay, given second
# Each model's CounterFact study, and the same with the ZsRE overlay.
STUDIES = [[PAPER / f"{m}.yaml"] for m in MODELS] + [[PAPER / f"{m}.yaml", ZSRE] for m in MODELS]
FIGURES = ["edit_curves", "results_table", "ablations", "drift", "hidden_shift", "neurons", "cost"]
GPU_RULES = {"testbed_check", "stats_collect", "edit_run"}
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def job_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        line = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = [item.split("=", 1) for item in line[1].split(", ")] if line else []
        jobs.append((head[1], {key: value for key, value in pairs}))
    return jobs


def _control_runs(config: dict, control: dict) -> bool:
    """A matched control runs when it changes its method's effective settings (else it would
    repeat the method's main runs)."""
    from seqedit.registry import effective_settings

    model = config.get("hparams_model") or config["model"]["name"]

    def hparams(method):
        path = REPO / "config" / "hparams" / method / f"{model}.yaml"
        return {**yaml.safe_load(path.read_text()), **config.get("hparams", {}).get(method, {})}

    own, match = hparams(control["method"]), hparams(control["match"])
    matched = {**own, **{p: match[p] for p in control["params"]}}
    return effective_settings(control["method"], own) != effective_settings(control["method"], matched)


def n_runs(config: dict) -> int:
    """Edit runs of a config: (methods + controls) × seeds, plus one per ablation value, method and ablation seed."""
    runs = len(config["methods"]) * len(config["seeds"])
    runs += sum(_control_runs(config, c) for c in config.get("controls", [])) * len(config["seeds"])
    for ab in config["ablations"]:
        methods = ab["method"] if isinstance(ab["method"], list) else [ab["method"]]
        runs += len(methods) * len(ab["values"]) * len(config["ablation_seeds"])
    return runs


def schema_resources(rule: str) -> dict[str, int]:
    props = SCHEMA["properties"]["resources"]["properties"][rule]["properties"]
    return {key: sub["default"] for key, sub in props.items()}


def merged(files: list) -> dict:
    """The config that snakemake builds from `files` given in order."""
    config: dict = {}
    for path in files:
        config = merge(config, yaml.safe_load(path.read_text()))
    return config


def results_name(config: dict) -> str:
    """The study's folder under results/: model.name, with the tag when one is set."""
    return config["model"]["name"] + (f"-{config['tag']}" if config.get("tag") else "")


@pytest.fixture(scope="module", params=STUDIES, ids=lambda files: "+".join(p.stem for p in files))
def paper_dry_run(request):
    """(merged config, output) of the dry run of one paper study."""
    files = [str(p) for p in request.param]
    result = dry_run("--configfile", *files, "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return merged(request.param), output


def test_one_config_per_model_and_one_benchmark_overlay():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == sorted(MODELS + ["zsre"])
    # the overlay changes the benchmark and the result folder, nothing else
    assert yaml.safe_load(ZSRE.read_text()) == {"data": {"source": "zsre"}, "tag": "zsre"}
    for model in MODELS:
        config = yaml.safe_load((PAPER / f"{model}.yaml").read_text())
        assert config["data"]["source"] == "counterfact" and config["model"]["name"] == model
        assert "hparams_model" not in config and "tag" not in config
        assert config["data"]["zsre_path"] == "data/zsre/zsre_mend_eval.json"  # MEND's split, as the papers


def test_each_study_keeps_its_own_results_and_the_models_hyperparameters(paper_dry_run):
    config, output = paper_dry_run
    model, name = config["model"]["name"], results_name(config)
    assert name == (f"{model}-zsre" if config["data"]["source"] == "zsre" else model)
    assert f"results/{name}/edit/nse/main/seed~0/metrics.json" in output
    folders = set(re.findall(r"results/([^/\s]+)/", output))
    assert folders == {name}, folders  # a ZsRE study leaves the CounterFact study's folder alone
    assert set(re.findall(r"--hparams-model (\S+)", output)) == {model}, output[-3000:]


@pytest.mark.parametrize("model", MODELS)
def test_paper_config_is_the_papers_setting(model):
    config = yaml.safe_load((PAPER / f"{model}.yaml").read_text())
    assert config["run"]["n_edits"] == 2000 and config["run"]["batch_size"] == 100
    assert config["model"]["device"] == "cuda" and config["model"]["path"]
    assert config["stats"]["source"] == "dataset" and config["stats"]["n_samples"] == 100000
    # the statistics cover exactly the layers the MEMIT-family methods edit
    for method in ("memit", "alphaedit", "nse", "nmke", "kne"):
        hparams = yaml.safe_load((REPO / "config" / "hparams" / method / f"{model}.yaml").read_text())
        assert hparams["layers"] == config["stats"]["layers"], method


def test_paper_dry_run_job_counts(paper_dry_run):
    config, output = paper_dry_run
    runs = n_runs(config)
    source = config["data"]["source"]
    fetch = 0 if (REPO / config["data"][f"{source}_path"]).exists() else 1
    assert job_counts(output) == {
        **({"data_fetch": 1} if fetch else {}),  # the benchmark file, when it is not in place
        "data_subset": 1,  # its records (all of them: data.limit is null) as data/<source>/records.json
        "config_stage": 1,  # stats only: no testbed, no knowledge check
        "config_edit": runs,
        "stats_collect": 1,
        "edit_run": runs - reused_arm_runs(config),  # arms equal to a main run reuse it
        "study_collect": 1,
        **{f"figure_{f}": 1 for f in FIGURES},
        "report_render": 1,
        "all": 1,
    }  # no world and no corpus: the records are a benchmark file and the statistics read a dataset


def test_paper_dry_run_needs_neither_records_nor_corpus(paper_dry_run):
    config, output = paper_dry_run
    source = config["data"]["source"]
    path = config["data"][f"{source}_path"]
    if not (REPO / path).exists():  # fetched (or, with no URL or network, a one-line error naming `path`)
        assert f"--place {path} --url-setting data.{source}_url" in output, output
        if config["data"].get(f"{source}_url"):
            assert f"--url {config['data'][f'{source}_url']} --sha256 {config['data'][f'{source}_sha256']}" in output
    name = results_name(config)
    assert f"--records data/{source}/records.json --kind {source}" in output
    stats_command = re.search(r"seqedit stats [^\n]*", output)[0]
    assert "--corpus" not in stats_command
    assert f"--model {config['model']['path']} --out results/{name}/stats/mom2.pt" in stats_command


def test_paper_dry_run_resources(paper_dry_run):
    config, output = paper_dry_run
    jobs = job_resources(output)
    assert {rule for rule, _ in jobs} >= {"edit_run", "stats_collect", "study_collect", "report_render"}
    for rule, resources in jobs:
        if rule in GPU_RULES:
            wanted = {**schema_resources(rule), **config["resources"].get(rule, {})}
            assert resources.get("gpu") == "1", (rule, resources)
            assert resources.get("mem_mb") == str(wanted["mem_mb"]), (rule, resources)
            assert resources.get("runtime") == str(wanted["runtime"]), (rule, resources)
        else:
            assert "gpu" not in resources, (rule, resources)


def test_testbed_resources_are_the_schema_defaults_and_ask_for_no_gpu():
    result = dry_run("--config", "seeds=[0]", "methods=[memit]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    seen = set()
    for rule, resources in job_resources(output):
        assert "gpu" not in resources, (rule, resources)
        if rule in SCHEMA["properties"]["resources"]["properties"]:
            seen.add(rule)
            for key, value in schema_resources(rule).items():
                assert resources.get(key) == str(value), (rule, resources)
    assert seen == {"testbed_train", "testbed_check", "stats_collect", "edit_run"}


def test_testbed_on_cuda_asks_for_a_gpu_where_the_model_runs():
    result = dry_run("--config", "model={device: cuda}", "seeds=[0]", "methods=[memit]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    by_rule = {}
    for rule, resources in job_resources(output):
        by_rule.setdefault(rule, []).append(resources.get("gpu"))
    for rule, gpus in by_rule.items():
        assert set(gpus) == ({"1"} if rule in GPU_RULES else {None}), (rule, gpus)
    assert GPU_RULES <= set(by_rule) and "testbed_train" in by_rule  # the testbed trains on the CPU


def test_resources_override_from_the_command_line():
    result = dry_run("--config", "resources={edit_run: {mem_mb: 1234, runtime: 5}}", "seeds=[0]",
                     "methods=[memit]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    edit = [res for rule, res in job_resources(output) if rule == "edit_run"]
    assert edit and all(res["mem_mb"] == "1234" and res["runtime"] == "5" for res in edit), edit


def test_hparams_model_picks_the_hyperparameter_files():
    # results under results/other/, hyperparameters of the testbed
    result = dry_run("--config", "model={name: other}", "hparams_model=testbed", "seeds=[0]", "methods=[memit]",
                     "ablations=[]", "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "results/other/edit/memit/main/seed~0/metrics.json" in output
    result = dry_run("--config", "model={name: other}", "seeds=[0]", "methods=[memit]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "config/hparams/memit/other.yaml is missing" in output, output



def test_matched_control_runs_on_the_main_seeds_beside_the_method_it_matches():
    result = dry_run("--config", "seeds=[0,1]", "methods=[alphaedit,nmke]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert job_counts(output)["edit_run"] == 6  # 2 methods + the control, 2 seeds
    for seed in (0, 1):
        assert f"results/testbed/edit/alphaedit/control~nmke_matched/seed~{seed}/metrics.json" in output
    # without the method it matches, the control is left out
    result = dry_run("--config", "seeds=[0]", "methods=[alphaedit]", "ablations=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "control~" not in output, output
    assert job_counts(output)["edit_run"] == 1


def test_ablation_whose_arms_act_the_same_is_refused(tmp_path):
    config = tmp_path / "arms.yaml"
    config.write_text(yaml.safe_dump({
        "seeds": [0], "methods": ["nse"], "hparams": {"nse": {"neuron_threshold": 1.0}},
        "ablations": [{"name": "nse_neurons", "method": "nse", "param": "select_neurons", "values": [True, False]}],
    }))
    result = dry_run("--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    line = next(l for l in output.splitlines() if "ablations.nse_neurons" in l)
    assert "values true and false give nse identical settings" in line, output
    assert "Building DAG of jobs" not in output, output
    # at p = 0.8 the two arms differ: accepted
    result = dry_run("--configfile", str(config), "--config", "hparams={nse: {neuron_threshold: 0.8}}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_model_below_float32_is_refused_unless_allowed(dtype):
    args = ("seeds=[0]", "methods=[memit]", "ablations=[]")
    result = dry_run("--config", f"model={{dtype: {dtype}}}", *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    line = next(l for l in output.splitlines() if "model.dtype" in l)
    assert f"model.dtype is {dtype}" in line and "model.allow_low_precision_edits" in line, output
    result = dry_run("--config", f"model={{dtype: {dtype}, allow_low_precision_edits: true}}", *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_paper_configs_edit_in_float32_and_run_the_neuron_ablation_at_two_thresholds():
    for files in STUDIES:
        config, name = merged(files), "+".join(p.stem for p in files)
        assert config["model"]["dtype"] == "float32", name
        assert {"memit", "memit_seq", "alphaedit", "nmke"} <= set(config["methods"]), name
        assert [c["match"] for c in config["controls"] if c["method"] == "alphaedit"] == ["nmke"], name
        neurons = [ab for ab in config["ablations"] if ab["method"] == "nse" and ab.get("param") == "neuron_threshold"]
        assert len(neurons) == 1 and neurons[0]["values"] == [0.8, 1.0], name


@pytest.mark.parametrize("model, control", [("gpt2-xl", False), ("gpt-j-6b", False), ("llama3-8b", True)])
def test_matched_control_runs_only_where_alphaedit_settings_differ_from_nmke(model, control):
    # GPT2-XL's and GPT-J's AlphaEdit files already state NMKE's projector and ridge: the control
    # would repeat AlphaEdit's main runs; Llama3's differ in l2 (10 against 1)
    result = dry_run("--configfile", str(PAPER / f"{model}.yaml"), "--config", "ablations=[]", "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert ("edit/alphaedit/control~nmke_matched/seed~0" in output) == control, output[-2000:]
