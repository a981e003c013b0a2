"""MEMIT (Meng et al., 2023) applied batch after batch: `memit` (plain) and `memit_seq`.

Per batch: target vectors z at the last edited layer (core/targets.py), then for each edited
layer the ridge solve (core/solve.py)

    ΔW_l = R_l Kᵀ (λ C_l + C_p,l + K Kᵀ)⁻¹

spread over layers (core/spread.py). C_l = E[k kᵀ] from the layer statistics, λ =
`mom2_update_weight`. Weights are never restored between batches. The two methods differ in
C_p,l only:

- `memit`: C_p = 0. The original batch MEMIT applied to each batch in turn, with no memory
  of earlier edits: the papers' "MEMIT" row (the reference's MEMIT entry) in the sequential
  tables of NSE and AlphaEdit.
- `memit_seq`: C_p,l accumulates K Kᵀ of every earlier batch, with keys recomputed on the
  model *after* that batch's edit (MEMIT-seq; the solve keeps earlier edits' keys mapped).

Both share `MEMITConfig`; `memit_seq` is `memit` with `sequential = True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqedit.core.keys import collect_keys
from seqedit.core.solve import solve_ridge
from seqedit.core.targets import optimize_targets
from seqedit.methods.base import Editor, LocateEditConfig
from seqedit.registry import register_method


@dataclass
class MEMITConfig(LocateEditConfig):
    pass


class MEMITEditor(Editor):
    """Plain MEMIT. Subclasses that keep earlier edits' keys set `sequential = True`."""

    name = "memit"
    sequential = False  # accumulate previous-edit keys C_p into the solve

    def __init__(self, config: MEMITConfig, model, tokenizer, spec, stats, seed: int = 0):
        super().__init__(config, model, tokenizer, spec, stats, seed)
        self.require_stats(config.layers)
        self.cov = {l: self.stats.cov(l) for l in config.layers}
        for l, c in self.cov.items():
            self.check_d_ff(c, l)
        d_ff = spec.d_ff(model)
        # C_p (d_ff, d_ff) float64 per layer; None when nothing accumulates (plain MEMIT)
        self.prev_keys = {
            l: torch.zeros(d_ff, d_ff, dtype=torch.float64) if self.sequential else None for l in config.layers
        }

    def edit_batch(self, requests, round_: int) -> dict:
        cfg = self.config
        templates = self.context_templates()
        z, zlog = optimize_targets(
            self.model, self.tokenizer, self.spec, requests, templates, cfg.target_config(), mode=cfg.target_mode
        )

        def solve(layer, keys, resid):
            return solve_ridge(
                keys, resid, self.cov[layer], cfg.mom2_update_weight, self.prev_keys[layer],
                where=(self.name, layer, round_),
            )  # float64

        deltas, extra = self.apply_layers(requests, z, templates, solve)
        if self.sequential:
            self.accumulate_keys(requests)
        return {"z_loss": zlog["loss"], "delta_norm": {l: float(d.norm()) for l, d in deltas.items()}, **extra}

    def accumulate_keys(self, requests) -> None:
        """C_p += K Kᵀ with keys recomputed on the edited model (all layers, one pass)."""
        keys = collect_keys(self.model, self.tokenizer, self.spec, self.config.layers, requests, self.context_templates())
        for l, k in keys.items():
            k = k.double().cpu()
            self.prev_keys[l] += k @ k.T

    def state_dict(self) -> dict:
        return {**super().state_dict(), "prev_keys": self.prev_keys}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prev_keys = state["prev_keys"]


class MEMITSeqEditor(MEMITEditor):
    """MEMIT-seq: every earlier batch's keys enter the solve as C_p."""

    name = "memit_seq"
    sequential = True


register_method(
    "memit", MEMITConfig, MEMITEditor, label="MEMIT", kind="baseline",
    description="MEMIT: target vectors at the last edited layer spread over several layers by closed-form ridge "
                "solves, applied batch after batch with no memory of earlier edits (the papers' MEMIT row).",
)
register_method(
    "memit_seq", MEMITConfig, MEMITSeqEditor, label="MEMIT-seq", kind="baseline",
    description="MEMIT-seq: MEMIT with every earlier batch's keys (recomputed after its edit) kept in the solve.",
)
