"""KNE (reconstruction): token-level attribution, a top-p ensemble per matrix, and a masked joint
update that leaves everything outside the ensemble bit-for-bit unchanged."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from seqedit.core.gradients import candidate_params, target_tokens, token_attribution, token_logprobs, trainable
from seqedit.data.records import EditRequest
from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.methods.kne import KNEConfig, KNEEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import edit_toy_batch, make_tiny_model

HPARAMS = Path(__file__).resolve().parents[2] / "config" / "hparams" / "kne"
BATCH = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
    EditRequest(2, "{} speaks", "Orin Tallow", "the lute", "Velorian"),
]
P = 0.1
TINY = dict(layers=[0, 1], modules=["ffn_in", "ffn_out"], fraction=P, lr=1e-2, num_steps=4)


def test_kne_changes_exactly_its_ensemble(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    editor = KNEEditor(KNEConfig(**TINY), tiny_model, tiny_tokenizer, spec)
    names = editor.param_names()
    # every FFN matrix of the candidate layers: W_out plus c_fc / fc_in / gate+up
    assert len(names) == 2 * (1 + len(spec.mlp_in)) and spec.out_weight_name(1) in names
    w0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    info = editor.edit_batch(BATCH, 0)
    params = dict(tiny_model.named_parameters())
    changed_params = {n for n, p in params.items() if not torch.equal(p, w0[n])}
    assert changed_params == set(names)
    for n in names:
        mask = editor.last_masks[n]
        changed = params[n].detach() != w0[n]
        k = round(P * mask.numel())
        assert int(mask.sum()) == k
        assert changed.sum() >= 0.95 * k and not (changed & ~mask).any()  # ≈ p of the matrix, all inside
        assert torch.equal(params[n].detach()[~mask], w0[n][~mask])  # outside: bit for bit
    assert info["loss"][0] < 20 and info["steps"] == [4]


def test_scaling_switch_changes_the_update(tiny_tokenizer):
    def update(**overrides):
        model = make_tiny_model("gpt2", len(tiny_tokenizer))
        spec = spec_for(model)
        editor = KNEEditor(KNEConfig(**{**TINY, "num_steps": 1, **overrides}), model, tiny_tokenizer, spec)
        w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        info = editor.edit_batch(BATCH, 0)
        params = dict(model.named_parameters())
        return {n: params[n].detach() - w0[n] for n in editor.param_names()}, info

    # SGD: one step with 1/√n_l-scaled gradients is the unscaled step divided by √n_l
    none, info = update(optimizer="sgd", scaling="none")
    grad, _ = update(optimizer="sgd", scaling="grad")
    n_l = info["ensemble"][0]
    for n, d in none.items():
        layer = 0 if ".0." in n else 1
        torch.testing.assert_close(grad[n], d / math.sqrt(n_l[layer]))
    # Adam: the scale acts only through ε, but it does change the update
    a_none, _ = update(scaling="none")
    a_grad, _ = update(scaling="grad")
    assert any(not torch.equal(a_none[n], a_grad[n]) for n in a_none)
    # lr scaling with a global ranking: layers get different ensemble sizes and rates
    g_none, _ = update(scaling="none", ranking="global")
    g_lr, info = update(scaling="lr", ranking="global")
    sizes = info["ensemble"][0]
    assert sizes[0] != sizes[1]
    big = max(sizes, key=sizes.get)
    big_names = [n for n in g_none if f".{big}." in n]
    ratio = sum(float(g_lr[n].abs().sum()) for n in big_names) / sum(float(g_none[n].abs().sum()) for n in big_names)
    assert ratio == pytest.approx(math.sqrt(min(sizes.values()) / sizes[big]), rel=1e-3)


@pytest.mark.parametrize("overrides", [
    dict(aggregate="max"),
    dict(aggregate="mean", signed=True),
    dict(ranking="layer"),
    dict(dynamic_ensemble=True),
    dict(kl_factor=1.0, norm_constraint=1e-3),
    dict(modules=["ffn_out", "attn"]),
    dict(mini_batch=1),
])
def test_open_choices_keep_changes_inside_the_declared_weights(tiny_gpt2, tiny_tokenizer, overrides):
    spec = spec_for(tiny_gpt2)
    editor = KNEEditor(KNEConfig(**{**TINY, **overrides}), tiny_gpt2, tiny_tokenizer, spec)
    w0 = {n: p.detach().clone() for n, p in tiny_gpt2.named_parameters()}
    editor.edit_batch(BATCH, 0)
    params = dict(tiny_gpt2.named_parameters())
    changed = {n for n, p in params.items() if not torch.equal(p, w0[n])}
    assert changed and changed <= set(editor.param_names())
    for n in editor.param_names():
        outside = ~editor.last_masks[n]
        assert torch.equal(params[n].detach()[outside], w0[n][outside])
    if overrides.get("norm_constraint"):
        assert max(float((params[n].detach() - w0[n]).abs().max()) for n in changed) <= 1e-3 + 1e-7
    if "attn" in overrides.get("modules", []):
        assert any(".attn." in n for n in changed)


def test_neuron_granularity_selects_whole_neurons(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    editor = KNEEditor(KNEConfig(**TINY, granularity="neurons"), tiny_model, tiny_tokenizer, spec)
    editor.edit_batch(BATCH, 0)
    d_ff = spec.d_ff(tiny_model)
    for l in (0, 1):
        per_matrix = []
        for c in editor.candidates:
            if c.layer != l:
                continue
            m = editor.last_masks[c.name]
            rows = m.any(dim=1 - c.neuron_dim)  # (d_ff,) neurons touched
            assert torch.equal(m.all(dim=1 - c.neuron_dim), rows)  # a neuron is kept whole
            per_matrix.append(rows)
        assert all(torch.equal(r, per_matrix[0]) for r in per_matrix)  # the same neurons in every matrix
        assert int(per_matrix[0].sum()) == round(P * d_ff)


def test_attribution_is_per_token_grad_times_weight(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    cands = candidate_params(tiny_gpt2, spec, [1], ["ffn_out"])
    tt = target_tokens(tiny_tokenizer, BATCH[2:], "target_new", "cpu")  # one request, multi-token
    with trainable(tiny_gpt2, [c.name for c in cands]) as params:
        w = params[cands[0].name]
        per_token = []
        for t in range(len(tt.ids)):
            g, = torch.autograd.grad(token_logprobs(tiny_gpt2, tt)[t], w)
            per_token.append((w * g).detach())  # −w·∂ℓ_t/∂w
        expect = {
            ("sum", False): sum(s.abs() for s in per_token),
            ("max", False): torch.stack([s.abs() for s in per_token]).max(0).values,
            ("mean", False): sum(s.abs() for s in per_token) / len(per_token),
            ("sum", True): sum(per_token),  # the one-backward shortcut
        }
        for (agg, signed), want in expect.items():
            got = token_attribution(tiny_gpt2, tt, params, cands, agg, signed)[cands[0].name]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)
    assert len(per_token) >= 2


def test_config_rejects_unknown_choices():
    for bad in (dict(aggregate="median"), dict(scaling="sqrt"), dict(ranking="row"), dict(fraction=0.0),
                dict(granularity="neurons", modules=["attn"]), dict(modules=["embed"])):
        with pytest.raises(ValueError):
            KNEConfig(**bad)


def test_hparams_files_build_the_config():
    config_cls, _ = get_method("kne")
    files = sorted(HPARAMS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"gpt2-xl", "gpt-j-6b", "llama3-8b", "smollm2-135m", "testbed"}
    for f in files:
        build_config(config_cls, yaml.safe_load(f.read_text()), str(f))


# --- the toy testbed ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    run = edit_toy_batch("kne", toy_testbed, toy_world, with_stats=False)
    after = evaluate_counterfact(run["model"], run["tok"], run["edit"])["summary"]
    return {**run, "before": run["before_edit"], "after": after}


def test_toy_batch_flips(edited):
    assert edited["before"]["efficacy"] <= 10.0
    # measured: efficacy / generalization / specificity 88 / 69 / 51 and 100 / 94 / 65 on one machine
    # (1 and 2 threads), 62.5 / 69 / 62.5 and 100 / 56 / 70 on an AMD EPYC. Floors well below every
    # measurement: half the edits land (the unedited testbed: 0) and a third of the paraphrases.
    assert edited["after"]["efficacy"] >= 50.0
    assert edited["after"]["generalization"] >= 33.0


def test_toy_ensemble_fraction(edited):
    params = dict(edited["model"].named_parameters())
    for n in edited["editor"].param_names():
        changed = params[n].detach() != edited["w0"][n]
        assert changed.sum() <= round(edited["cfg"].fraction * changed.numel())
        assert not (changed & ~edited["editor"].last_masks[n]).any()
