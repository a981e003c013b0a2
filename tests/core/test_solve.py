import pytest
import torch

from seqedit.core.solve import NumericalError, solve_projected, solve_ridge


def _problem(d_in=12, d_out=5, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    r = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    a = torch.randn(d_in, 3 * d_in, generator=g, dtype=torch.float64)
    return k, r, a @ a.T / (3 * d_in)


def test_ridge_matches_least_squares_oracle():
    k, r, c = _problem()
    lam = 0.7
    delta = solve_ridge(k, r, c, lam)
    # Oracle: minimise ||ΔW K − R||² + lam·tr(ΔW C ΔWᵀ) via the normal equations written out.
    oracle = torch.linalg.lstsq((k @ k.T + lam * c).T, (r @ k.T).T).solution.T
    torch.testing.assert_close(delta, oracle, rtol=1e-8, atol=1e-10)
    # Gradient of the objective vanishes at the solution.
    grad = (delta @ k - r) @ k.T + lam * delta @ c
    assert grad.abs().max() < 1e-9


def test_ridge_previous_keys_enter_the_gram_matrix():
    k, r, c = _problem()
    prev = torch.eye(12, dtype=torch.float64) * 2
    torch.testing.assert_close(solve_ridge(k, r, c, 1.0, prev), solve_ridge(k, r, c + prev, 1.0))


def test_infinite_weight_gives_no_update():
    k, r, c = _problem()
    assert solve_ridge(k, r, c, 1e12).abs().max() < 1e-9


def test_projected_update_lies_in_projector_range():
    k, r, c = _problem()
    evals, evecs = torch.linalg.eigh(c)
    u0 = evecs[:, :4]  # a 4-dim subspace
    p = u0 @ u0.T
    delta = solve_projected(k, r, p, l2=1.0)
    # ΔW = Δ̃ᵀ with Δ̃ in range(P): ΔW (I − P) = 0
    assert (delta @ (torch.eye(12, dtype=torch.float64) - p)).abs().max() < 1e-9


def test_nonfinite_and_singular_raise_naming_method_layer_round():
    k, r, c = _problem()
    k[0, 0] = float("nan")
    with pytest.raises(NumericalError, match=r"memit: layer 3, round 7: non-finite"):
        solve_ridge(k, r, c, 1.0, where=("memit", 3, 7))
    k, r, _ = _problem()
    with pytest.raises(NumericalError, match=r"nse: layer 1, round 2"):
        solve_ridge(torch.zeros_like(k), r, torch.zeros(12, 12, dtype=torch.float64), 1.0, where=("nse", 1, 2))
