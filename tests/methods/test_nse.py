"""NSE: neuron selection, restricted update, weights rewinding and its z cache, toy flips."""

import dataclasses
import math

import pytest
import torch

from seqedit.core.attribution import select_by_activation
from seqedit.core.stats import collect_second_moments
from seqedit.data.records import EditRequest
from seqedit.methods.nse import NSEConfig, NSEEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import assert_toy_edits_land, assert_toy_edits_stay_local, TINY_TEXTS, edit_toy_batch, make_tiny_model

TINY_LAYERS = [0, 1]
BATCH_A = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
]
BATCH_B = [
    EditRequest(2, "{} speaks", "Orin Tallow", "Quell", "Velorian"),
    EditRequest(3, "{} plays the", "Tessa Brink", "Zorvia", "lute"),
]
# alpha 0 / upper_bound ∞: every request is edited in both passes of the tiny tests.
TINY_FAST = dict(layers=TINY_LAYERS, n_context_templates=0, v_num_grad_steps=5, alpha=0.0, upper_bound=math.inf,
                 mom2_update_weight=1.0)


# --- core/attribution.py: select_by_activation ------------------------------------------------------
def test_selection_keeps_the_top_activation_mass():
    # scores Σ_j |K_nj| = [1, 6, 0, 3] (total 10), sorted 6, 3, 1, 0 -> cumsum 6, 9, 10, 10
    keys = torch.tensor([[1.0, 0.0], [-4.0, 2.0], [0.0, 0.0], [1.5, -1.5]])
    assert select_by_activation(keys, 0.6).tolist() == [1]
    assert select_by_activation(keys, 0.9).tolist() == [1, 3]
    assert select_by_activation(keys, 0.95).tolist() == [1, 3]
    assert select_by_activation(keys, 0.5).tolist() == [1]  # at least one neuron
    assert select_by_activation(keys, 1.0).tolist() == [0, 1, 2, 3]  # p = 1 keeps all


def test_selection_at_p_one_keeps_every_neuron_despite_rounding():
    keys = torch.rand(4099, 3, generator=torch.Generator().manual_seed(0))
    assert len(select_by_activation(keys, 1.0)) == 4099


def test_restricted_solve_is_optimal_over_the_selected_columns(tiny_tokenizer):
    """ΔW minimises ‖ΔW K − R‖² + tr(ΔW (λC + C_p) ΔWᵀ) subject to ΔW[:, ¬N] = 0: the gradient's
    N columns vanish, the other columns of ΔW are exactly zero."""
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    spec = spec_for(model)
    cfg = NSEConfig(**{**TINY_FAST, "mom2_update_weight": 0.5, "neuron_threshold": 0.7})
    editor = NSEEditor(cfg, model, tiny_tokenizer, spec, _stats(model, tiny_tokenizer))
    g = torch.Generator().manual_seed(0)
    d_ff, d = spec.d_ff(model), spec.d_model(model)
    editor.prev_keys[1] = torch.eye(d_ff, dtype=torch.float64) * 0.3
    keys = torch.randn(d_ff, 3, generator=g, dtype=torch.float64).abs() * torch.linspace(0, 2, d_ff)[:, None]
    resid = torch.randn(d, 3, generator=g, dtype=torch.float64)  # (d, 3)
    delta = editor.restricted_solve(1, keys, resid, 0)  # (d, d_ff), float64 like the keys
    n = editor.last_selection[1][-1]
    off = torch.ones(d_ff, dtype=torch.bool)
    off[n] = False
    assert 0 < len(n) < d_ff and (delta[:, off] == 0).all()
    k, r = keys, resid
    reg = 0.5 * editor.cov[1] + editor.prev_keys[1]
    grad = (delta @ k - r) @ k.T + delta @ reg  # (d, d_ff)
    assert grad[:, n].abs().max() < 1e-10
    assert grad[:, off].abs().max() > 1e-6  # unconstrained columns would move: the restriction bites


def test_config_checks_and_registry():
    with pytest.raises(ValueError, match="upper_bound"):
        NSEConfig(alpha=5.0, upper_bound=5.0)
    with pytest.raises(ValueError, match="max_iterations"):
        NSEConfig(max_iterations=1)
    assert NSEConfig().mom2_update_weight == 15000.0
    assert get_method("nse") == (NSEConfig, NSEEditor)


def test_hparams_files_build_the_config():
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "config" / "hparams" / "nse"
    assert sorted(p.stem for p in root.glob("*.yaml")) == ["gpt-j-6b", "gpt2-xl", "llama3-8b", "smollm2-135m", "testbed"]
    for p in root.glob("*.yaml"):
        build_config(NSEConfig, yaml.safe_load(p.read_text()), str(p))


# --- tiny random models --------------------------------------------------------------------------------
def _stats(model, tok):
    return collect_second_moments(model, tok, spec_for(model), TINY_TEXTS, TINY_LAYERS, progress=False)


def test_edits_one_batch_only_selected_neuron_columns(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    stats = _stats(tiny_model, tiny_tokenizer)
    w0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    w0_out = {l: spec.out_weight(tiny_model, l).detach().clone() for l in TINY_LAYERS}  # (d, d_ff)
    editor = NSEEditor(NSEConfig(**TINY_FAST, neuron_threshold=0.6), tiny_model, tiny_tokenizer, spec, stats)
    info = editor.edit_batch(BATCH_A, 0)
    assert info["passes"] == 2 and info["edited_per_pass"] == [2, 2]
    changed = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == {spec.out_weight_name(l) for l in TINY_LAYERS}
    d_ff = spec.d_ff(tiny_model)
    for l in TINY_LAYERS:
        selected = torch.zeros(d_ff, dtype=torch.bool)
        for n in editor.last_selection[l]:
            selected[n] = True
        assert 0 < int(selected.sum()) < d_ff  # a proper subset, so the check below can fail
        w = spec.out_weight(tiny_model, l).detach()
        assert torch.equal(w[:, ~selected], w0_out[l][:, ~selected])  # untouched bit for bit
        assert (w[:, selected] != w0_out[l][:, selected]).any()
    for l in TINY_LAYERS:
        assert editor.prev_keys[l].abs().sum() > 0


def test_residual_band_gates_the_passes(tiny_tokenizer):
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    spec = spec_for(model)
    stats = _stats(model, tiny_tokenizer)
    w0 = spec.out_weight(model, 0).detach().clone()
    # an upper bound below every residual: nothing is ever edited (the reference's cap)
    cfg = NSEConfig(**{**TINY_FAST, "upper_bound": 1e-9, "alpha": 0.0})
    info = NSEEditor(cfg, model, tiny_tokenizer, spec, stats).edit_batch(BATCH_A, 0)
    assert info["passes"] == 0 and torch.equal(spec.out_weight(model, 0), w0)
    # one pass over every request when not iterative
    cfg = NSEConfig(**{**TINY_FAST, "iterative": False, "upper_bound": 1e-9, "alpha": 0.0})
    info = NSEEditor(cfg, model, tiny_tokenizer, spec, stats).edit_batch(BATCH_A, 0)
    assert info["passes"] == 1 and info["edited_per_pass"] == [2]
    assert not torch.equal(spec.out_weight(model, 0), w0)


def test_rewinding_makes_z_independent_of_earlier_edits(tiny_tokenizer):
    def fresh(rewind):
        model = make_tiny_model("gpt2", len(tiny_tokenizer))
        spec = spec_for(model)
        return model, NSEEditor(NSEConfig(**TINY_FAST, rewind=rewind), model, tiny_tokenizer, spec, _stats(model, tiny_tokenizer))

    _, ref = fresh(True)
    z_fresh, _ = ref.targets(BATCH_B)  # z of B on the unedited model

    model, editor = fresh(True)
    w_before = editor.spec.out_weight(model, 1).detach().clone()
    editor.edit_batch(BATCH_A, 0)
    w_after = editor.spec.out_weight(model, 1).detach().clone()
    assert not torch.equal(w_after, w_before)  # batch A did edit
    z_b, _ = editor.targets(BATCH_B)
    assert torch.equal(z_b, z_fresh)
    assert torch.equal(editor.spec.out_weight(model, 1), w_after)  # the edited weights are back

    model, editor = fresh(False)
    editor.edit_batch(BATCH_A, 0)
    z_b, _ = editor.targets(BATCH_B)
    assert not torch.allclose(z_b, z_fresh, atol=1e-5)  # without rewinding z sees batch A's edit
    assert editor.z_cache == {}


def test_z_cache_key_changes_with_every_z_setting(tiny_tokenizer):
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    spec = spec_for(model)
    editor = NSEEditor(NSEConfig(**TINY_FAST), model, tiny_tokenizer, spec, _stats(model, tiny_tokenizer))
    z1, loss1 = editor.targets(BATCH_B)
    assert len(editor.z_cache) == 2 and not any(math.isnan(x) for x in loss1)
    z1_again, loss_again = editor.targets(BATCH_B)  # a cache hit: same vectors, not re-optimised
    assert torch.equal(z1_again, z1) and all(math.isnan(x) for x in loss_again)
    editor.config = dataclasses.replace(editor.config, clamp_norm_factor=0.01)  # a binding clamp
    z2, loss2 = editor.targets(BATCH_B)
    assert len(editor.z_cache) == 4 and not any(math.isnan(x) for x in loss2)
    assert not torch.allclose(z2, z1)
    keys = {editor.z_key(BATCH_B[0], editor.context_templates())}
    for field, value in [("v_lr", 0.1), ("v_num_grad_steps", 7), ("v_weight_decay", 0.1), ("kl_factor", 1.0),
                         ("layers", [0, 2])]:
        editor.config = dataclasses.replace(editor.config, **{field: value})
        keys.add(editor.z_key(BATCH_B[0], editor.context_templates()))
    keys.add(editor.z_key(BATCH_B[0], [["{}"], ["Hello. {}"]]))
    keys.add(editor.z_key(dataclasses.replace(BATCH_B[0], target_new="Velorian"), editor.context_templates()))
    assert len(keys) == 8


# --- toy testbed: one batch of 8 facts flips -------------------------------------------------------------
@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    # Records 0-7 of the (1-thread) toy testbed are z-limited: with z injected at layer 2 the
    # unedited model flips only 3 of them and MEMIT 4; the next batch is editable.
    return edit_toy_batch("nse", toy_testbed, toy_world, edit=slice(8, 16), held=slice(16, 24))


def test_toy_batch_flips(edited):
    assert_toy_edits_land(edited)


def test_toy_held_out_facts_move_far_less_than_the_edited_ones(edited):
    assert_toy_edits_stay_local(edited)


def test_toy_only_selected_columns_of_the_edited_layers_change(edited):
    spec, model = edited["spec"], edited["model"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed == {spec.out_weight_name(l) for l in edited["cfg"].layers}
    for l in edited["cfg"].layers:
        w0 = edited["w0"][spec.out_weight_name(l)]
        w0 = w0.T if spec.out_transposed else w0  # (d, d_ff)
        selected = torch.zeros(w0.shape[1], dtype=torch.bool)
        for n in edited["editor"].last_selection[l]:
            selected[n] = True
        assert torch.equal(spec.out_weight(model, l)[:, ~selected], w0[:, ~selected])
