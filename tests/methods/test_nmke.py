"""NMKE: neuron attribution, entropy-guided mask, masked AlphaEdit update, toy flips."""

import pytest
import torch

from seqedit.core.attribution import entropy_guided_mask, frozen_final_norm, neuron_logprob_gain, trace_neurons
from seqedit.core.stats import collect_second_moments
from seqedit.data.records import EditRequest
from seqedit.methods.alphaedit import AlphaEditEditor
from seqedit.methods.nmke import NMKEConfig, NMKEEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import assert_toy_edits_land, assert_toy_edits_stay_local, TINY_TEXTS, edit_toy_batch
from conftest import testbed_hparams as toy_hparams

TINY_LAYERS = [0, 1]
TINY_REQUESTS = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
]
TINY_FAST = dict(layers=TINY_LAYERS, n_context_templates=2, context_template_length=3, v_num_grad_steps=5,
                 threshold_mode="relative", nullspace_energy=0.05)
TEXTS = ["Varkel Dunmore was born in", "The capital of Zorvia is", "Orin Tallow speaks"]


# --- core/attribution.py -------------------------------------------------------------------------------
def test_trace_and_frozen_norm_reproduce_the_model(tiny_model, tiny_tokenizer):
    """Residual without the FFN + FFN output = block output, and frozen norm + unembedding at
    the model's own final state = the model's logits (LayerNorm and RMSNorm layouts)."""
    spec = spec_for(tiny_model)
    trace = trace_neurons(tiny_model, tiny_tokenizer, spec, TINY_LAYERS, TEXTS)
    head = tiny_model.get_submodule(spec.lm_head)
    f = frozen_final_norm(tiny_model.get_submodule(spec.final_norm), trace.final)
    logits = f(trace.final) @ head.weight.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias
    torch.testing.assert_close(logits, trace.logits, rtol=1e-4, atol=1e-4)
    one_by_one = trace_neurons(tiny_model, tiny_tokenizer, spec, TINY_LAYERS, TEXTS, chunk=1)  # no padding
    torch.testing.assert_close(one_by_one.activations[1], trace.activations[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one_by_one.residual[1], trace.residual[1], rtol=1e-4, atol=1e-5)
    # residual without the FFN + Σ_i a_i W_out[:, i] (+ bias) = the block output, read unpadded
    from seqedit.core.hooks import capture

    for j, text in enumerate(TEXTS):
        ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
        names = [spec.block_name(l) for l in TINY_LAYERS]
        with capture(tiny_model, names) as seen:
            tiny_model(input_ids=ids)
        for l in TINY_LAYERS:
            ffn = spec.out_weight(tiny_model, l) @ trace.activations[l][j]  # (d,)
            bias = spec.out_proj(tiny_model, l).bias
            if bias is not None:
                ffn = ffn + bias
            torch.testing.assert_close(trace.residual[l][j] + ffn, seen[spec.block_name(l)][0, -1], rtol=1e-4, atol=1e-5)


def test_logprob_gain_matches_a_direct_computation_and_is_chunk_invariant(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    trace = trace_neurons(tiny_model, tiny_tokenizer, spec, TINY_LAYERS, TEXTS)
    y = trace.logits.argmax(-1)
    big = neuron_logprob_gain(tiny_model, spec, trace, 1, y, amplification=30.0, chunk_elements=1 << 30)
    small = neuron_logprob_gain(tiny_model, spec, trace, 1, y, amplification=30.0, chunk_elements=1)
    torch.testing.assert_close(big, small, rtol=1e-5, atol=1e-6)
    assert big.shape == (len(TEXTS), spec.d_ff(tiny_model)) and big.abs().max() > 0
    # direct: neuron 5 of prompt 2, one vector at a time
    j, i = 2, 5
    head = tiny_model.get_submodule(spec.lm_head)
    f = frozen_final_norm(tiny_model.get_submodule(spec.final_norm), trace.final[j : j + 1])
    w = spec.out_weight(tiny_model, 1)[:, i]

    def logp(v):
        logits = f(v[None]) @ head.weight.T + (head.bias if getattr(head, "bias", None) is not None else 0)
        return torch.log_softmax(logits[0], -1)[y[j]]

    h = trace.residual[1][j]
    expected = logp(h + 30.0 * trace.activations[1][j, i] * w) - logp(h)
    torch.testing.assert_close(big[j, i], expected, rtol=1e-4, atol=1e-5)
    # λ = 0 leaves every vector at h: the gain is 0 up to the float32 rounding of two log-softmaxes
    # evaluated in batches of different shapes (a few ulps of log-probabilities of size ~log(vocab)).
    zero = neuron_logprob_gain(tiny_model, spec, trace, 1, y, amplification=0.0)
    torch.testing.assert_close(zero, torch.zeros_like(zero), rtol=0, atol=1e-5)
    assert big.abs().max() > 1e3 * 1e-5  # the real gains are far above that rounding


def test_logprob_gain_equals_the_sub_value_read_through_the_model_for_every_pair(tiny_model, tiny_tokenizer):
    """Every (prompt, neuron) score against the definition, one amplified sub-value at a time:
    h_j + λ a_ji w_i through the frozen final norm and the unembedding (GPT-2's LayerNorm with its
    bias and the head without one, GPT-J's head bias, Llama's RMSNorm). float32 log-probabilities of
    size ~log(vocab) agree to ~1e-6; the tolerance is 1e-4 relative, 1e-5 absolute."""
    spec = spec_for(tiny_model)
    head, norm = tiny_model.get_submodule(spec.lm_head), tiny_model.get_submodule(spec.final_norm)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # initialised at scale 1 and bias 0, where a dropped term would not show
        for p in [norm.weight, getattr(norm, "bias", None), getattr(head, "bias", None)]:
            if p is not None:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    trace = trace_neurons(tiny_model, tiny_tokenizer, spec, TINY_LAYERS, TEXTS)
    y = trace.logits.argmax(-1)
    bias = head.bias if getattr(head, "bias", None) is not None else 0
    f = frozen_final_norm(tiny_model.get_submodule(spec.final_norm), trace.final)
    for layer in TINY_LAYERS:
        gain = neuron_logprob_gain(tiny_model, spec, trace, layer, y, amplification=30.0, chunk_elements=5000)
        h, a, w = trace.residual[layer], trace.activations[layer], spec.out_weight(tiny_model, layer).float()
        v = h[:, None, :] + 30.0 * a[:, :, None] * w.T[None]  # (J, d_ff, d) each neuron's shifted residual
        lp = torch.log_softmax(f(v) @ head.weight.T + bias, -1)  # (J, d_ff, V)
        lp_h = torch.log_softmax(f(h) @ head.weight.T + bias, -1)  # (J, V)
        rows = torch.arange(len(TEXTS))
        expected = lp[rows, :, y].clamp(-18.420680743952367, 0) - lp_h[rows, y][:, None].clamp(-18.420680743952367, 0)
        torch.testing.assert_close(gain, expected, rtol=1e-4, atol=1e-5)
        assert (gain > 0).any() and (gain < 0).any()  # neurons that raise y and neurons that lower it


def test_entropy_mask_union_and_ratios():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 200, generator=g) * 0.01
    scores[:, 7] += 1.0  # knowledge-general: high in every prompt
    scores[3, 150] = 5.0  # knowledge-specific: one burst
    mask, info = entropy_guided_mask(scores)
    assert mask[7] and mask[150]
    assert 0.3 <= info["rho_general"] <= 0.4 and 0.3 <= info["rho_specific"] <= 0.4
    assert info["n_specific"] == pytest.approx(info["rho_specific"] * 200, abs=1)
    assert info["n_selected"] == int(mask.sum()) <= info["n_general"] + info["n_specific"]
    assert int(mask.sum()) < 200
    # ratios follow bias + scale · H^exponent
    _, hi = entropy_guided_mask(scores, general_bias=0.0, general_scale=1.0, general_exponent=1.0)
    assert hi["rho_general"] == pytest.approx(hi["entropy_general"])
    # peakier scores (higher temperature) give a lower general entropy
    _, sharp = entropy_guided_mask(scores, temperature=300.0)
    assert sharp["entropy_general"] < info["entropy_general"]
    # no positive peak: the specific ratio falls back to its bias
    _, neg = entropy_guided_mask(-scores.abs() - 1.0)
    assert neg["rho_specific"] == 0.3


def test_config_checks_and_registry():
    with pytest.raises(ValueError, match="attribution_token"):
        NMKEConfig(attribution_token="gold")
    assert get_method("nmke") == (NMKEConfig, NMKEEditor)
    assert issubclass(NMKEEditor, AlphaEditEditor)


def test_hparams_files_build_the_config():
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "config" / "hparams" / "nmke"
    assert sorted(p.stem for p in root.glob("*.yaml")) == ["gpt-j-6b", "gpt2-xl", "llama3-8b", "smollm2-135m", "testbed"]
    for p in root.glob("*.yaml"):
        build_config(NMKEConfig, yaml.safe_load(p.read_text()), str(p))


# --- tiny random models --------------------------------------------------------------------------------
@pytest.mark.parametrize("restricted", [False, True])
def test_edits_one_batch_only_masked_neuron_columns(tiny_model, tiny_tokenizer, restricted):
    spec = spec_for(tiny_model)
    stats = collect_second_moments(tiny_model, tiny_tokenizer, spec, TINY_TEXTS, TINY_LAYERS, progress=False)
    w0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    w0_out = {l: spec.out_weight(tiny_model, l).detach().clone() for l in TINY_LAYERS}  # (d, d_ff)
    cfg = NMKEConfig(**TINY_FAST, restricted_solve=restricted)
    editor = NMKEEditor(cfg, tiny_model, tiny_tokenizer, spec, stats, seed=0)
    info = editor.edit_batch(TINY_REQUESTS, 0)
    changed = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == {spec.out_weight_name(l) for l in TINY_LAYERS}
    for l in TINY_LAYERS:
        mask = editor.last_masks[l]
        assert 0 < int(mask.sum()) < mask.numel()  # a proper subset, so the check can fail
        assert info["mask"][l]["n_selected"] == int(mask.sum())
        w = spec.out_weight(tiny_model, l).detach()
        assert torch.equal(w[:, ~mask], w0_out[l][:, ~mask])  # untouched bit for bit
        assert (w[:, mask] != w0_out[l][:, mask]).any()
        assert editor.prev_keys[l].abs().sum() > 0
    assert "projector" in editor.state_dict()


MATCHED = ("threshold_mode", "nullspace_threshold", "nullspace_energy", "l2")  # config/config.yaml `controls`


class AllNeuronsNMKE(NMKEEditor):
    """NMKE with every neuron kept: the mask is all ones."""

    def neuron_masks(self, requests, templates):
        d_ff = self.spec.d_ff(self.model)
        return {l: torch.ones(d_ff, dtype=torch.bool) for l in self.config.layers}, {}


def _two_batches(editor_cls, cfg, model_type, tok):
    """ΔW per layer of each of two batches (the second with C_p of the first), float64."""
    from conftest import make_tiny_model

    model = make_tiny_model(model_type, len(tok))
    spec = spec_for(model)
    stats = collect_second_moments(model, tok, spec, TINY_TEXTS, TINY_LAYERS, progress=False)
    editor = editor_cls(cfg, model, tok, spec, stats, seed=0)
    deltas = []
    for round_, batch in enumerate((TINY_REQUESTS[:1], TINY_REQUESTS[1:])):
        before = {l: spec.out_weight(model, l).detach().double().clone() for l in TINY_LAYERS}
        editor.edit_batch(batch, round_)
        deltas.append({l: spec.out_weight(model, l).detach().double() - before[l] for l in TINY_LAYERS})
    scale = max(float(spec.out_weight(model, l).detach().abs().max()) for l in TINY_LAYERS)
    return deltas, scale


@pytest.mark.parametrize("restricted", [False, True])
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_matched_control_equals_nmke_with_every_neuron_kept(model_type, tiny_tokenizer, restricted):
    """AlphaEdit given NMKE's projector and ridge (the matched control) makes NMKE's update when
    NMKE's mask keeps every neuron, so NMKE against the control differs by the mask alone."""
    from seqedit.methods.alphaedit import AlphaEditConfig

    nmke_cfg = NMKEConfig(**{**TINY_FAST, "l2": 3.0}, restricted_solve=restricted)
    shared = {f: getattr(nmke_cfg, f) for f in ("layers", "n_context_templates", "context_template_length",
                                                   "v_num_grad_steps")}
    control_cfg = AlphaEditConfig(**shared, **{f: getattr(nmke_cfg, f) for f in MATCHED})
    nmke, _ = _two_batches(AllNeuronsNMKE, nmke_cfg, model_type, tiny_tokenizer)
    control, w_max = _two_batches(AlphaEditEditor, control_cfg, model_type, tiny_tokenizer)
    own, _ = _two_batches(AlphaEditEditor, AlphaEditConfig(**shared, threshold_mode="relative", nullspace_energy=0.2),
                          model_type, tiny_tokenizer)  # AlphaEdit with other projector and ridge settings
    # float64 solves, stored in float32 weights: a stored update is exact to a float32 rounding of W
    atol = 2 * torch.finfo(torch.float32).eps * w_max
    for n, c, o in zip(nmke, control, own):
        for l in TINY_LAYERS:
            torch.testing.assert_close(n[l], c[l], rtol=0, atol=atol)
            assert float((o[l] - c[l]).norm() / c[l].norm()) > 1e-2  # the settings matter: the check can fail


# --- toy testbed: one batch of 8 facts flips -------------------------------------------------------------
@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    # Records 0-7 of the (1-thread) toy testbed are z-limited: with z injected at layer 2 the
    # unedited model flips only 3 of them and MEMIT 4; the next batch is editable. l2 = 0.1: the
    # testbed file's l2 = 3 is tuned for 120 sequential edits, where a looser solve fails the model,
    # and flips 4 of these 8 in one batch.
    cfg = toy_hparams("nmke", l2=0.1)
    return edit_toy_batch("nmke", toy_testbed, toy_world, edit=slice(8, 16), held=slice(16, 24), cfg=cfg)


def test_toy_batch_flips(edited):
    assert_toy_edits_land(edited)


def test_toy_held_out_facts_move_far_less_than_the_edited_ones(edited):
    assert_toy_edits_stay_local(edited)


def test_toy_only_masked_columns_of_the_edited_layers_change(edited):
    spec, model = edited["spec"], edited["model"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed == {spec.out_weight_name(l) for l in edited["cfg"].layers}
    for l in edited["cfg"].layers:
        w0 = edited["w0"][spec.out_weight_name(l)]
        w0 = w0.T if spec.out_transposed else w0  # (d, d_ff)
        mask = edited["editor"].last_masks[l]
        assert torch.equal(spec.out_weight(model, l)[:, ~mask], w0[:, ~mask])
