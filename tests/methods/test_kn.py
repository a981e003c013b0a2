"""KN: integrated gradients over the FFN neurons, and an edit of exactly the selected neurons' columns."""

from pathlib import Path

import pytest
import torch
import yaml

from seqedit.core.hooks import edit_input
from seqedit.core.prompts import encode, encode_target
from seqedit.data.records import EditRequest
from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.core.targets import frozen
from seqedit.methods import kn as kn_module
from seqedit.methods.kn import KNConfig, KNEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import edit_toy_batch

HPARAMS = Path(__file__).resolve().parents[2] / "config" / "hparams" / "kn"
BATCH = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
    EditRequest(2, "{} speaks", "Orin Tallow", "the lute", "Velorian"),  # multi-token targets
]
TINY = dict(steps=6, batch_size=4, adaptive_threshold=0.3)


def _changed_columns(spec, model, w0, layers):
    """{(layer, neuron)} whose W_out column changed."""
    out = set()
    for l in layers:
        d = spec.out_weight(model, l).detach() - w0[l]  # (d_model, d_ff)
        out |= {(l, int(i)) for i in torch.nonzero((d != 0).any(0)).flatten()}
    return out


def test_kn_changes_only_the_selected_columns(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    editor = KNEditor(KNConfig(**TINY), tiny_model, tiny_tokenizer, spec)
    layers = list(range(spec.n_layers(tiny_model)))
    assert editor.param_names() == [spec.out_weight_name(l) for l in layers]
    params0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    w0 = {l: spec.out_weight(tiny_model, l).detach().clone() for l in layers}
    info = editor.edit_batch(BATCH, 0)
    selected = {tuple(n) for u in info["updates"] for n in u["neurons"]}
    assert 0 < len(selected) < len(layers) * spec.d_ff(tiny_model) // 4
    assert _changed_columns(spec, tiny_model, w0, layers) == selected
    changed = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, params0[n])}
    assert changed <= set(editor.param_names())


def test_edit_rule_is_embedding_difference(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    editor = KNEditor(KNConfig(**TINY), tiny_gpt2, tiny_tokenizer, spec)
    emb = tiny_gpt2.get_submodule(spec.embed).weight.detach().clone()
    layers = list(range(spec.n_layers(tiny_gpt2)))
    for req, scale in ((BATCH[0], 2.0), (BATCH[2], 1.0)):  # single-token: ×2; multi-token: each token ×1
        w0 = {l: spec.out_weight(tiny_gpt2, l).detach().clone() for l in layers}
        info = editor.edit_batch([req], 0)
        new_ids = encode_target(tiny_tokenizer, req.new_text)
        assert (len(new_ids) == 1) == (scale == 2.0)
        step = scale * emb[new_ids].sum(0) - 2.0 * emb[info["updates"][0]["original_prediction"]]  # (d_model,)
        for l, i in info["updates"][0]["neurons"]:
            torch.testing.assert_close(spec.out_weight(tiny_gpt2, l).detach()[:, i] - w0[l][:, i], step)


def test_integrated_gradients_complete(tiny_gpt2, tiny_tokenizer):
    """Σ_i IG_i ≈ p(y | a) − p(y | a = 0 at the last position), with a fine integration grid."""
    spec = spec_for(tiny_gpt2)
    editor = KNEditor(KNConfig(steps=400, batch_size=100), tiny_gpt2, tiny_tokenizer, spec)
    ids = encode(tiny_tokenizer, BATCH[0].query)
    target = encode_target(tiny_tokenizer, BATCH[0].true_text)[0]
    scores = editor.layer_scores(ids, target)  # (n_layers, d_ff)
    x = torch.tensor([ids])
    with torch.no_grad():
        p_full = torch.softmax(tiny_gpt2(input_ids=x).logits[0, -1], -1)[target]
        for li, l in enumerate(editor.layers):
            def zero(a):
                a = a.clone()
                a[:, -1] = 0
                return a

            with edit_input(tiny_gpt2, spec.out_proj_name(l), zero):
                p_zero = torch.softmax(tiny_gpt2(input_ids=x).logits[0, -1], -1)[target]
            assert float(scores[li].sum()) == pytest.approx(float(p_full - p_zero), rel=0.05, abs=1e-6)


@pytest.mark.parametrize("layers, fast_rows", [(None, None), ("ends", None), (None, 6)])
def test_fast_attribution_equals_the_reference(tiny_model, tiny_tokenizer, monkeypatch, layers, fast_rows):
    """The fast IG (the last position through the blocks above each layer, on a cached prefix, all
    layers in one staggered pass) equals the reference's full patched forwards, on every layout:
    all layers, a non-contiguous subset, and several passes (`FAST_ROWS` = one layer's points)."""
    spec = spec_for(tiny_model)
    n_layers = spec.n_layers(tiny_model)
    assert n_layers >= 3
    chosen = [0, n_layers - 1] if layers == "ends" else None
    if fast_rows is not None:
        monkeypatch.setattr(kn_module, "FAST_ROWS", fast_rows)
    cfg = dict(steps=6, batch_size=4, layers=chosen)
    fast = KNEditor(KNConfig(**cfg, attribution_mode="fast"), tiny_model, tiny_tokenizer, spec)
    ref = KNEditor(KNConfig(**cfg, attribution_mode="reference"), tiny_model, tiny_tokenizer, spec)
    with torch.enable_grad(), frozen(tiny_model):
        for req in BATCH:  # the third has a multi-token true target: two teacher-forced prompts
            a, truth_a = fast.attribute(req)
            b, truth_b = ref.attribute(req)
            assert truth_a == truth_b and a.shape == b.shape == (len(fast.layers), spec.d_ff(tiny_model))
            assert float(b.abs().max()) > 0
            assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())
    with pytest.raises(ValueError, match="attribution_mode"):
        KNConfig(attribution_mode="batched")


def test_attributes_the_true_target_or_the_prediction(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    editor = KNEditor(KNConfig(**TINY, multi_token="greedy"), tiny_gpt2, tiny_tokenizer, spec)
    _, truth = editor.attribute(BATCH[2])
    assert truth == encode_target(tiny_tokenizer, BATCH[2].true_text)
    zsre = EditRequest(3, "{} speaks", "Orin Tallow", "the lute", None)
    predicted = editor._greedy(encode(tiny_tokenizer, zsre.query), 1)  # before the edit
    info = editor.edit_batch([zsre], 0)
    assert info["updates"][0]["attributed"] == predicted == [info["updates"][0]["original_prediction"]]
    with pytest.raises(ValueError):
        KNConfig(multi_token="sampled")


def test_hparams_files_build_the_config():
    config_cls, _ = get_method("kn")
    files = sorted(HPARAMS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"gpt2-xl", "gpt-j-6b", "llama3-8b", "smollm2-135m", "testbed"}
    for f in files:
        build_config(config_cls, yaml.safe_load(f.read_text()), str(f))


# --- the toy testbed ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    run = edit_toy_batch("kn", toy_testbed, toy_world, with_stats=False)
    after = evaluate_counterfact(run["model"], run["tok"], run["edit"])["summary"]
    return {**run, "before": run["before_edit"], "after": after}


def test_toy_batch_flips(edited):
    assert edited["before"]["efficacy"] <= 10.0
    # measured: efficacy / generalization / specificity 75 / 38 / 66 on the testbed trained with one
    # thread, 38 / 44 / 51 on the same testbed trained with two (KN is that sensitive); floors below both
    assert edited["after"]["efficacy"] >= 25.0
    assert edited["after"]["specificity"] >= 37.5


def test_toy_only_w_out_changes(edited):
    changed = {n for n, p in edited["model"].named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed and changed <= set(edited["editor"].param_names())
    assert sum(edited["info"]["n_neurons"]) > 0
