"""Target vectors z: the block-L output at the subject that makes the model say target_new.

MEMIT §1.3 (compute_z). For each request a free vector δ is added to block L's output at
the subject-last token of every rewriting prompt (one per context template: the context,
then the prompt, then all target tokens but the last, teacher-forced) and of one KL prompt
"{subject} is a". δ minimises

    NLL(target_new) + kl_factor · KL(p_δ ‖ p_0 at the KL prompt) + wd · ‖δ‖ / ‖h_init‖²

with Adam; after each step ‖δ‖ is clamped to clamp_norm_factor · ‖h_init‖. A request stops
once its loss is below `early_stop_loss`; at most `n_steps − 1` steps are taken (the last
iteration only evaluates), as in the reference. z = h_init + δ.

Batched mode optimises all requests of a batch together in one padded forward/backward per
step. The loss is the *sum* of per-request losses, so each δ_i sees exactly its own gradient;
Adam is element-wise and all rows step together, so this equals per-request optimisation
(`mode="per_request"`, kept as the reference) up to float rounding. The loss is read from the
model's final logits (the reference's v_loss_layer is the last layer for every model).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from seqedit.core.hooks import edit_output
from seqedit.core.prompts import build_batch
from seqedit.core.templates import fill_context, flatten
from seqedit.data.records import EditRequest
from seqedit.models.arch import ModelSpec


@dataclass
class TargetConfig:
    layer: int  # L: the block whose output is optimised (last edited layer)
    n_steps: int = 25
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    early_stop_loss: float = 0.05
    module: str = "block"  # "block": residual output (MEMIT family); "mlp": FFN output (ROME)


@contextmanager
def frozen(model):
    """Switch off parameter gradients for the block, restoring the previous flags after."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def _module_name(spec: ModelSpec, cfg: TargetConfig) -> str:
    return spec.block_name(cfg.layer) if cfg.module == "block" else spec.mlp_name(cfg.layer)


def optimize_targets(
    model,
    tokenizer,
    spec: ModelSpec,
    requests: list[EditRequest],
    templates: list[list[str]],
    cfg: TargetConfig,
    mode: str = "batched",
) -> tuple[torch.Tensor, dict]:
    """Return z (n_requests, d_model) and a log {"loss": [...], "steps": [...]} per request."""
    if mode == "per_request":
        zs, logs = [], {"loss": [], "steps": []}
        for r in requests:
            z, log = optimize_targets(model, tokenizer, spec, [r], templates, cfg, mode="batched")
            zs.append(z)
            logs["loss"] += log["loss"]
            logs["steps"] += log["steps"]
        return torch.cat(zs), logs
    if mode != "batched":
        raise ValueError(f"mode must be 'batched' or 'per_request', got {mode!r}")

    device = next(model.parameters()).device
    contexts = flatten(templates)
    n, n_ctx = len(requests), len(contexts)
    prompts, subjects, targets, owner = [], [], [], []
    for i, r in enumerate(requests):
        for ctx in contexts:
            prompts.append(fill_context(ctx, r.prompt))
            subjects.append(r.subject)
            targets.append(r.new_text)
            owner.append(i)
    for i, r in enumerate(requests):  # KL prompts, one per request, after all rewriting rows
        prompts.append("{} is a")
        subjects.append(r.subject)
        targets.append(None)
        owner.append(i)
    batch = build_batch(tokenizer, prompts, subjects, targets, teacher_force_all=False).to(device)
    n_rw = n * n_ctx
    rows = torch.arange(len(prompts), device=device)
    pos = torch.tensor(batch.subject_idx, device=device)
    own = torch.tensor(owner, device=device)

    # Teacher-forced target positions of the rewriting rows, as flat index tensors.
    t_rows, t_pos, t_ids, t_w = [], [], [], []
    for row in range(n_rw):
        m = len(batch.target_ids[row])
        t_rows += [row] * m
        t_pos += batch.target_pos[row]
        t_ids += batch.target_ids[row]
        t_w += [1.0 / m] * m
    t_rows, t_pos, t_ids = (torch.tensor(x, device=device) for x in (t_rows, t_pos, t_ids))
    t_w = torch.tensor(t_w, device=device)

    name = _module_name(spec, cfg)
    d = spec.d_model(model)
    delta = torch.zeros(n, d, device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps = [0] * n
    last_loss = [float("nan")] * n
    h_init = None
    kl_ref = None

    def add_delta(h):
        nonlocal h_init
        if h_init is None:  # first pass: δ = 0, record the unedited value at the "{}" prompt
            h_init = h[rows[:n_rw:n_ctx], pos[:n_rw:n_ctx]].detach().clone()  # (n, d)
        return h.index_put((rows, pos), delta[own].to(h.dtype), accumulate=True)

    with frozen(model), edit_output(model, name, add_delta):
        for it in range(cfg.n_steps):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            tok_lp = logp[t_rows, t_pos, t_ids] * t_w  # (n_target_tokens,)
            nll_row = -torch.zeros(n_rw, device=device).index_add(0, t_rows, tok_lp)  # (n_rw,)
            nll = nll_row.view(n, n_ctx).mean(1)  # (n,)
            kl_lp = logp[rows[n_rw:], pos[n_rw:]]  # (n, vocab) next token after the subject
            if kl_ref is None:
                kl_ref = kl_lp.detach().clone()
            kl = (kl_lp.exp() * (kl_lp - kl_ref)).sum(-1)  # KL(p_δ ‖ p_0), (n,)
            wd = cfg.weight_decay * delta.norm(dim=1) / h_init.norm(dim=1) ** 2
            loss = nll + cfg.kl_factor * kl + wd  # (n,)
            for i in range(n):
                if active[i]:
                    last_loss[i] = float(loss[i].detach())
            active &= loss.detach() >= cfg.early_stop_loss
            if it == cfg.n_steps - 1 or not bool(active.any()):
                break
            keep = delta.detach().clone()
            opt.zero_grad()
            (loss * active).sum().backward()
            opt.step()
            with torch.no_grad():
                delta[~active] = keep[~active]  # stopped requests do not move (Adam momentum)
                limit = cfg.clamp_norm_factor * h_init.norm(dim=1, keepdim=True)
                norm = delta.norm(dim=1, keepdim=True)
                delta.mul_(torch.where(norm > limit, limit / norm, torch.ones_like(norm)))
            for i in range(n):
                steps[i] += int(active[i])
    z = (h_init + delta.detach()).float()
    return z, {"loss": last_loss, "steps": steps}
