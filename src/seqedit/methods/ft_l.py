"""FT-L: norm-constrained fine-tuning of chosen weights (Zhu et al., 2020; the ROME/MEMIT
baseline `baselines/ft/ft_main.py`, design notes §2.5).

Per batch, with W₀ the weights *before this batch* (as the reference, whose `execute_ft` copies
them at every call; not the weights before the run):

    min_W  −(1/n) Σ_i (1/|o_i|) Σ_t log p_W(o_{i,t} | ·)        (Adam, lr, weight decay)
    after every step:  W ← clamp(W, W₀ − ε, W₀ + ε)              (L∞, ε = norm_constraint)

for at most `num_steps` epochs over mini-batches of `batch_size` requests. A step is skipped
when its mini-batch loss is below `early_stop_loss`; training stops when the epoch-average
loss is. The conditioning "·" is the `objective`:
- "prompt_last" (reference): every target token o_t is predicted from the *last prompt
  position*, i.e. all tokens of a multi-token target from the same logits (a known quirk);
- "target_new" (EasyEdit's teacher-forced variant): o_t is predicted from query + o_<t.

Trainable parameters: the `modules` (default W_out, "ffn_out") of `layers`. The reference
trains every parameter whose name contains the module path, so the bias too where the
module has one (GPT-2 c_proj, GPT-J fc_out): `include_bias` reproduces that.
`wd_power_law = [a, b]` sets weight decay to n_edits^a · e^b (the reference's GPT-J `_wd`
runs), n_edits = requests in the batch.

Differences from the reference: targets are tokenised with their leading space as in the
evaluation (" " + target_new; the reference prepends the space too); the loss is exact per
request (no pad-token masking by `unk_token_id`); the clamp covers the biases when they train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from seqedit.core.gradients import (
    MODULE_KINDS,
    candidate_params,
    clamp_linf,
    request_nll,
    target_tokens,
    token_logprobs,
    trainable,
)
from seqedit.methods.base import Editor
from seqedit.registry import register_method


@dataclass
class FTLConfig:
    layers: list[int] = field(default_factory=lambda: [0])
    modules: list[str] = field(default_factory=lambda: ["ffn_out"])  # ffn_in | ffn_out | attn
    include_bias: bool = False  # also train the modules' biases (the reference's name match does)
    objective: str = "prompt_last"  # "prompt_last" (reference quirk) | "target_new" (teacher-forced)
    lr: float = 5e-4
    num_steps: int = 25  # epochs over the batch's requests
    batch_size: int = 64  # requests per optimizer step
    weight_decay: float = 0.0
    wd_power_law: list[float] | None = None  # [a, b]: weight_decay = n_edits^a · e^b
    norm_constraint: float | None = None  # ε of the L∞ clamp to [W₀ − ε, W₀ + ε]; null = unconstrained FT
    early_stop_loss: float = 1e-2

    def __post_init__(self):
        if not self.layers or sorted(set(self.layers)) != list(self.layers):
            raise ValueError(f"layers must be a non-empty ascending list without repeats, got {self.layers}")
        if not self.modules or set(self.modules) - set(MODULE_KINDS):
            raise ValueError(f"modules must be a non-empty subset of {list(MODULE_KINDS)}, got {self.modules}")
        if self.objective not in ("prompt_last", "target_new"):
            raise ValueError(f"objective must be 'prompt_last' or 'target_new', got {self.objective!r}")
        if self.num_steps < 1 or self.batch_size < 1:
            raise ValueError("num_steps and batch_size must be >= 1")
        if self.norm_constraint is not None and not self.norm_constraint > 0:
            raise ValueError(f"norm_constraint must be > 0 or null, got {self.norm_constraint}")
        if self.wd_power_law is not None and len(self.wd_power_law) != 2:
            raise ValueError(f"wd_power_law must be [a, b], got {self.wd_power_law}")


class FTLEditor(Editor):
    name = "ft_l"

    def __init__(self, config: FTLConfig, model, tokenizer, spec, stats=None, seed: int = 0):
        super().__init__(config, model, tokenizer, spec, stats, seed)
        self.candidates = candidate_params(model, spec, config.layers, config.modules, config.include_bias)

    def param_names(self) -> list[str]:
        return [c.name for c in self.candidates]

    def edit_batch(self, requests, round_: int) -> dict:
        cfg = self.config
        device = next(self.model.parameters()).device
        wd = cfg.weight_decay
        if cfg.wd_power_law is not None:
            a, b = cfg.wd_power_law
            wd = len(requests) ** a * math.exp(b)
        chunks = [requests[s : s + cfg.batch_size] for s in range(0, len(requests), cfg.batch_size)]
        batches = [target_tokens(self.tokenizer, c, cfg.objective, device) for c in chunks]
        losses, epochs = [], 0
        with trainable(self.model, self.param_names()) as params:
            w0 = {n: p.detach().clone() for n, p in params.items()}  # W₀ of this batch
            opt = torch.optim.Adam(list(params.values()), lr=cfg.lr, weight_decay=wd)
            for _ in range(cfg.num_steps):
                epochs += 1
                total = 0.0
                for chunk, tt in zip(chunks, batches):
                    opt.zero_grad()
                    loss = request_nll(token_logprobs(self.model, tt), tt).mean()
                    value = float(loss.detach())
                    total += value * len(chunk)
                    if value >= cfg.early_stop_loss:
                        loss.backward()
                        opt.step()
                    if cfg.norm_constraint is not None:
                        clamp_linf(params, w0, cfg.norm_constraint)
                losses.append(total / len(requests))
                if losses[-1] < cfg.early_stop_loss:
                    break
            change = {n: (p.detach() - w0[n]) for n, p in params.items()}
        by_layer: dict[int, float] = {}
        for c in self.candidates:
            by_layer[c.layer] = by_layer.get(c.layer, 0.0) + float(change[c.name].double().pow(2).sum())
        return {
            "loss": losses, "epochs": epochs, "weight_decay": wd,
            "delta_norm": {l: math.sqrt(v) for l, v in by_layer.items()},
            "max_abs_change": max(float(d.abs().max()) for d in change.values()),
        }


register_method(
    "ft_l", FTLConfig, FTLEditor, label="FT-L", kind="baseline",
    description=("FT-L: fine-tunes one FFN output matrix on the new fact; with norm_constraint set, each entry "
                 "stays within that L∞ distance of its value before the batch."),
)
