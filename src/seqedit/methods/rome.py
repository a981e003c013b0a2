"""ROME: rank-one model editing (Meng et al., 2022, "Locating and Editing Factual Associations
in GPT"; `kmeng01/rome: rome/rome_main.py, compute_u.py, compute_v.py`, design notes §2.4).

One layer l (`layers = [l]`), edited once per request, the requests of a batch one after
another on the model as edited so far (the original `apply_rome_to_model`). The NSE/AlphaEdit
port edits only `requests[0]` of each batch (design notes §9); this one edits every request.

For each request:
- key k* = mean over all context templates of the W_out input at the subject-last token
  (a flat mean over "{}" and every generated prefix, as `compute_u`);
- left vector u = C⁻¹ k* with C = E[k kᵀ] of layer l (`mom2_adjustment`), else u = k*;
  then u ← u / ‖u‖. C⁻¹k* is a float64 linear solve, not `torch.inverse` in float32;
- value v* = h_init + δ: δ added to the FFN output of layer l at the subject-last token,
  optimised as in compute_v (core/targets.py with module="mlp");
- with k_in, v_out the W_out input and output for the plain prompt:
      v = (v* − v_out) / (k_inᵀ u),   W ← W + v uᵀ      (W as [d_out, d_in])
  so that W' k_in (+ bias) = v* exactly.

Context templates: "{}" plus, for each [length, count] in `context_template_length_params`
(reference [[5, 10], [10, 10]]: 21 templates), `count` prefixes of `length` tokens sampled
from the model at the first batch (θ₀), seeded. The reference samples them from
"<|endoftext|>" without a seed; here they come from `core.templates.generate_context_templates`
(seed words "The", "Therefore", ..., as in the NSE/AlphaEdit port), one call per group with
its own seed. The same templates serve the key and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seqedit.core.hooks import capture
from seqedit.core.keys import collect_keys
from seqedit.core.prompts import build_batch
from seqedit.core.solve import NumericalError
from seqedit.core.targets import MODES as TARGET_MODES
from seqedit.core.targets import TargetConfig, optimize_targets
from seqedit.core.templates import flatten, generate_context_templates
from seqedit.methods.base import Editor
from seqedit.registry import register_method


@dataclass
class ROMEConfig:
    layers: list[int] = field(default_factory=lambda: [5])  # exactly one layer
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    v_loss_layer: int = -1  # informational: the loss is read from the final logits
    mom2_adjustment: bool = True  # u = C⁻¹ k* (needs layer statistics) instead of u = k*
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])
    target_mode: str = "fast"  # "fast" | "reference" (alias "batched") | "per_request" (core/targets.py)

    def __post_init__(self):
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode must be one of {list(TARGET_MODES)}, got {self.target_mode!r}")
        if len(self.layers) != 1:
            raise ValueError(f"ROME edits exactly one layer, got layers={self.layers}")
        if self.v_num_grad_steps < 1:
            raise ValueError("v_num_grad_steps must be >= 1")
        for pair in self.context_template_length_params:
            if len(pair) != 2 or int(pair[0]) < 1 or int(pair[1]) < 0:
                raise ValueError(
                    "context_template_length_params must be [[length, count], ...], "
                    f"got {self.context_template_length_params}"
                )

    def target_config(self) -> TargetConfig:
        return TargetConfig(
            layer=self.layers[0], n_steps=self.v_num_grad_steps, lr=self.v_lr, weight_decay=self.v_weight_decay,
            clamp_norm_factor=self.clamp_norm_factor, kl_factor=self.kl_factor, module="mlp",
        )


class ROMEEditor(Editor):
    name = "rome"

    def __init__(self, config: ROMEConfig, model, tokenizer, spec, stats, seed: int = 0):
        super().__init__(config, model, tokenizer, spec, stats, seed)
        self.layer = config.layers[0]
        self.cov = None
        self._lu = None  # LU factors of C, computed once on the model's device and reused per request
        if config.mom2_adjustment:
            self.require_stats(config.layers)
            self.cov = self.stats.cov(self.layer)  # (d_ff, d_ff) float64
            self.check_d_ff(self.cov, self.layer)
        self.last_updates: list[dict] = []  # tensors of the last batch's updates, for inspection

    def context_templates(self) -> list[list[str]]:
        """[["{}"], <count prefixes of length>, ...], generated once from θ₀ (editor state)."""
        if getattr(self, "_templates", None) is None:
            groups = [["{}"]]
            for i, (length, count) in enumerate(self.config.context_template_length_params):
                if count:
                    groups.append(generate_context_templates(
                        self.model, self.tokenizer, int(count), int(length), seed=self.seed + 1000 * i
                    )[1])
            self._templates = groups
        return self._templates

    def left_vector(self, k_star: torch.Tensor, round_: int) -> torch.Tensor:
        """u = C⁻¹ k* (float64 LU solve, C factorised once) or k*, normalised: (d_ff,)."""
        u = k_star.double()
        if self.cov is not None:
            try:
                if self._lu is None:
                    self._lu = torch.linalg.lu_factor(self.cov.to(u.device))
                u = torch.linalg.lu_solve(*self._lu, u[:, None])[:, 0]  # (d_ff,)
            except RuntimeError as err:
                raise NumericalError(self.name, self.layer, round_, f"singular second moment ({err})") from err
        if not torch.isfinite(u).all() or u.norm() == 0:
            raise NumericalError(self.name, self.layer, round_, "non-finite or zero left vector u")
        return (u / u.norm()).to(k_star)

    @torch.no_grad()
    def plain_io(self, request) -> tuple[torch.Tensor, torch.Tensor]:
        """W_out input k_in (d_ff,) and output v_out (d_model,) at the plain prompt's subject-last token."""
        device = next(self.model.parameters()).device
        batch = build_batch(self.tokenizer, [request.prompt], [request.subject]).to(device)
        name = self.spec.out_proj_name(self.layer)
        with capture(self.model, [name], what="input") as k, capture(self.model, [name], what="output") as v:
            self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        pos = batch.subject_idx[0]
        return k[name][0, pos], v[name][0, pos]

    def edit_batch(self, requests, round_: int) -> dict:
        cfg, l = self.config, self.layer
        templates = self.context_templates()
        flat = [flatten(templates)]  # one group: k* is the flat mean over all templates
        w_start = self.spec.out_weight(self.model, l).detach().clone()
        records, self.last_updates = [], []
        for r in requests:  # every request, in order, each on the model as edited so far
            z, zlog = optimize_targets(self.model, self.tokenizer, self.spec, [r], templates, cfg.target_config(),
                                       mode=cfg.target_mode)
            v_star = z[0]  # (d_model,)
            k_star = collect_keys(self.model, self.tokenizer, self.spec, [l], [r], flat)[l][:, 0]  # (d_ff,)
            u = self.left_vector(k_star, round_).float()  # (d_ff,)
            k_in, v_out = (x.float() for x in self.plain_io(r))  # (d_ff,), (d_model,); float32 for half models
            denom = torch.dot(k_in, u)
            if not torch.isfinite(denom) or denom.abs() < 1e-12:
                raise NumericalError(self.name, l, round_, f"k_in · u = {float(denom)} for case {r.case_id}")
            v = (v_star - v_out) / denom  # (d_model,)
            self.spec.add_to_out_weight(self.model, l, torch.outer(v, u))  # (d_model, d_ff)
            _, v_after = self.plain_io(r)
            records.append({
                "case_id": r.case_id, "z_loss": zlog["loss"][0], "z_steps": zlog["steps"][0],
                "update_norm": float(v.norm() * u.norm()),
                "fit_error": float((v_after - v_star).norm() / v_star.norm()),  # ‖W'k_in − v*‖ / ‖v*‖
            })
            self.last_updates.append({"case_id": r.case_id, "u": u, "v": v, "k_in": k_in, "v_star": v_star})
        total = self.spec.out_weight(self.model, l).detach() - w_start
        return {"updates": records, "delta_norm": {l: float(total.norm())}, "z_loss": [x["z_loss"] for x in records]}


register_method(
    "rome", ROMEConfig, ROMEEditor, label="ROME", kind="baseline",
    description="ROME: rank-one update of one FFN output matrix per request, applied to every request of a batch in turn.",
)
