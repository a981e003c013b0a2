"""KNE: knowledge editing with a knowledge neuronal ensemble (Li et al., 2024, arXiv 2412.20637,
"Knowledge Editing for Large Language Model with Knowledge Neuronal Ensemble").

THIS IS A RECONSTRUCTION. No public code exists and the full paper text was not available;
only the abstract is verified. The algorithm below is the design hypothesis of
`design/kne_nmke.md` §1.3, and every open choice is a config field (defaults = that
section's choices):

1. Token-level gradient attribution (`aggregate`, `signed`, `granularity`). For every target
   token t of target_new (teacher-forced, ℓ_t = −log p(y_t | x, y_<t)) and every weight w of
   the candidate matrices:
       A_t(w) = |w · ∂ℓ_t/∂w|         (signed: S_t(w) = −w · ∂ℓ_t/∂w)
   aggregated over the tokens of a request (sum / max / mean) and summed over the requests
   edited together. granularity "neurons" scores an FFN neuron by the sum over its entries
   in the candidate FFN matrices (rows of W_in/W_gate/W_up, column of W_out) and selects
   whole neurons.
2. Ensemble (`fraction`, `ranking`): per candidate matrix ("matrix"), per layer ("layer") or
   over all candidates ("global"), keep the top `fraction` of scores:
       M = 1[A ≥ Q_{1−p}(A)],   ensemble E = ∪_l {w : M(w) = 1}.
   Candidates: `modules` ("ffn_in", "ffn_out", "attn") of `layers`.
3. Masked joint editing (`dynamic_ensemble`, optimizer fields): minimise the teacher-forced
   NLL of target_new, L = (1/n) Σ_i (1/T_i) Σ_t ℓ_{i,t} (+ kl_factor · KL on `kl_prompts`),
   by full backprop through the network with gradients zeroed outside E (g ← g ⊙ M), all
   layers' ensemble members stepping together; stop once L < early_stop_loss. The ensemble
   is fixed once per edit (default) or re-selected before every step (dynamic). Entries
   outside the ensemble are reset to their start values after each step, so they are
   unchanged bit for bit whatever the optimizer does. Optional L∞ clamp to
   [W₀ − ε, W₀ + ε] (`norm_constraint`, W₀ = weights before this edit).
4. The "1/√n" scaling (`scaling`), n_l = ensemble entries in layer l:
   - "grad": layer l's masked gradient × 1/√n_l (reading (1) of §1.3). NB: Adam normalises
     each entry's step by its own gradient scale, so under Adam this acts only through ε;
     it is a real per-layer rescaling under `optimizer: sgd`;
   - "lr": layer l's learning rate × √(n_min / n_l), n_min = the smallest n_l: layers with
     large ensembles take smaller steps, the smallest ensemble keeps `lr`. Inert when every
     layer has the same ensemble size (per-matrix/per-layer ranking of equal-shaped layers);
   - "none".

`mini_batch` requests are edited together (one ensemble, one joint loss); the batch's
chunks are edited one after another. 0 = the whole batch at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from seqedit.core.gradients import (
    MODULE_KINDS,
    candidate_params,
    clamp_linf,
    expand_mask,
    masked_step,
    request_nll,
    target_tokens,
    token_attribution,
    token_logprobs,
    top_fraction_masks,
    trainable,
)
from seqedit.core.prompts import build_batch
from seqedit.methods.base import Editor
from seqedit.registry import register_method


@dataclass
class KNEConfig:
    layers: list[int] = field(default_factory=lambda: [1, 2])  # candidate layers
    modules: list[str] = field(default_factory=lambda: ["ffn_in", "ffn_out"])  # ffn_in | ffn_out | attn
    # attribution
    aggregate: str = "sum"  # over a request's target tokens: sum | max | mean
    signed: bool = False  # −w·∂ℓ/∂w instead of |w·∂ℓ/∂w|
    granularity: str = "weights"  # weights | neurons (FFN modules only)
    # ensemble
    fraction: float = 0.01  # p: share of each pool kept
    ranking: str = "matrix"  # pool for the top-p cut: matrix | layer | global
    dynamic_ensemble: bool = False  # re-select the ensemble before every step
    scaling: str = "grad"  # 1/√n_l: grad | lr | none
    # optimisation
    optimizer: str = "adam"  # adam | sgd
    lr: float = 5e-4
    num_steps: int = 25
    weight_decay: float = 0.0
    early_stop_loss: float = 1e-2
    norm_constraint: float | None = None  # ε of an optional L∞ clamp around W₀
    kl_factor: float = 0.0  # weight of KL(p_θ ‖ p_θ₀) on kl_prompts (next-token, every position)
    kl_prompts: list[str] = field(default_factory=lambda: ["The", "Therefore", "Because", "I", "You"])
    mini_batch: int = 0  # requests edited together; 0 = the whole batch

    def __post_init__(self):
        if not self.layers or sorted(set(self.layers)) != list(self.layers):
            raise ValueError(f"layers must be a non-empty ascending list without repeats, got {self.layers}")
        if not self.modules or set(self.modules) - set(MODULE_KINDS):
            raise ValueError(f"modules must be a non-empty subset of {list(MODULE_KINDS)}, got {self.modules}")
        choices = {
            "aggregate": ("sum", "max", "mean"), "granularity": ("weights", "neurons"),
            "ranking": ("matrix", "layer", "global"), "scaling": ("grad", "lr", "none"), "optimizer": ("adam", "sgd"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.granularity == "neurons" and "attn" in self.modules:
            raise ValueError("granularity 'neurons' is defined for FFN modules only (drop 'attn')")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.num_steps < 1 or self.mini_batch < 0:
            raise ValueError("num_steps must be >= 1 and mini_batch >= 0")
        if self.norm_constraint is not None and not self.norm_constraint > 0:
            raise ValueError(f"norm_constraint must be > 0 or null, got {self.norm_constraint}")
        if self.kl_factor < 0 or (self.kl_factor > 0 and not self.kl_prompts):
            raise ValueError("kl_factor must be >= 0, and kl_prompts non-empty when it is > 0")


class KNEEditor(Editor):
    name = "kne"

    def __init__(self, config: KNEConfig, model, tokenizer, spec, stats=None, seed: int = 0):
        super().__init__(config, model, tokenizer, spec, stats, seed)
        self.candidates = candidate_params(model, spec, config.layers, config.modules)
        self.by_name = {c.name: c for c in self.candidates}
        self.last_masks: dict[str, torch.Tensor] | None = None

    def param_names(self) -> list[str]:
        return [c.name for c in self.candidates]

    # --- pieces ------------------------------------------------------------------------------
    def ensemble(self, tt, params) -> dict[str, torch.Tensor]:
        """Boolean masks, shaped like each candidate weight, of the current ensemble."""
        cfg = self.config
        scores = token_attribution(self.model, tt, params, self.candidates, cfg.aggregate, cfg.signed, cfg.granularity)
        if cfg.granularity == "neurons":  # one score per (layer, neuron): sum over the layer's matrices
            per_layer: dict[int, torch.Tensor] = {}
            for c in self.candidates:
                per_layer[c.layer] = per_layer.get(c.layer, 0) + scores[c.name]  # (d_ff,)
            pool = {l: (0 if cfg.ranking == "global" else l) for l in per_layer}
            unit = top_fraction_masks({l: s for l, s in per_layer.items()}, pool, cfg.fraction)
            return {c.name: expand_mask(unit[c.layer], c, params[c.name].shape) for c in self.candidates}
        pool = {c.name: {"matrix": c.name, "layer": c.layer, "global": 0}[cfg.ranking] for c in self.candidates}
        return top_fraction_masks(scores, pool, cfg.fraction)

    def layer_sizes(self, masks) -> dict[int, int]:
        n: dict[int, int] = {}
        for c in self.candidates:
            n[c.layer] = n.get(c.layer, 0) + int(masks[c.name].sum())
        return n

    @torch.no_grad()
    def _kl_batch(self):
        device = next(self.model.parameters()).device
        batch = build_batch(self.tokenizer, list(self.config.kl_prompts)).to(device)
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
        return batch, torch.log_softmax(logits.float(), -1)  # log p_θ₀

    def _kl(self, batch, ref) -> torch.Tensor:
        logp = torch.log_softmax(
            self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float(), -1
        )  # (B, T, V)
        kl = (logp.exp() * (logp - ref)).sum(-1)  # KL(p_θ ‖ p_θ₀) per position, (B, T)
        mask = batch.attention_mask.to(kl.dtype)
        return (kl * mask).sum() / mask.sum()

    # --- one group of requests edited jointly ---------------------------------------------------
    def edit_group(self, requests) -> dict:
        cfg = self.config
        device = next(self.model.parameters()).device
        tt = target_tokens(self.tokenizer, requests, "target_new", device)
        kl_data = self._kl_batch() if cfg.kl_factor > 0 else None
        losses, sizes, n_updates = [], [], 0
        with trainable(self.model, self.param_names()) as params:
            w0 = {n: p.detach().clone() for n, p in params.items()}
            groups = self._param_groups(params)
            opt = (torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD)(
                groups, lr=cfg.lr, weight_decay=cfg.weight_decay
            )
            masks = union = None
            for _ in range(cfg.num_steps):
                if masks is None or cfg.dynamic_ensemble:
                    masks = self.ensemble(tt, params)
                    union = masks if union is None else {n: union[n] | masks[n] for n in masks}
                    n_l = self.layer_sizes(masks)
                    sizes.append(n_l)
                    self._set_lr(opt, n_l)
                opt.zero_grad()
                loss = request_nll(token_logprobs(self.model, tt), tt).mean()
                total = loss if kl_data is None else loss + cfg.kl_factor * self._kl(*kl_data)
                losses.append(float(loss.detach()))
                if losses[-1] < cfg.early_stop_loss:
                    break
                total.backward()
                scale = None
                if cfg.scaling == "grad":
                    scale = {c.name: 1.0 / math.sqrt(max(n_l[c.layer], 1)) for c in self.candidates}
                masked_step(opt, params, masks, w0, scale, keep=union)
                n_updates += 1
                if cfg.norm_constraint is not None:
                    clamp_linf(params, w0, cfg.norm_constraint)
        return {"loss": losses, "steps": n_updates, "ensemble": sizes[0], "masks": union}

    def _param_groups(self, params):
        """One optimizer group per layer, so `scaling: lr` can set each layer's rate."""
        layers = sorted({c.layer for c in self.candidates})
        return [{"params": [params[c.name] for c in self.candidates if c.layer == l], "layer": l} for l in layers]

    def _set_lr(self, opt, n_l: dict[int, int]) -> None:
        n_min = min(v for v in n_l.values() if v > 0) if any(n_l.values()) else 1
        for g in opt.param_groups:
            n = n_l.get(g["layer"], 0)
            g["lr"] = self.config.lr * (math.sqrt(n_min / n) if self.config.scaling == "lr" and n > 0 else 1.0)

    def edit_batch(self, requests, round_: int) -> dict:
        size = self.config.mini_batch or len(requests)
        params = dict(self.model.named_parameters())
        start = {n: params[n].detach().clone() for n in self.param_names()}
        infos, self.last_masks = [], None
        for s in range(0, len(requests), size):
            info = self.edit_group(requests[s : s + size])
            masks = info.pop("masks")
            infos.append(info)
            # every entry this batch may have changed: the union of its groups' (and steps') ensembles
            prev = self.last_masks
            self.last_masks = masks if prev is None else {n: prev[n] | m for n, m in masks.items()}
        by_layer: dict[int, float] = {}
        for n, w in start.items():
            l = self.by_name[n].layer
            by_layer[l] = by_layer.get(l, 0.0) + float((params[n].detach() - w).double().pow(2).sum())
        return {
            "loss": [i["loss"][-1] for i in infos], "steps": [i["steps"] for i in infos],
            "ensemble": [i["ensemble"] for i in infos],
            "delta_norm": {l: math.sqrt(v) for l, v in by_layer.items()},
        }


register_method(
    "kne", KNEConfig, KNEEditor, label="KNE (recon.)", kind="method",
    description="KNE (a reconstruction: no public code exists): per-token gradient×weight attribution, a per-layer top-p ensemble of weight entries, updated by masked joint backpropagation.",
)
