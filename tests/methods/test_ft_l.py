"""FT-L: the L∞ constraint around the weights before each batch, the two objectives, the toy batch."""

from pathlib import Path

import pytest
import torch
import yaml

from seqedit.core.gradients import target_tokens
from seqedit.data.records import EditRequest
from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.methods.ft_l import FTLConfig, FTLEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import edit_toy_batch

HPARAMS = Path(__file__).resolve().parents[2] / "config" / "hparams" / "ft_l"
BATCH = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
    EditRequest(2, "{} speaks", "Orin Tallow", "the lute", "Velorian"),
]
EPS = 1e-3
TINY = dict(layers=[1], lr=1e-2, num_steps=5, norm_constraint=EPS, batch_size=2)


def test_ft_l_changes_only_declared_weights_within_eps(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    editor = FTLEditor(FTLConfig(**TINY), tiny_model, tiny_tokenizer, spec)
    w0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    info = editor.edit_batch(BATCH, 0)
    changed = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == set(editor.param_names()) == {spec.out_weight_name(1)}
    w = dict(tiny_model.named_parameters())[spec.out_weight_name(1)].detach()
    drift = float((w - w0[spec.out_weight_name(1)]).abs().max())
    assert drift <= EPS + 1e-7
    assert drift > 0.9 * EPS  # lr 10·ε: the clamp was binding
    assert info["loss"][-1] < info["loss"][0]
    assert all(p.grad is None for p in tiny_model.parameters())


def test_constraint_is_around_the_weights_before_each_batch(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    editor = FTLEditor(FTLConfig(**TINY), tiny_gpt2, tiny_tokenizer, spec)
    w_run = spec.out_weight(tiny_gpt2, 1).detach().clone()
    editor.edit_batch(BATCH, 0)
    w_mid = spec.out_weight(tiny_gpt2, 1).detach().clone()
    editor.edit_batch(BATCH, 1)  # the same facts again: the same entries keep moving the same way
    w_end = spec.out_weight(tiny_gpt2, 1).detach()
    assert float((w_end - w_mid).abs().max()) <= EPS + 1e-7
    assert float((w_end - w_run).abs().max()) > 1.5 * EPS  # not clamped around the run's start


def test_bias_trains_when_included(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    editor = FTLEditor(FTLConfig(**TINY, include_bias=True), tiny_gpt2, tiny_tokenizer, spec)
    w0 = {n: p.detach().clone() for n, p in tiny_gpt2.named_parameters()}
    editor.edit_batch(BATCH, 0)
    changed = {n for n, p in tiny_gpt2.named_parameters() if not torch.equal(p, w0[n])}
    bias = spec.out_proj_name(1) + ".bias"
    assert changed == set(editor.param_names()) == {spec.out_weight_name(1), bias}
    assert float((dict(tiny_gpt2.named_parameters())[bias].detach() - w0[bias]).abs().max()) <= EPS + 1e-7


def test_objectives_place_multi_token_targets_differently(tiny_tokenizer):
    req = [EditRequest(0, "{} speaks", "Orin Tallow", "the lute", "Velorian")]
    last = target_tokens(tiny_tokenizer, req, "prompt_last", "cpu")
    forced = target_tokens(tiny_tokenizer, req, "target_new", "cpu")
    n = len(last.ids)
    assert n >= 2 and torch.equal(last.ids, forced.ids)
    assert len(set(last.pos.tolist())) == 1  # every token from the last prompt position
    assert forced.pos.tolist() == list(range(int(last.pos[0]), int(last.pos[0]) + n))  # teacher-forced
    assert forced.input_ids.shape[1] == last.input_ids.shape[1] + n - 1


def test_power_law_weight_decay(tiny_gpt2, tiny_tokenizer):
    cfg = FTLConfig(**{**TINY, "num_steps": 1}, wd_power_law=[-0.87, 0.156])
    info = FTLEditor(cfg, tiny_gpt2, tiny_tokenizer, spec_for(tiny_gpt2)).edit_batch(BATCH, 0)
    assert info["weight_decay"] == pytest.approx(3 ** -0.87 * 2.718281828 ** 0.156, rel=1e-6)


def test_hparams_files_build_the_config():
    config_cls, _ = get_method("ft_l")
    files = sorted(HPARAMS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"gpt2-xl", "gpt-j-6b", "llama3-8b", "smollm2-135m", "testbed"}
    for f in files:
        build_config(config_cls, yaml.safe_load(f.read_text()), str(f))


# --- the toy testbed ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    run = edit_toy_batch("ft_l", toy_testbed, toy_world, with_stats=False)
    after = evaluate_counterfact(run["model"], run["tok"], run["edit"])["summary"]
    return {**run, "before": run["before_edit"], "after": after}


def test_toy_batch_flips(edited):
    assert edited["before"]["efficacy"] <= 10.0
    # measured: efficacy / generalization / specificity 100 / 94 / 78 and 100 / 88 / 69 on two
    # machines, 100 / 94 / 61 (1 thread) and 100 / 69 / 72 (2 threads) on an AMD EPYC. FT-L damages
    # neighbours by design; the floors sit well below every measurement and still catch an edit
    # that does not land or one that breaks most neighbours.
    assert edited["after"]["efficacy"] >= 87.5
    assert edited["after"]["generalization"] >= 50.0
    assert edited["after"]["specificity"] >= 45.0


def test_toy_constraint_holds(edited):
    for n in edited["editor"].param_names():
        w = dict(edited["model"].named_parameters())[n].detach()
        assert float((w - edited["w0"][n]).abs().max()) <= edited["cfg"].norm_constraint + 1e-7
