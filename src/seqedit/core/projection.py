"""Null-space projectors of the preserved-key second moment (AlphaEdit, Fang et al., ICLR 2025).

AlphaEdit protects the knowledge stored in W_out by restricting every update to key
directions that the preserved keys k₀ (the layer-statistics corpus) hardly use. With
C = E[k₀ k₀ᵀ] = U diag(σ) Uᵀ (eigendecomposition, σ ascending), the projector is

    P = U₀ U₀ᵀ,    U₀ = the eigenvectors whose eigenvalues are "small",

so that ΔW = Δ̃ᵀ with Δ̃ ∈ range(P) satisfies ΔW k₀ ≈ 0 for the preserved keys.

Two rules decide what "small" means (`mode`):

- ``"absolute"`` (the reference, `threshold` = `nullspace_threshold`): keep every direction
  with σ_i < threshold. The reference applies it to the SVD of the token-averaged C; C is
  symmetric PSD, so the SVD and `eigh` give the same subspace. The rule is scale-dependent
  (a model with larger activations keeps fewer directions, AlphaEdit issue #38).
- ``"relative"`` (`threshold` = `nullspace_energy` = e ∈ [0, 1]): keep the m smallest-eigenvalue
  directions, m the largest count with σ_1 + … + σ_m ≤ e · (σ_1 + … + σ_d). The spectral energy
  Σσ = tr C = E‖k₀‖², so the kept subspace carries at most the fraction e of the preserved
  keys' mean squared norm: E‖P k₀‖² / E‖k₀‖² = tr(P C) / tr(C) ≤ e, and adding the next
  direction would exceed e. e = 1 keeps everything (P = I); an e below the smallest
  eigenvalue's share keeps nothing (an error, see below).

Both run in float64 with `torch.linalg.eigh`. A projector of rank 0 (no direction kept)
would make every update zero, so it raises; a full-rank one (P = I, nothing protected)
only warns.
"""

from __future__ import annotations

import warnings

import torch

MODES = ("absolute", "relative")


def null_space_directions(cov: torch.Tensor, mode: str = "absolute", threshold: float = 2e-2) -> torch.Tensor:
    """Orthonormal basis U₀ (d, m) of the kept ("null") eigen-directions of `cov` (d, d)."""
    if mode not in MODES:
        raise ValueError(f"threshold mode must be one of {MODES}, got {mode!r}")
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square matrix, got shape {tuple(cov.shape)}")
    c = cov.double()
    c = (c + c.T) / 2  # symmetrise against accumulation round-off
    evals, evecs = torch.linalg.eigh(c)  # ascending eigenvalues (d,), eigenvectors (d, d)
    if mode == "absolute":
        keep = evals < threshold  # (d,)
    else:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"nullspace energy fraction must lie in [0, 1], got {threshold}")
        energy = evals.clamp(min=0)  # (d,) PSD up to round-off
        total = energy.sum()
        if threshold >= 1.0:
            keep = torch.ones_like(evals, dtype=torch.bool)
        else:
            keep = torch.cumsum(energy, 0) <= threshold * total  # (d,) a prefix, σ ascending
    return evecs[:, keep]  # (d, m)


def null_space_projector(cov: torch.Tensor, mode: str = "absolute", threshold: float = 2e-2) -> torch.Tensor:
    """P = U₀ U₀ᵀ (d, d), float64, for the rule `mode` (see the module docstring).

    `threshold` is the eigenvalue cut for ``"absolute"`` and the energy fraction for
    ``"relative"``.
    """
    u0 = null_space_directions(cov, mode, threshold)  # (d, m)
    d, m = u0.shape
    if m == 0:
        raise ValueError(
            f"null-space projector is empty ({mode} threshold {threshold}): every eigenvalue of the "
            "preserved-key covariance is above the cut, so AlphaEdit could not change anything. "
            "Raise the threshold or use threshold_mode 'relative'."
        )
    if m == d:
        warnings.warn(
            f"null-space projector is the identity ({mode} threshold {threshold} keeps all {d} directions): "
            "the update is not protected against changing preserved keys",
            stacklevel=2,
        )
    return u0 @ u0.T  # (d, d)
