"""Closed-form least-squares solves for a layer update ΔW (d_out × d_in), in float64.

All solves share one shape: find ΔW so that ΔW K ≈ R for the new keys K (d_in × n) and
residuals R (d_out × n) while a regulariser protects previously stored knowledge:

- `solve_ridge` (MEMIT, MEMIT-seq, NSE on a neuron subset):
      ΔW = R Kᵀ (λ C + C_p + K Kᵀ)⁻¹
- `solve_projected` (AlphaEdit, with null-space projector P and ridge ρ):
      Δ̃ = (P (K Kᵀ + C_p) + ρ I)⁻¹ P K Rᵀ,   ΔW = Δ̃ᵀ

A non-finite input or result raises `NumericalError` naming method, layer and round.
"""

from __future__ import annotations

import torch


class NumericalError(RuntimeError):
    def __init__(self, method: str, layer: int, round_: int, what: str):
        super().__init__(f"{method}: layer {layer}, round {round_}: {what}")


def _check(x: torch.Tensor, where: tuple[str, int, int], what: str) -> None:
    if not torch.isfinite(x).all():
        raise NumericalError(*where, f"non-finite values in {what}")


def _solve(a: torch.Tensor, b: torch.Tensor, where) -> torch.Tensor:
    try:
        x = torch.linalg.solve(a, b)
    except RuntimeError as err:  # torch raises on exactly singular matrices
        raise NumericalError(*where, f"singular system ({err})") from err
    _check(x, where, "the solution")
    return x


def solve_ridge(
    keys: torch.Tensor,
    resid: torch.Tensor,
    cov: torch.Tensor | None,
    weight: float,
    prev: torch.Tensor | None = None,
    where: tuple[str, int, int] = ("?", -1, -1),
) -> torch.Tensor:
    """ΔW = R Kᵀ (weight·C + C_p + K Kᵀ)⁻¹ in float64. keys (d_in, n), resid (d_out, n)."""
    k = keys.double()
    r = resid.double()
    _check(k, where, "the keys")
    _check(r, where, "the residuals")
    a = k @ k.T  # (d_in, d_in)
    if cov is not None:
        a = a + weight * cov.double()
    if prev is not None:
        a = a + prev.double()
    _check(a, where, "the regularised Gram matrix")
    # A symmetric: ΔW = (A⁻¹ K Rᵀ)ᵀ
    return _solve(a, k @ r.T, where).T  # (d_out, d_in)


def solve_projected(
    keys: torch.Tensor,
    resid: torch.Tensor,
    projector: torch.Tensor,
    l2: float,
    prev: torch.Tensor | None = None,
    where: tuple[str, int, int] = ("?", -1, -1),
) -> torch.Tensor:
    """AlphaEdit: Δ̃ = (P (K Kᵀ + C_p) + l2·I)⁻¹ P K Rᵀ; returns ΔW = Δ̃ᵀ (d_out, d_in)."""
    k, r, p = keys.double(), resid.double(), projector.double()
    _check(k, where, "the keys")
    _check(r, where, "the residuals")
    gram = k @ k.T
    if prev is not None:
        gram = gram + prev.double()
    a = p @ gram + l2 * torch.eye(p.shape[0], dtype=torch.float64, device=p.device)
    return _solve(a, p @ k @ r.T, where).T
