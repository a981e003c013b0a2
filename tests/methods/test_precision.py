"""Edits below float32: refused unless allowed; allowed, each round logs the update's rounding loss."""

import pytest
import torch

import seqedit.methods.memit as memit_module
from seqedit.core.stats import collect_second_moments
from seqedit.data.records import EditRequest
from seqedit.methods.base import check_edit_dtype
from seqedit.methods.memit import MEMITConfig, MEMITEditor
from seqedit.models.arch import spec_for

from conftest import TINY_TEXTS, make_tiny_model

LAYERS = [0, 1]
REQUESTS = [EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
            EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex")]
CFG = MEMITConfig(layers=LAYERS, n_context_templates=0, v_num_grad_steps=3, mom2_update_weight=0.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_below_float32_is_refused_unless_allowed(tiny_gpt2, dtype):
    check_edit_dtype(tiny_gpt2)  # float32: edited as it is
    model = tiny_gpt2.to(dtype)
    with pytest.raises(ValueError) as err:
        check_edit_dtype(model)
    message = str(err.value)
    assert "\n" not in message and str(dtype).replace("torch.", "") in message
    assert "model.allow_low_precision_edits" in message
    check_edit_dtype(model, allow_low_precision=True)


def _edit(model, tok, stats, monkeypatch):
    """One MEMIT batch; returns the round info, the float64 solutions and the weights before."""
    spec = spec_for(model)
    solutions = {}
    solve = memit_module.solve_ridge

    def recording(keys, resid, cov, weight, prev=None, where=("?", -1, -1)):
        out = solve(keys, resid, cov, weight, prev, where)
        solutions[where[1]] = out.detach().clone()  # (d_out, d_ff) float64, as computed
        return out

    monkeypatch.setattr(memit_module, "solve_ridge", recording)
    before = {l: spec.out_weight(model, l).detach().double().clone() for l in LAYERS}
    info = MEMITEditor(CFG, model, tok, spec, stats, seed=0).edit_batch(REQUESTS, 0)
    return info, solutions, before


def test_rounding_ratio_of_a_bf16_model_matches_a_direct_computation(tiny_tokenizer, monkeypatch):
    model = make_tiny_model("gpt2", len(tiny_tokenizer))
    spec = spec_for(model)
    stats = collect_second_moments(model, tiny_tokenizer, spec, TINY_TEXTS, LAYERS, progress=False)
    info32, _, _ = _edit(make_tiny_model("gpt2", len(tiny_tokenizer)), tiny_tokenizer, stats, monkeypatch)
    assert "rounding" not in info32  # float32 weights: nothing to report
    model = model.to(torch.bfloat16)
    info, solutions, before = _edit(model, tiny_tokenizer, stats, monkeypatch)
    assert set(info["rounding"]) == set(LAYERS)
    for l in LAYERS:
        applied = spec.out_weight(model, l).detach().double() - before[l]  # the change of the stored weight
        direct = float((applied - solutions[l]).norm() / solutions[l].norm())
        assert info["rounding"][l] == pytest.approx(direct, rel=1e-9)  # the same float64 quantities
        # bf16's unit roundoff u = 2^-8, incurred by the cast of ΔW and by the sum W + ΔW: entrywise
        # |error| ≤ u (|ΔW| + |W_after|), so 0 < ratio ≤ u (1 + ‖W_after‖ / ‖ΔW‖) (to first order in u)
        w_after = spec.out_weight(model, l).detach().double()
        bound = 2.0 ** -8 * (1 + float(w_after.norm() / solutions[l].norm())) * (1 + 2.0 ** -7)
        assert 0 < info["rounding"][l] <= bound
