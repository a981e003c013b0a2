"""Multi-layer residual spreading (MEMIT §1.5), shared by MEMIT, AlphaEdit, NSE and NMKE.

For the i-th of the edited layers (ascending), on the model as edited so far:
  1. keys K_l of the requests at layer l;
  2. the current block-L output H at the subject (plain prompt), L = the last edited layer;
  3. residual R = Z − H, of which layer l takes R / (n_layers − i);
  4. ΔW_l from the method's solve, applied before moving on to the next layer.
Methods differ only in the `solve` callback (and in which requests and neurons they pass).
"""

from __future__ import annotations

from typing import Callable

import torch

from seqedit.core.keys import collect_keys, hidden_at_subject
from seqedit.data.records import EditRequest
from seqedit.models.arch import ModelSpec

# solve(layer, keys (d_ff, n), resid (d_model, n)) -> ΔW (d_model, d_ff)
SolveFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def spread_residual(z: torch.Tensor, h: torch.Tensor, i: int, n_layers: int) -> torch.Tensor:
    """Share of the remaining residual for the i-th layer: (z − h) / (n_layers − i)."""
    return (z - h) / (n_layers - i)


def edit_layers(
    model,
    tokenizer,
    spec: ModelSpec,
    requests: list[EditRequest],
    z: torch.Tensor,
    layers: list[int],
    templates: list[list[str]],
    solve: SolveFn,
) -> dict[int, torch.Tensor]:
    """Apply the layer-by-layer update in place; return layer -> ΔW (d_out, d_in) applied."""
    z_layer = layers[-1]
    targets = z.T  # (d_model, n)
    deltas = {}
    for i, layer in enumerate(layers):
        keys = collect_keys(model, tokenizer, spec, [layer], requests, templates)[layer]  # (d_ff, n)
        h = hidden_at_subject(model, tokenizer, spec, z_layer, requests)  # (d_model, n)
        resid = spread_residual(targets, h, i, len(layers))
        delta = solve(layer, keys, resid)  # (d_model, d_ff)
        spec.add_to_out_weight(model, layer, delta)
        deltas[layer] = delta
    return deltas
