"""The SmolLM2-135M study configs (config/smollm2*.yaml), overlays on config/config.yaml.

Dry runs only (`snakemake -n --forceall`): each overlay builds its DAG offline, with the model
prepared once from its pinned wheel, the known-records filter and the causal trace where the
records have a true object, the layer statistics from the model's own samples, and the
hyperparameter files of this model (config/hparams/<method>/smollm2-135m.yaml), whose layers
the statistics cover.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from .test_paper_configs import FIGURES, GPU_RULES, job_resources, merged, n_runs, results_name
from .test_workflow import DEFAULT_CONFIG, REPO, dry_run, job_counts, reused_arm_runs

SMOLLM2 = REPO / "config" / "smollm2.yaml"
OVERLAYS = {
    "counterfact": [SMOLLM2],
    "zsre": [SMOLLM2, REPO / "config" / "smollm2-zsre.yaml"],
    "gpu": [SMOLLM2, REPO / "config" / "smollm2-gpu.yaml"],
    "quick": [SMOLLM2, REPO / "config" / "smollm2-quick.yaml"],
    "long": [SMOLLM2, REPO / "config" / "smollm2-long.yaml"],
}
DATA_FILES = {  # data.source: (setting, the file under the shared data folder)
    "counterfact": ("counterfact_path", "counterfact/counterfact_subset_union.json"),
    "zsre": ("zsre_path", "zsre/easyedit/zsre_mend_eval_portability_gpt4.json"),
    "counterfact_easyedit": ("counterfact_easyedit_path", "counterfact/easyedit"),
}
N_LAYERS = 30


@pytest.fixture(scope="module", params=sorted(OVERLAYS), ids=str)
def smollm2_dry_run(request, shared_data):
    """(merged config, dry-run output) of one overlay, its benchmark file read from the shared data folder."""
    files = OVERLAYS[request.param]
    config = merged([DEFAULT_CONFIG, *files])
    setting, relpath = DATA_FILES[config["data"]["source"]]
    result = dry_run("--printshellcmds", "--configfile", *map(str, files),
                     "--config", f"data={{{setting}: {shared_data / relpath}}}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return request.param, config, output


def test_overlays_set_only_what_differs_from_their_base():
    base = yaml.safe_load(SMOLLM2.read_text())
    assert base["model"]["name"] == "smollm2-135m" and base["hparams_model"] == "smollm2-135m"
    assert base["model_source"]["kind"] == "wheel" and base["stats"]["source"] == "generated"
    for name in ("zsre", "gpu", "quick", "long"):
        overlay = yaml.safe_load(OVERLAYS[name][-1].read_text())
        assert "hparams_model" not in overlay and "model_source" not in overlay
        assert "name" not in overlay.get("model", {}) and overlay["tag"] == name  # results of their own
    gpu, quick = merged([DEFAULT_CONFIG, *OVERLAYS["gpu"]]), merged([DEFAULT_CONFIG, *OVERLAYS["quick"]])
    assert gpu["run"]["n_edits"] == 2000 and gpu["run"]["batch_size"] == 100
    assert merged([DEFAULT_CONFIG, *OVERLAYS["zsre"]])["data"]["source"] == "zsre"
    # the headline comparison of the papers (plain MEMIT, AlphaEdit, NSE), one seed, no ablations
    assert quick["methods"] == ["memit", "alphaedit", "nse", "nmke"] and quick["seeds"] == [0]
    assert quick["ablations"] == [] and quick["controls"] == []
    # the papers' protocol (batches of 100) at the length a CPU affords, and the quick overlay's
    # evaluation settings, so that both share the model, known records, trace and statistics
    long = merged([DEFAULT_CONFIG, *OVERLAYS["long"]])
    assert long["methods"] == ["memit", "alphaedit", "nse"] and long["seeds"] == [0]
    assert long["run"]["batch_size"] == 100 and long["run"]["n_edits"] == 500
    assert long["evaluation"] == quick["evaluation"] and long["stats"] == quick["stats"]


def test_smollm2_dry_run_job_counts(smollm2_dry_run):
    name, config, output = smollm2_dry_run
    runs = n_runs(config)
    filtered = name != "zsre"  # ZsRE records have no true object to prefer or trace
    assert job_counts(output) == {
        "data_subset": 1,
        "model_prepare": 1,
        "config_stage": 2 + 2 * filtered,  # model_prepare, stats (+ known, tracing)
        **({"data_known": 1, "trace_run": 1, "figure_tracing": 1} if filtered else {}),
        "config_edit": runs,
        "stats_collect": 1,
        "edit_run": runs - reused_arm_runs(config),  # arms equal to a main run reuse it
        "study_collect": 1,
        **{f"figure_{f}": 1 for f in FIGURES},
        "report_render": 1,
        "all": 1,
    }  # no testbed, no knowledge check, no corpus: the statistics come from the model's own samples


def test_smollm2_dry_run_wires_the_prepared_model_and_the_known_records(smollm2_dry_run):
    name, config, output = smollm2_dry_run
    model, source = results_name(config), config["data"]["source"]
    assert "seqedit train-testbed" not in output and "seqedit corpus" not in output
    prepare = re.search(r"seqedit prepare-model [^\n]*", output)[0]
    assert f"--out results/{model}/model" in prepare
    stats = re.search(r"seqedit stats [^\n]*", output)[0]
    assert f"--model results/{model}/model" in stats and "--corpus" not in stats
    records = f"results/{model}/known/records.json" if name != "zsre" else f"data/{source}/records.json"
    edits = re.findall(r"seqedit edit [^\n]*", output)
    assert edits and all(f"--model results/{model}/model" in e and f"--records {records} --kind {source}" in e
                         for e in edits)
    assert ("seqedit trace" in output) == (name != "zsre")
    report = re.search(r"seqedit report [^\n]*", output)[0]
    assert f"--model-dir results/{model}/model" in report  # the report names the prepared model


def test_smollm2_gpu_overlay_asks_for_a_gpu_where_the_model_runs(smollm2_dry_run):
    name, config, output = smollm2_dry_run
    for rule, resources in job_resources(output):
        on_gpu = name == "gpu" and rule in GPU_RULES | {"trace_run", "data_known"}
        assert (resources.get("gpu") == "1") == on_gpu, (name, rule, resources)
        if on_gpu and rule in config["resources"]:
            assert resources["mem_mb"] == str(config["resources"][rule]["mem_mb"]), (rule, resources)


@pytest.mark.parametrize("method", yaml.safe_load(DEFAULT_CONFIG.read_text())["methods"])
def test_hyperparameters_fit_the_model_and_the_statistics(method):
    """Every method has a file for this model; its layers exist in a 30-layer model, the loss is read
    at the last layer, and the statistics of the study cover every layer a method's solve needs."""
    from seqedit.registry import build_config, get_method

    path = REPO / "config" / "hparams" / method / "smollm2-135m.yaml"
    cfg = build_config(get_method(method)[0], yaml.safe_load(path.read_text()), str(path))
    stats_layers = set(merged([DEFAULT_CONFIG, *OVERLAYS["counterfact"]])["stats"]["layers"])
    layers = getattr(cfg, "layers", None)
    if layers is not None:
        assert all(0 <= layer < N_LAYERS for layer in layers), layers
    if hasattr(cfg, "v_loss_layer"):
        assert cfg.v_loss_layer == N_LAYERS - 1
    if method in ("memit", "memit_seq", "alphaedit", "nmke", "nse", "rome"):
        assert set(layers) <= stats_layers, (method, layers, sorted(stats_layers))


def test_rome_layer_ends_the_memit_window():
    """ROME's layer is the trace's peak and MEMIT's window of five ends there (the tracing stage's rule)."""
    load = lambda m: yaml.safe_load((REPO / "config" / "hparams" / m / "smollm2-135m.yaml").read_text())
    (peak,) = load("rome")["layers"]
    window = load("memit")["layers"]
    assert window == list(range(peak - len(window) + 1, peak + 1))
    for method in ("memit_seq", "alphaedit", "nmke", "nse", "kne"):
        assert load(method)["layers"] == window, method


# the study's own archive is always checked, so a missing folder fails instead of leaving no parameter
ARCHIVES = sorted({REPO / "archive" / "smollm2-135m", *(p for p in (REPO / "archive").glob("smollm2-135m*") if p.is_dir())})


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda p: p.name)
def test_the_committed_smollm2_archives_are_whole_and_of_their_studies(archive):
    """archive/<results folder>/ is what a fresh clone restores from (`restore_from`): every run
    folder holds every file a restore checks, is a run of the study whose results folder names the
    archive (config/smollm2.yaml, or it with one of its overlays: a main run or one of its ablation
    arms, the study's number of edits), and the generated texts are those of the study's statistics
    settings, so the statistics stage takes them instead of generating again."""
    from dataclasses import asdict

    from seqedit.archive import DIGEST_KEYS, RUN_FILES
    from seqedit.config import StatsConfig, build

    studies = {results_name(c): c for c in (merged([DEFAULT_CONFIG, *files]) for files in OVERLAYS.values())}
    assert archive.name in studies, f"{archive} names no SmolLM2 study's results folder"
    cfg = studies[archive.name]
    def label(value):  # an arm's folder name (the workflow's value_label): k=v,k=v for settings applied together
        return ",".join(f"{k}={label(v)}" for k, v in value.items()) if isinstance(value, dict) else str(value).lower()

    arms = {a["name"]: {label(v) for v in a["values"]} for a in cfg["ablations"]}
    runs = sorted(p.parent for p in archive.glob("*/*/seed~*/metrics.json"))
    assert runs, f"{archive} holds no finished run"
    for run in runs:
        method, variant, seed = run.relative_to(archive).parts
        assert [n for n in RUN_FILES if not (run / n).is_file()] == [], run
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["method"], f"seed~{metrics['seed']}", metrics["n_edits"]) == (method, seed, cfg["run"]["n_edits"])
        assert method in cfg["methods"]
        if variant != "main":
            name, value = variant.split("~", 1)
            assert value in arms[name], run
        assert set(DIGEST_KEYS) <= set(json.loads((run / "inputs.json").read_text())), run
    sc = build(StatsConfig, cfg["stats"], "stats")
    held = json.loads((archive / "stats_texts.json").read_text())
    assert (held["generated"], held["n_samples"], held["seed"]) == (asdict(sc.generated), sc.n_samples, sc.seed)
    assert len(held["texts"]) == sc.n_samples and all(isinstance(t, str) for t in held["texts"])
    assert re.fullmatch(r"[0-9a-f]{64}", held["tokens_sha256"]) and re.fullmatch(r"[0-9a-f]{64}", held["model"])


def test_overlays_offer_each_other_their_model_and_statistics(workflow_copy, shared_data):
    """The model preparation and statistics jobs of a results folder name the prepared models and
    statistics files of the model's other folders (`--reuse`), never their own; `seqedit
    prepare-model` and `seqedit stats` take one only where its inputs match
    (tests/models/test_prepare.py, tests/test_stats_reuse.py)."""
    work = workflow_copy("stats_reuse")
    for folder in ("smollm2-135m", "smollm2-135m-quick", "testbed"):
        (work / "results" / folder / "stats").mkdir(parents=True)
        (work / "results" / folder / "stats" / "mom2.pt").write_bytes(b"")
    (work / "results" / "smollm2-135m" / "model").mkdir()

    def commands(*overlay: str) -> tuple[str, str]:
        setting, relpath = DATA_FILES[merged([DEFAULT_CONFIG, *(work / o for o in overlay)])["data"]["source"]]
        result = dry_run("--printshellcmds", "--configfile", *overlay,
                         "--config", f"data={{{setting}: {shared_data / relpath}}}", cwd=work)
        assert result.returncode == 0, result.stdout + result.stderr
        return tuple(re.search(rf"seqedit {c} [^\n]*", result.stdout)[0] for c in ("prepare-model", "stats"))

    prepare, stats = commands("config/smollm2.yaml", "config/smollm2-zsre.yaml")
    assert "--reuse results/smollm2-135m-quick/stats/mom2.pt results/smollm2-135m/stats/mom2.pt --out" in stats
    assert prepare.endswith("--reuse results/smollm2-135m/model 2>&1 | tee logs/model_prepare/smollm2-135m-zsre.log")
    prepare, stats = commands("config/smollm2.yaml")
    assert "--reuse results/smollm2-135m-quick/stats/mom2.pt --out results/smollm2-135m/stats/mom2.pt" in stats
    assert "--reuse" not in prepare  # no other folder has a model
