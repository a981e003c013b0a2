"""The registry is the one source of the method list: the schema, labels, report order, hparam
files and the benchmarks agree with it; effective settings identify runs that act the same."""

from pathlib import Path

import pytest
import yaml

from seqedit.registry import KINDS, available_methods, effective_settings, method_info, register_method

REPO = Path(__file__).resolve().parents[2]
MODELS = ["gpt-j-6b", "gpt2-xl", "llama3-8b", "smollm2-135m", "testbed"]


def _method_enums(node, path="schema"):
    """Every enum of the schema that lists method names (those holding 'memit'), with its path."""
    if isinstance(node, dict):
        if "enum" in node and "memit" in node["enum"]:
            yield path, node["enum"]
        for key, value in node.items():
            yield from _method_enums(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _method_enums(value, f"{path}[{i}]")


def test_every_method_enum_of_the_schema_is_the_registry():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    enums = list(_method_enums(schema))
    assert len(enums) >= 5  # methods, hparams keys, ablation method (two forms), controls
    for path, enum in enums:
        assert sorted(enum) == sorted(available_methods()), path


def test_order_puts_baselines_first_and_labels_say_which_memit():
    methods = available_methods()
    kinds = [method_info(m).kind for m in methods]
    assert kinds == sorted(kinds, key=KINDS.index)
    assert {"memit", "memit_seq"} <= set(methods) and methods.index("memit") < methods.index("memit_seq")
    assert method_info("memit").label == "MEMIT" and method_info("memit_seq").label == "MEMIT-seq"
    labels = [method_info(m).label for m in methods]
    assert len(set(labels)) == len(labels)


def test_labels_and_report_read_the_registry():
    from seqedit.analysis import labels

    assert labels.METHOD_ORDER == available_methods()
    assert labels.METHOD_LABEL == {m: method_info(m).label for m in available_methods()}
    assert labels.BASELINES == [m for m in available_methods() if method_info(m).kind == "baseline"]
    assert set(labels.METHOD_DESCRIPTION) == set(available_methods())


def test_every_method_has_its_hyperparameter_files_and_no_file_lacks_a_method():
    root = REPO / "config" / "hparams"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(available_methods())
    for method in available_methods():
        assert sorted(p.stem for p in (root / method).glob("*.yaml")) == MODELS, method


def test_memit_seq_files_hold_memit_values():
    for model in MODELS:
        memit = yaml.safe_load((REPO / "config" / "hparams" / "memit" / f"{model}.yaml").read_text())
        seq = yaml.safe_load((REPO / "config" / "hparams" / "memit_seq" / f"{model}.yaml").read_text())
        assert memit == seq, model


def test_registration_refuses_bad_entries():
    cfg, editor = method_info("memit").config_cls, method_info("memit").editor_cls
    with pytest.raises(ValueError, match="twice"):
        register_method("memit", cfg, editor, label="MEMIT", description="again")
    with pytest.raises(ValueError, match="kind"):
        register_method("memit_other", cfg, editor, label="X", description="x", kind="control")
    with pytest.raises(ValueError, match="label"):
        register_method("memit_other", cfg, editor, label="", description="x")
    assert "memit_other" not in available_methods()


def test_effective_settings_identify_runs_that_act_the_same():
    # NSE: p = 1 keeps every neuron, so select_neurons no longer matters
    at_one = [effective_settings("nse", {"neuron_threshold": 1.0, "select_neurons": s}) for s in (True, False)]
    assert at_one[0] == at_one[1]
    at_08 = [effective_settings("nse", {"neuron_threshold": 0.8, "select_neurons": s}) for s in (True, False)]
    assert at_08[0] != at_08[1]
    assert effective_settings("nse", {"select_neurons": False}) == at_one[0]
    # AlphaEdit: the cut of the mode not chosen, and λ, are unused
    a = effective_settings("alphaedit", {"threshold_mode": "absolute", "nullspace_energy": 0.1})
    assert a == effective_settings("alphaedit", {"threshold_mode": "absolute", "nullspace_energy": 0.3,
                                                 "mom2_update_weight": 5.0})
    assert a != effective_settings("alphaedit", {"threshold_mode": "absolute", "nullspace_threshold": 0.1})
    # methods without an `effective` rule: every field counts
    assert effective_settings("ft_l", {}) != effective_settings("ft_l", {"lr": 1e-3})
    with pytest.raises(ValueError, match="unknown key"):
        effective_settings("nse", {"neuron_treshold": 1.0})
