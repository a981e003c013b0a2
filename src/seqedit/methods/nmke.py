"""NMKE: Neuron-Specific Masked Knowledge Editing (Liu et al., "Edit Less, Achieve More",
NeurIPS 2025), on top of AlphaEdit (kne_nmke.md §2).

Everything is AlphaEdit (targets, keys, spreading, null-space projector P, C_p accumulation
over ALL keys, unmasked) except one step: each layer's update is confined to a neuron mask
m^l computed once per batch from one forward pass on the pre-update model:

1. Attribution (core/attribution.py `neuron_logprob_gain`). Prompts: every context
   template applied to every request's filled-in prompt (J = n_requests × n_templates),
   read at the last token. For neuron i of layer l and prompt j,
       S_ji = log f(h_j + λ_amp · a_ji · W_out[:, i])[y*_j] − log f(h_j)[y*_j],
   h_j the residual entering the FFN's add, a_ji the neuron's activation, f the final norm
   (scale frozen at the prompt's own final state) followed by the unembedding, λ_amp =
   `amplification` (30). y*_j is the model's own top-1 next token (`attribution_token:
   argmax`, as released; the neurons that currently drive the old answer), or the first
   token of the old (`target_true`) or new (`target_new`) answer. Computed in chunks of at
   most `attribution_chunk_elements` logits.
2. Entropy-guided union mask (core/attribution.py `entropy_guided_mask`): knowledge-general
   neurons (above their prompt's mean in many prompts) kept in ratio
   ρ_ge = general_bias + general_scale · H_ge^general_exponent, knowledge-specific neurons
   (high peak score) in ratio ρ_sp = specific_bias + specific_scale · H_sp^specific_exponent,
   H the normalised entropies (H_ge of softmax(entropy_temperature · S_j)); the mask is the
   union of the two sets.
3. Masked update. Default (`restricted_solve: false`, the released code): solve AlphaEdit's
   problem, then zero the rows of non-selected neurons, ΔW[:, ¬m] = 0. This breaks the
   exact P-projection, so ΔW k₀ ≈ 0 no longer holds exactly. With `restricted_solve: true`
   the AlphaEdit problem is instead solved over the selected neurons only:
       Δ̃_N = (P_NN (K_N K_Nᵀ + C_p,NN) + l2·I)⁻¹ P_NN K_N Rᵀ,   ΔW[:, N] = Δ̃_Nᵀ,  ΔW[:, ¬N] = 0
   (like NSE's restricted solve, with the projector restricted to P_NN).

Generalised from the NMKE code: the attribution runs on whatever `layers` are edited (the
code hard-codes Llama layers 4–8), for any architecture (the residual without the FFN is
block output − FFN output; the final norm may be LayerNorm, whose bias is kept, or RMSNorm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqedit.core.attribution import entropy_guided_mask, neuron_logprob_gain, trace_neurons
from seqedit.core.prompts import encode_target, fill_subject
from seqedit.core.spread import SolveFn
from seqedit.core.templates import fill_context, flatten
from seqedit.methods.alphaedit import AlphaEditConfig, AlphaEditEditor
from seqedit.registry import register_method

ATTRIBUTION_TOKENS = ("argmax", "target_true", "target_new")


@dataclass
class NMKEConfig(AlphaEditConfig):
    amplification: float = 30.0  # λ_amp: sub-value amplification in the attribution
    entropy_temperature: float = 30.0  # α: scores are multiplied by this before the softmax of H_ge
    general_scale: float = 0.1  # a_ge
    general_bias: float = 0.3  # b_ge: ρ_ge ∈ [b_ge, b_ge + a_ge]
    general_exponent: float = 3.0  # γ_ge
    specific_scale: float = 0.1  # a_sp
    specific_bias: float = 0.3  # b_sp (also the ratio when no neuron has a positive peak score)
    specific_exponent: float = 2.0  # γ_sp
    attribution_token: str = "argmax"  # y*: "argmax" (released) | "target_true" | "target_new"
    attribution_chunk_elements: int = 16777216  # at most this many logits held at once
    restricted_solve: bool = False  # false: mask the AlphaEdit solution; true: solve over the mask

    def __post_init__(self):
        super().__post_init__()
        if self.attribution_token not in ATTRIBUTION_TOKENS:
            raise ValueError(f"attribution_token must be one of {ATTRIBUTION_TOKENS}, got {self.attribution_token!r}")
        if self.attribution_chunk_elements < 1:
            raise ValueError("attribution_chunk_elements must be >= 1")


class NMKEEditor(AlphaEditEditor):
    name = "nmke"

    def attribution_prompts(self, requests, templates) -> tuple[list[str], list[int]]:
        """Every context template × every request's filled prompt; and the owning request."""
        texts, owner = [], []
        for i, r in enumerate(requests):
            for ctx in flatten(templates):
                texts.append(fill_subject(fill_context(ctx, r.prompt), r.subject)[0])
                owner.append(i)
        return texts, owner

    def neuron_masks(self, requests, templates) -> tuple[dict[int, torch.Tensor], dict]:
        """layer -> boolean mask (d_ff,), from one forward pass on the current model."""
        cfg = self.config
        texts, owner = self.attribution_prompts(requests, templates)
        trace = trace_neurons(self.model, self.tokenizer, self.spec, cfg.layers, texts)
        if cfg.attribution_token == "argmax":
            y = trace.logits.argmax(-1)  # (J,)
        else:
            first = []
            for r in requests:
                text = r.new_text if cfg.attribution_token == "target_new" else r.true_text
                if text is None:
                    raise ValueError(f"nmke: attribution_token {cfg.attribution_token!r} needs target_true, "
                                     f"case {r.case_id} has none")
                first.append(encode_target(self.tokenizer, text)[0])
            y = torch.tensor([first[i] for i in owner])  # (J,)
        masks, info = {}, {}
        for l in cfg.layers:
            scores = neuron_logprob_gain(
                self.model, self.spec, trace, l, y, cfg.amplification, cfg.attribution_chunk_elements
            )  # (J, d_ff)
            masks[l], info[l] = entropy_guided_mask(
                scores, cfg.entropy_temperature, cfg.general_scale, cfg.general_bias, cfg.general_exponent,
                cfg.specific_scale, cfg.specific_bias, cfg.specific_exponent,
            )
        return masks, info

    def layer_solver(self, requests, templates, round_: int) -> tuple[SolveFn, dict]:
        masks, info = self.neuron_masks(requests, templates)
        self.last_masks = {l: m.cpu() for l, m in masks.items()}

        def solve(layer, keys, resid):
            m = masks[layer].to(keys.device)  # (d_ff,)
            if self.config.restricted_solve:
                return self.projected_solve(layer, keys, resid, round_, neurons=m.nonzero().squeeze(1))
            return self.projected_solve(layer, keys, resid, round_) * m  # ΔW[:, ¬m] = 0

        return solve, {"mask": info}  # layer -> ratios, entropies and set sizes


register_method(
    "nmke", NMKEConfig, NMKEEditor, label="NMKE", kind="method",
    description="NMKE: neuron log-probability-gain attribution, knowledge-general and knowledge-specific sets sized by entropy, their union masking AlphaEdit's update.",
)
