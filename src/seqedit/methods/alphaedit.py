"""AlphaEdit (Fang et al., "AlphaEdit: Null-Space Constrained Knowledge Editing for Language
Models", ICLR 2025), run sequentially.

Same targets z, keys and residual spreading as MEMIT-seq (core/targets.py, core/keys.py,
core/spread.py); only the per-layer solve differs (editing_methods.md §2.2):

    Δ̃_l = (P_l (K Kᵀ + C_p,l) + l2·I)⁻¹ P_l K R_lᵀ,    ΔW_l = Δ̃_lᵀ          (core/solve.py)

- P_l = U₀U₀ᵀ projects onto the eigen-directions of C_l = E[k kᵀ] (the layer statistics)
  with small eigenvalues (core/projection.py; `threshold_mode` "absolute" = the reference's
  fixed cut `nullspace_threshold`, "relative" = the directions holding at most the fraction
  `nullspace_energy` of tr C). Built once at construction, from the statistics of the
  unedited model, and kept in the editor state.
- Since Δ̃ ∈ range(P), ΔW k₀ ≈ 0 for the preserved keys k₀: the update does not change
  W_out's output on them. λ·C does not enter the solve, so `mom2_update_weight` is unused
  (as in the reference, whose configs carry it anyway); the ridge is `l2`·I (the paper
  writes I; the code uses L2 = 10).
- C_p,l = Σ over earlier batches of K Kᵀ (keys recomputed on the model after that batch's
  edit), inside the projected Gram matrix. AlphaEdit always accumulates it (as MEMIT-seq does;
  plain MEMIT does not).
- Each round's info carries `null_space_dim` (layer -> rank of P, the kept directions) and
  `key_dim` (d_ff): rank 0 is refused when P is built, rank d_ff (P = I, nothing protected)
  is named in the report.

Differences from MEMIT: the projector replaces λ·C, and the solve is `solve_projected`.
The editor reuses MEMIT's statistics check, C_p accumulation and state handling by
subclassing `MEMITEditor`; the layer solve is the one seam subclasses (NMKE) override.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqedit.core.attribution import expand_columns, neuron_submatrix
from seqedit.core.projection import MODES, null_space_projector
from seqedit.core.solve import solve_projected
from seqedit.core.spread import SolveFn
from seqedit.core.targets import optimize_targets
from seqedit.methods.base import LocateEditConfig
from seqedit.methods.memit import MEMITEditor
from seqedit.registry import register_method


@dataclass
class AlphaEditConfig(LocateEditConfig):
    nullspace_threshold: float = 2e-2  # "absolute": keep eigen-directions of C with eigenvalue < this
    threshold_mode: str = "absolute"  # "absolute" (reference) | "relative" (energy fraction, below)
    nullspace_energy: float = 0.01  # "relative": kept directions hold ≤ this fraction of tr C = E‖k‖²
    l2: float = 10.0  # ridge added to P (K Kᵀ + C_p) (reference L2; the paper's I is l2 = 1)

    def __post_init__(self):
        super().__post_init__()
        if self.threshold_mode not in MODES:
            raise ValueError(f"threshold_mode must be one of {MODES}, got {self.threshold_mode!r}")
        if not 0.0 < self.nullspace_energy <= 1.0:
            raise ValueError(f"nullspace_energy must lie in (0, 1], got {self.nullspace_energy}")
        if self.nullspace_threshold <= 0:
            raise ValueError(f"nullspace_threshold must be > 0, got {self.nullspace_threshold}")
        if self.l2 <= 0:
            raise ValueError(f"l2 must be > 0 (the projected Gram matrix is singular otherwise), got {self.l2}")

    def effective(self) -> dict:
        """The settings as they act: λ (`mom2_update_weight`) is unused, and so is the cut of the
        threshold mode not chosen."""
        out = super().effective()
        out["mom2_update_weight"] = None
        out["nullspace_energy" if self.threshold_mode == "absolute" else "nullspace_threshold"] = None
        return out

    @property
    def projector_threshold(self) -> float:
        return self.nullspace_threshold if self.threshold_mode == "absolute" else self.nullspace_energy


class AlphaEditEditor(MEMITEditor):
    name = "alphaedit"
    sequential = True  # C_p: every earlier batch's keys, as MEMIT-seq

    def __init__(self, config: AlphaEditConfig, model, tokenizer, spec, stats, seed: int = 0):
        super().__init__(config, model, tokenizer, spec, stats, seed)  # checks stats, loads C, zero C_p
        self.projector = {  # layer -> P (d_ff, d_ff), float64 on CPU
            l: null_space_projector(self.cov[l], config.threshold_mode, config.projector_threshold)
            for l in config.layers
        }
        self.cov = None  # C is only needed to build P; free it
        self.null_space_dim = {l: int(round(float(torch.trace(p)))) for l, p in self.projector.items()}

    # --- the seam subclasses override -------------------------------------------------------
    def projected_solve(self, layer: int, keys: torch.Tensor, resid: torch.Tensor, round_: int,
                        neurons: torch.Tensor | None = None) -> torch.Tensor:
        """ΔW (d_out, d_ff) from `solve_projected`; with `neurons` (LongTensor), the problem
        restricted to those rows of K and rows/columns of P and C_p, zero elsewhere."""
        dev = keys.device
        p, prev = self.projector[layer], self.prev_keys[layer]
        if neurons is None:
            return solve_projected(
                keys, resid, p.to(dev), self.config.l2, prev.to(dev), where=(self.name, layer, round_)
            )  # (d_out, d_ff) float64
        d_sub = solve_projected(
            keys.index_select(0, neurons.to(dev)), resid, neuron_submatrix(p, neurons, dev), self.config.l2,
            neuron_submatrix(prev, neurons, dev), where=(self.name, layer, round_),
        )  # (d_out, |N|)
        return expand_columns(d_sub, neurons, keys.shape[0], torch.float64)  # (d_out, d_ff)

    def layer_solver(self, requests, templates, round_: int) -> tuple[SolveFn, dict]:
        """The per-layer solve for this batch and extra info to report (none for AlphaEdit)."""
        return (lambda layer, keys, resid: self.projected_solve(layer, keys, resid, round_)), {}

    # --- Editor seams ---------------------------------------------------------------------------
    def edit_batch(self, requests, round_: int) -> dict:
        cfg = self.config
        templates = self.context_templates()
        z, zlog = optimize_targets(
            self.model, self.tokenizer, self.spec, requests, templates, cfg.target_config(), mode=cfg.target_mode
        )  # (n, d_model)
        solve, extra = self.layer_solver(requests, templates, round_)
        deltas, rounding = self.apply_layers(requests, z, templates, solve)
        self.accumulate_keys(requests)  # C_p += K Kᵀ on the edited model
        return {"z_loss": zlog["loss"], "delta_norm": {l: float(d.norm()) for l, d in deltas.items()},
                "null_space_dim": dict(self.null_space_dim), "key_dim": self.spec.d_ff(self.model), **extra, **rounding}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "projector": self.projector}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.projector = state["projector"]
        self.null_space_dim = {l: int(round(float(torch.trace(p)))) for l, p in self.projector.items()}


register_method(
    "alphaedit", AlphaEditConfig, AlphaEditEditor, label="AlphaEdit", kind="method",
    description="AlphaEdit: MEMIT's update projected onto the null space of the preserved keys' second moment, previous edits' keys inside the solve.",
)
