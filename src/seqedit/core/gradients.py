"""Gradient machinery shared by the fine-tuning editors (FT-L, KNE): candidate weights,
target losses, token-level gradient attribution, top-fraction masks and masked steps.

- `candidate_params`: the weight matrices of chosen layers, by kind ("ffn_in": the FFN input
  projections, "ffn_out": W_out, "attn": every 2-D weight of the block outside the FFN), read
  from the `ModelSpec` and the module tree, never from a model name.
- `target_tokens` / `token_logprobs` / `request_nll`: the edit loss of a batch of requests,
  either teacher-forced on target_new (`objective="target_new"`, EasyEdit FT-M / KNE) or every
  target token predicted from the last prompt position (`objective="prompt_last"`, the
  ROME/MEMIT FT baseline's quirk, design notes §2.5).
- `token_attribution`: per target token t, A_t(w) = |w · ∂ℓ_t/∂w| (or the signed −w·∂ℓ_t/∂w),
  optionally summed to FFN-neuron units, aggregated over the tokens of a request (sum, max,
  mean) and summed over requests (KNE reconstruction, kne_nmke.md §1.3 step 1).
- `top_fraction_masks`: keep the top fraction of scores, pooled per matrix, per layer or
  globally (step 2).
- `masked_step`: zero gradients outside the masks, optionally rescale them per parameter,
  step, and put every entry outside the masks back to its start value (step 3).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from seqedit.core.prompts import build_batch, encode_target
from seqedit.data.records import EditRequest
from seqedit.models.arch import ModelSpec

MODULE_KINDS = ("ffn_in", "ffn_out", "attn")


@dataclass(frozen=True)
class Candidate:
    """One editable parameter."""

    name: str  # parameter name in model.named_parameters()
    layer: int
    kind: str  # "ffn_in" | "ffn_out" | "attn" | "bias"
    neuron_dim: int | None  # axis of the stored tensor that indexes FFN neurons (None: not an FFN weight)


def candidate_params(
    model: nn.Module, spec: ModelSpec, layers: list[int], modules: list[str], include_bias: bool = False
) -> list[Candidate]:
    """The weights of kinds `modules` in `layers` (and their biases when `include_bias`)."""
    bad = sorted(set(modules) - set(MODULE_KINDS))
    if bad or not modules:
        raise ValueError(f"unknown module kind(s) {bad or modules}; choose from {list(MODULE_KINDS)}")
    spec.check_layers(model, layers)
    params = dict(model.named_parameters())
    out: list[Candidate] = []

    def add(module_name: str, layer: int, kind: str, neuron_dim: int | None):
        out.append(Candidate(module_name + ".weight", layer, kind, neuron_dim))
        if include_bias and module_name + ".bias" in params:
            out.append(Candidate(module_name + ".bias", layer, "bias", None))

    for l in layers:
        if "ffn_in" in modules:
            for name in spec.in_proj_names(l):  # stored [d_model, d_ff] (Conv1D) or [d_ff, d_model]
                add(name, l, "ffn_in", 1 if spec.in_transposed else 0)
        if "ffn_out" in modules:  # stored [d_ff, d_model] (Conv1D) or [d_model, d_ff]
            add(spec.out_proj_name(l), l, "ffn_out", 0 if spec.out_transposed else 1)
        if "attn" in modules:
            block, mlp_prefix = spec.block_name(l), spec.mlp_name(l) + "."
            for name, p in model.get_submodule(block).named_parameters(prefix=block):
                if p.ndim == 2 and name.endswith(".weight") and not name.startswith(mlp_prefix):
                    add(name[: -len(".weight")], l, "attn", None)
    for c in out:
        if c.name not in params:
            raise ValueError(f"parameter {c.name} not found in the model")
    return out


@contextmanager
def trainable(model: nn.Module, names: list[str]):
    """Only the named parameters require gradients inside the block. After it, every parameter's
    requires_grad flag is restored and its .grad cleared (editing leaves no gradients behind)."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    try:
        yield {n: params[n] for n in names}
    finally:
        for n, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(flags[n])


# --- the edit loss ------------------------------------------------------------------------------


@dataclass
class TargetTokens:
    """Flat index of every target token of a batch of requests."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    rows: torch.Tensor  # (n_tok,) batch row of each target token
    pos: torch.Tensor  # (n_tok,) position whose logits predict it
    ids: torch.Tensor  # (n_tok,) the token id
    owner: torch.Tensor  # (n_tok,) request index
    n_requests: int

    def counts(self) -> torch.Tensor:
        return torch.bincount(self.owner, minlength=self.n_requests)  # (n,)


def target_tokens(
    tokenizer, requests: list[EditRequest], objective: str, device, texts: list[str] | None = None
) -> TargetTokens:
    """Target tokens of `texts` (default: each request's " " + target_new) after its query.

    objective "target_new": the row is query + target[:-1], token t is predicted at the
    position before it (teacher forcing). "prompt_last": the row is the query alone and every
    target token is predicted from its last position.
    """
    if objective not in ("target_new", "prompt_last"):
        raise ValueError(f"objective must be 'target_new' or 'prompt_last', got {objective!r}")
    texts = texts if texts is not None else [r.new_text for r in requests]
    queries = [r.query for r in requests]
    rows, pos, ids, owner = [], [], [], []
    if objective == "target_new":
        batch = build_batch(tokenizer, queries, None, texts, teacher_force_all=False)
        for i in range(len(requests)):
            rows += [i] * len(batch.target_ids[i])
            pos += batch.target_pos[i]
            ids += batch.target_ids[i]
            owner += [i] * len(batch.target_ids[i])
    else:
        batch = build_batch(tokenizer, queries)
        for i, text in enumerate(texts):
            t_ids = encode_target(tokenizer, text)
            rows += [i] * len(t_ids)
            pos += [batch.lengths[i] - 1] * len(t_ids)
            ids += t_ids
            owner += [i] * len(t_ids)
    as_t = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return TargetTokens(batch.input_ids.to(device), batch.attention_mask.to(device), as_t(rows), as_t(pos),
                        as_t(ids), as_t(owner), len(requests))


def token_logprobs(model: nn.Module, tt: TargetTokens) -> torch.Tensor:
    """log p(token) for every target token: (n_tok,). Differentiable."""
    logits = model(input_ids=tt.input_ids, attention_mask=tt.attention_mask).logits  # (B, T, V)
    picked = logits[tt.rows, tt.pos].float()  # (n_tok, V)
    return torch.log_softmax(picked, dim=-1).gather(1, tt.ids[:, None]).squeeze(1)  # (n_tok,)


def request_nll(logp: torch.Tensor, tt: TargetTokens) -> torch.Tensor:
    """Mean negative log-likelihood per request: (n_requests,)."""
    total = torch.zeros(tt.n_requests, device=logp.device).index_add(0, tt.owner, -logp)  # (n,)
    return total / tt.counts().to(logp.dtype)


# --- attribution ------------------------------------------------------------------------------------


def _to_units(score: torch.Tensor, cand: Candidate, granularity: str) -> torch.Tensor:
    """Entry scores -> unit scores: the same tensor ("weights"), or per FFN neuron ("neurons")."""
    if granularity == "weights":
        return score
    other = 1 - cand.neuron_dim
    return score.sum(dim=other)  # (d_ff,)


def token_attribution(
    model: nn.Module,
    tt: TargetTokens,
    params: dict[str, torch.Tensor],
    candidates: list[Candidate],
    aggregate: str = "sum",
    signed: bool = False,
    granularity: str = "weights",
) -> dict[str, torch.Tensor]:
    """Per-candidate attribution scores of the batch's target tokens.

    A_t(w) = |w · ∂ℓ_t/∂w| (signed: −w · ∂ℓ_t/∂w, positive where w raises p(target)) for
    every target token t (ℓ_t = −log p(y_t | x, y_<t)); with granularity "neurons" the entry
    scores of an FFN neuron's row/column are summed per token first. Aggregated over the
    tokens of each request (sum, max or mean), then summed over requests. One backward pass
    per target token (one in total when the score is linear in the gradient: signed + sum).
    Returns name -> scores shaped like the parameter ("weights") or (d_ff,) ("neurons").
    """
    if aggregate not in ("sum", "max", "mean"):
        raise ValueError(f"aggregate must be sum, max or mean, got {aggregate!r}")
    if granularity not in ("weights", "neurons"):
        raise ValueError(f"granularity must be 'weights' or 'neurons', got {granularity!r}")
    if granularity == "neurons" and any(c.neuron_dim is None for c in candidates):
        raise ValueError("granularity 'neurons' needs FFN weight matrices only (modules ffn_in/ffn_out, no bias)")
    names = [c.name for c in candidates]
    tensors = [params[n] for n in names]
    logp = token_logprobs(model, tt)  # (n_tok,)
    counts = tt.counts()
    n_tok = logp.shape[0]

    if signed and aggregate == "sum":  # Σ_t −w·∂ℓ_t/∂w = w·∂(Σ_t log p_t)/∂w: one backward
        grads = torch.autograd.grad(logp.sum(), tensors)
        return {c.name: _to_units((w * g).detach(), c, granularity) for c, w, g in zip(candidates, tensors, grads)}

    total = {n: None for n in names}  # summed over requests
    current = {n: None for n in names}  # the running aggregate of the current request
    owners = tt.owner.tolist()
    for t in range(n_tok):
        grads = torch.autograd.grad(logp[t], tensors, retain_graph=t + 1 < n_tok)  # ∂log p_t/∂w = −∂ℓ_t/∂w
        for c, w, g in zip(candidates, tensors, grads):
            s = (w * g).detach()  # −w·∂ℓ_t/∂w
            s = _to_units(s if signed else s.abs(), c, granularity)
            if aggregate == "mean":
                s = s / counts[owners[t]]
            cur = current[c.name]
            current[c.name] = s if cur is None else (torch.maximum(cur, s) if aggregate == "max" else cur + s)
        if t + 1 == n_tok or owners[t + 1] != owners[t]:  # the request's tokens are done
            for n in names:
                total[n] = current[n] if total[n] is None else total[n] + current[n]
                current[n] = None
    return total


def top_fraction_masks(
    scores: dict[str, torch.Tensor], pool_of: dict[str, object], fraction: float
) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the top `fraction` of scores within each pool.

    `pool_of` maps every score name to a pool key (the name itself: per matrix; the layer:
    per layer; one key: global). Each pool keeps exactly max(1, round(fraction · size))
    entries (ties broken by `torch.topk`).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pools: dict[object, list[str]] = {}
    for name in scores:
        pools.setdefault(pool_of[name], []).append(name)
    masks = {}
    for members in pools.values():
        flat = torch.cat([scores[n].reshape(-1).float() for n in members])  # (N,)
        k = max(1, int(round(fraction * flat.numel())))
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat, k).indices] = True
        start = 0
        for n in members:
            size = scores[n].numel()
            masks[n] = keep[start : start + size].view(scores[n].shape)
            start += size
    return masks


def expand_mask(unit_mask: torch.Tensor, cand: Candidate, shape: torch.Size) -> torch.Tensor:
    """A neuron mask (d_ff,) broadcast to the weight's stored shape along its neuron axis."""
    if unit_mask.shape == shape:
        return unit_mask
    view = [1, 1]
    view[cand.neuron_dim] = -1
    return unit_mask.view(view).expand(shape)


@torch.no_grad()
def masked_step(
    optimizer: torch.optim.Optimizer,
    params: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    start: dict[str, torch.Tensor],
    grad_scale: dict[str, float] | None = None,
    keep: dict[str, torch.Tensor] | None = None,
) -> None:
    """g ← g ⊙ M (· scale), one optimizer step, then entries outside `keep` (default M)
    reset to `start`.

    The reset makes "outside the ensemble unchanged" exact whatever the optimizer does there
    (weight decay; Adam momentum of entries that left a dynamic ensemble, for which `keep`
    is the union of the masks so far, so their earlier steps are kept).
    """
    keep = masks if keep is None else keep
    for n, p in params.items():
        if p.grad is None:
            continue
        p.grad.mul_(masks[n])
        if grad_scale is not None:
            p.grad.mul_(grad_scale[n])
    optimizer.step()
    for n, p in params.items():
        p.copy_(torch.where(keep[n], p, start[n]))


@torch.no_grad()
def clamp_linf(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor], eps: float) -> None:
    """Element-wise clamp to [W₀ − ε, W₀ + ε] (FT-L's norm constraint)."""
    for n, p in params.items():
        p.copy_(torch.maximum(torch.minimum(p, start[n] + eps), start[n] - eps))
