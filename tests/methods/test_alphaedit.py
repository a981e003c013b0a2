"""AlphaEdit: null-space projector, preserved keys unchanged, layouts, toy-testbed flips."""

import pytest
import torch

from seqedit.core.projection import null_space_directions, null_space_projector
from seqedit.core.stats import collect_second_moments
from seqedit.data.records import EditRequest
from seqedit.methods.alphaedit import AlphaEditConfig, AlphaEditEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import assert_toy_edits_land, assert_toy_edits_stay_local, TINY_TEXTS, edit_toy_batch, make_tiny_model

TINY_LAYERS = [0, 1]
TINY_REQUESTS = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
]
TINY_FAST = dict(layers=TINY_LAYERS, n_context_templates=2, context_template_length=3, v_num_grad_steps=5)


def _spd(d=16, rank=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, rank, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3.0, rank, dtype=torch.float64)
    return a @ a.T / rank


# --- core/projection.py ---------------------------------------------------------------------------
def test_absolute_projector_keeps_exactly_the_small_eigen_directions():
    c = _spd()
    evals, evecs = torch.linalg.eigh(c)
    # 8 eigenvalues below the cut (6 exact zeros + 2 small): the cut sits halfway between the 8th
    # and 9th eigenvalue, far from both, so rounding in another eigensolver cannot move a direction
    # across it.
    assert float(evals[8] - evals[7]) > 1e-3
    thr = float(evals[7] + evals[8]) / 2
    p = null_space_projector(c, "absolute", thr)
    torch.testing.assert_close(p, p.T)
    torch.testing.assert_close(p @ p, p)
    assert round(float(torch.trace(p))) == 8
    # the kept directions are in range(P), the others in its kernel
    assert (p @ evecs[:, :8] - evecs[:, :8]).abs().max() < 1e-10
    assert (p @ evecs[:, 8:]).abs().max() < 1e-10


@pytest.mark.parametrize("energy", [0.01, 0.05, 0.2])
def test_relative_projector_keeps_the_requested_energy_fraction(energy):
    c = _spd()
    evals = torch.linalg.eigvalsh(c).clamp(min=0)
    p = null_space_projector(c, "relative", energy)
    m = round(float(torch.trace(p)))
    kept = float(torch.trace(p @ c) / torch.trace(c))  # E‖P k‖² / E‖k‖² for keys with second moment C
    assert kept <= energy + 1e-12
    # maximal: one more direction would exceed the fraction
    assert float(evals[: m + 1].sum() / evals.sum()) > energy
    assert m >= 6  # at least the exact null space (rank-10 C in 16 dims)


def test_projector_rejects_an_empty_null_space_and_bad_modes():
    c = torch.eye(8, dtype=torch.float64)
    with pytest.raises(ValueError, match="empty"):
        null_space_projector(c, "absolute", 0.5)
    with pytest.raises(ValueError, match="mode"):
        null_space_directions(c, "fraction", 0.1)
    with pytest.warns(UserWarning, match="identity"):
        null_space_projector(c, "absolute", 2.0)


def test_config_checks_and_registry():
    with pytest.raises(ValueError, match="threshold_mode"):
        AlphaEditConfig(threshold_mode="fraction")
    with pytest.raises(ValueError, match="nullspace_energy"):
        AlphaEditConfig(nullspace_energy=0.0)
    assert get_method("alphaedit") == (AlphaEditConfig, AlphaEditEditor)


# --- tiny random models: one batch on every layout ------------------------------------------------
def _tiny_stats(model, tok):
    return collect_second_moments(model, tok, spec_for(model), TINY_TEXTS, TINY_LAYERS, progress=False)


def test_edits_one_batch_and_only_w_out_of_its_layers(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    stats = _tiny_stats(tiny_model, tiny_tokenizer)
    w0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    # relative mode: the absolute 2e-2 cut is meaningless for random activations (tiny Llama's are ~1e-3)
    cfg = AlphaEditConfig(**TINY_FAST, threshold_mode="relative", nullspace_energy=0.05)
    editor = AlphaEditEditor(cfg, tiny_model, tiny_tokenizer, spec, stats, seed=0)
    info = editor.edit_batch(TINY_REQUESTS, 0)
    changed = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == {spec.out_weight_name(l) for l in TINY_LAYERS}
    assert all(v > 0 for v in info["delta_norm"].values())
    state = editor.state_dict()
    assert set(state) >= {"templates", "prev_keys", "projector"}
    for l in TINY_LAYERS:
        assert state["prev_keys"][l].abs().sum() > 0
        assert 0 < editor.null_space_dim[l] < spec.d_ff(tiny_model)


def _update_on_preserved_keys(model, tok, editor_cls, cfg, stats, layer):
    """‖ΔW K₀‖ / (‖ΔW‖ ‖K₀‖) for K₀ = the eigenvectors of C outside AlphaEdit's null space."""
    spec = spec_for(model)
    w_before = spec.out_weight(model, layer).detach().double().clone()
    editor_cls(cfg, model, tok, spec, stats, seed=0).edit_batch(TINY_REQUESTS, 0)
    delta = spec.out_weight(model, layer).detach().double() - w_before  # (d, d_ff)
    evals, evecs = torch.linalg.eigh(stats.cov(layer))
    k0 = evecs[:, evals >= 2e-2]  # (d_ff, r): preserved directions for the absolute 2e-2 cut
    assert 0 < k0.shape[1] < k0.shape[0]  # P is a proper subspace
    return float((delta @ k0).norm() / (delta.norm() * k0.norm()))


def test_update_leaves_preserved_keys_unchanged(tiny_tokenizer):
    layer = TINY_LAYERS[1]
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    stats = _tiny_stats(model, tiny_tokenizer)
    ratio = _update_on_preserved_keys(
        model, tiny_tokenizer, AlphaEditEditor, AlphaEditConfig(**TINY_FAST, nullspace_threshold=2e-2), stats, layer
    )
    assert ratio < 1e-3
    # Without the projection (P = I: plain ridge on the new keys) the same batch does act on
    # those keys, so the check can fail.
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    with pytest.warns(UserWarning, match="identity"):
        free_ratio = _update_on_preserved_keys(
            model, tiny_tokenizer, AlphaEditEditor, AlphaEditConfig(**TINY_FAST, nullspace_threshold=1e9), stats, layer
        )
    assert free_ratio > 1e-2


def test_hparams_files_build_the_config():
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "config" / "hparams" / "alphaedit"
    names = sorted(p.stem for p in root.glob("*.yaml"))
    assert names == ["gpt-j-6b", "gpt2-xl", "llama3-8b", "smollm2-135m", "testbed"]
    for p in root.glob("*.yaml"):
        build_config(AlphaEditConfig, yaml.safe_load(p.read_text()), str(p))


# --- toy testbed: one batch of 8 facts flips --------------------------------------------------------
@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    # Records 0-7 of the (1-thread) toy testbed are z-limited: with z injected at layer 2 the
    # unedited model flips only 3 of them and MEMIT 4; the next batch is editable.
    return edit_toy_batch("alphaedit", toy_testbed, toy_world, edit=slice(8, 16), held=slice(16, 24))


def test_toy_batch_flips(edited):
    assert_toy_edits_land(edited)


def test_toy_held_out_facts_move_far_less_than_the_edited_ones(edited):
    assert_toy_edits_stay_local(edited)


def test_toy_only_the_edited_layers_change(edited):
    changed = {n for n, p in edited["model"].named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed == {edited["spec"].out_weight_name(l) for l in edited["cfg"].layers}
