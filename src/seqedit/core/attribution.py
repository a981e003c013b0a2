"""Neuron selection and attribution for neuron-level editors (NSE, NMKE).

A "neuron" n of layer l is one FFN hidden unit: row n of the key k ∈ R^{d_ff} (the input of
W_out) and column n of W_out ([d_out, d_in] layout). Restricting an update to a neuron set N
means ΔW[:, ¬N] = 0.

- `select_by_activation` (NSE, Jiang et al., ACL 2025, §2.3(c) of editing_methods.md): the
  neurons carrying a fraction p of the summed absolute key activation of the edit set.
- `neuron_logprob_gain` (NMKE, Liu et al., NeurIPS 2025, after Yu & Ananiadou, EMNLP 2024):
  for each prompt j and neuron i of a layer, the log-probability gain of a reference token
  y*_j when the neuron's amplified sub-value λ·a_{j,i}·W_out[:, i] is added to the residual
  stream that enters the FFN, read through the final norm (scale frozen) and unembedding.
- `entropy_guided_mask` (NMKE): the union of "knowledge-general" and "knowledge-specific"
  neurons, each kept in a proportion set by the entropy of the attribution scores.
- `neuron_submatrix` / `expand_columns`: restrict a (d_ff, d_ff) regulariser to a neuron set and
  put a solution over that set back into a full [d_out, d_ff] update (NSE's restricted solve,
  NMKE's `restricted_solve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from seqedit.core.hooks import capture
from seqedit.core.prompts import pad_batch
from seqedit.models.arch import ModelSpec


# --------------------------------------------------------------------------------------------
# NSE: activation-mass selection
# --------------------------------------------------------------------------------------------
def select_by_activation(keys: torch.Tensor, p: float) -> torch.Tensor:
    """Neurons holding the top fraction `p` of the summed |activation| over the edit set.

    keys: (d_ff, n) keys of the requests being edited. score_i = Σ_j |K_ij|; neurons are
    sorted by descending score and the top t are kept, t = 1 + the last (0-based) index at
    which the cumulative sorted score is ≤ p·Σ score, i.e. the largest top set whose mass
    stays within p of the total (at least one neuron). The sums run in float64, and p ≥ 1
    keeps every neuron (the reference's float32 cumsum can overshoot the total and drop
    trailing neurons at p = 1). Returns the selected neuron indices, ascending (LongTensor).
    """
    if not 0.0 < p:
        raise ValueError(f"neuron threshold p must be > 0, got {p}")
    d_ff = keys.shape[0]
    if p >= 1.0:
        return torch.arange(d_ff, device=keys.device)
    scores = keys.double().abs().sum(1)  # (d_ff,)
    order = torch.argsort(scores, descending=True)  # (d_ff,)
    cum = torch.cumsum(scores[order], 0)  # (d_ff,)
    within = cum <= p * cum[-1]  # (d_ff,) a prefix of True values
    t = max(1, int(within.sum()))
    return torch.sort(order[:t]).values  # (t,)


# --------------------------------------------------------------------------------------------
# Restricted solves
# --------------------------------------------------------------------------------------------
def neuron_submatrix(m: torch.Tensor, neurons: torch.Tensor, device=None) -> torch.Tensor:
    """m[N][:, N] (|N|, |N|) of a (d_ff, d_ff) matrix (e.g. C, C_p or P kept on CPU), on `device`."""
    n = neurons.to(m.device)
    return m.index_select(0, n).index_select(1, n).to(device if device is not None else m.device)


def expand_columns(sub: torch.Tensor, neurons: torch.Tensor, d_ff: int, dtype=None) -> torch.Tensor:
    """ΔW (d_out, d_ff) with ΔW[:, N] = sub (d_out, |N|) and ΔW[:, ¬N] = 0 exactly."""
    delta = torch.zeros(sub.shape[0], d_ff, dtype=dtype or sub.dtype, device=sub.device)  # (d_out, d_ff)
    delta[:, neurons.to(sub.device)] = sub.to(delta.dtype)
    return delta


# --------------------------------------------------------------------------------------------
# NMKE: log-probability gain of each neuron's sub-value
# --------------------------------------------------------------------------------------------
def frozen_norm_parts(norm: nn.Module, h_final: torch.Tensor):
    """The final norm with its scale frozen, as parts of an affine map: (scale (J,), lin, bias).

    h_final: (J, d) input of the final norm (last block output) at each prompt's last token.
    f_j(v) = lin(v) / scale_j + bias, with lin linear and shared by every prompt:
    LayerNorm → lin(v) = (v − mean(v)) · g, scale_j = sqrt(Var(h_final_j) + eps);
    RMSNorm → lin(v) = v · g, scale_j = sqrt(mean(h_final_j²) + eps). Decided by the module type
    (nn.LayerNorm is centred), never by a model name. The bias is included (the NMKE code drops
    ln_f's bias for GPT-2; the model does add it); None for RMSNorm.
    """
    h = h_final.float()
    weight = norm.weight.float()
    bias = getattr(norm, "bias", None)
    bias = None if bias is None else bias.float()
    centred = isinstance(norm, nn.LayerNorm)
    if centred:
        scale = torch.sqrt(h.var(-1, unbiased=False) + norm.eps)  # (J,)
    else:
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        scale = torch.sqrt(h.pow(2).mean(-1) + eps)  # (J,)

    def lin(v: torch.Tensor) -> torch.Tensor:
        return (v - v.mean(-1, keepdim=True) if centred else v) * weight

    return scale, lin, bias


def frozen_final_norm(norm: nn.Module, h_final: torch.Tensor):
    """f(v) for v (J, ..., d): the final norm as an affine map with its scale frozen at the
    model's own final state h_final (J, d) (see `frozen_norm_parts`)."""
    scale, lin, bias = frozen_norm_parts(norm, h_final)

    def f(v: torch.Tensor) -> torch.Tensor:
        out = lin(v) / scale.view(-1, *([1] * (v.ndim - 1)))  # (J, 1, ..., 1) scale
        return out if bias is None else out + bias

    return f


@dataclass
class NeuronTrace:
    """What `trace_neurons` reads at each prompt's last token, for the requested layers."""

    activations: dict[int, torch.Tensor]  # layer -> (J, d_ff), input of W_out
    residual: dict[int, torch.Tensor]  # layer -> (J, d), block output minus FFN output
    final: torch.Tensor  # (J, d) input of the final norm
    logits: torch.Tensor  # (J, vocab) next-token logits


@torch.no_grad()
def trace_neurons(
    model, tokenizer, spec: ModelSpec, layers: list[int], texts: list[str], chunk: int = 32
) -> NeuronTrace:
    """Padded forwards over `texts` (plain strings, `chunk` at a time), read at each text's
    last token; only those rows are kept.

    The residual stream "without this FFN" is taken as block output − FFN output, which is
    the post-attention residual for sequential blocks (GPT-2, Llama) and residual +
    attention for parallel ones (GPT-J), with no architecture branch.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    acts = {l: spec.out_proj_name(l) for l in layers}
    blocks = {l: spec.block_name(l) for l in layers}
    mlps = {l: spec.mlp_name(l) for l in layers}
    parts = []
    for s in range(0, len(texts), chunk):
        rows = [tokenizer(t)["input_ids"] for t in texts[s : s + chunk]]
        ids, mask = pad_batch(rows, pad)
        ids, mask = ids.to(device), mask.to(device)
        last = torch.tensor([len(r) - 1 for r in rows], device=device)  # (Jc,) right padding
        sel = torch.arange(len(rows), device=device)
        with capture(model, list(acts.values()) + [spec.final_norm], what="input") as seen_in, capture(
            model, list(blocks.values()) + list(mlps.values()), what="output"
        ) as seen_out:
            logits = model(input_ids=ids, attention_mask=mask).logits  # (Jc, T, vocab)

        def at(t):
            return t[sel, last].float()  # (Jc, ·) at the last real token

        parts.append(NeuronTrace(
            activations={l: at(seen_in[acts[l]]) for l in layers},
            residual={l: at(seen_out[blocks[l]]) - at(seen_out[mlps[l]]) for l in layers},
            final=at(seen_in[spec.final_norm]),
            logits=at(logits),
        ))
    return NeuronTrace(
        activations={l: torch.cat([p.activations[l] for p in parts]) for l in layers},
        residual={l: torch.cat([p.residual[l] for p in parts]) for l in layers},
        final=torch.cat([p.final for p in parts]),
        logits=torch.cat([p.logits for p in parts]),
    )


@torch.no_grad()
def neuron_logprob_gain(
    model,
    spec: ModelSpec,
    trace: NeuronTrace,
    layer: int,
    target_ids: torch.Tensor,
    amplification: float = 30.0,
    chunk_elements: int = 1 << 24,
) -> torch.Tensor:
    """S (J, d_ff): S_ji = log f(h_j + λ a_ji w_i)[y_j] − log f(h_j)[y_j]  (NMKE's attribution).

    h_j = trace.residual[layer][j] (the residual before this FFN adds its output), a_ji the
    activation of neuron i (trace.activations), w_i = W_out[:, i], λ = `amplification`,
    f(v) = softmax(W_U · norm(v) + b_U) with the final norm's scale frozen at the prompt's own
    final state (`frozen_norm_parts`), y_j = target_ids[j]. As in the NMKE code, the
    probabilities are clamped to [1e-8, 1 − 1e-8] before the log and non-finite scores set to 0.

    The frozen norm is affine, so the logits of h_j + λ a_ji w_i are the logits of h_j plus
    (λ a_ji / scale_j) · G_i, with G_i = W_U · lin(w_i) one vocabulary-sized direction per neuron,
    shared by every prompt. That turns the J × d_ff matrix-vector products through the
    unembedding (J·d_ff·V·d multiply-adds) into one product G = W_U · lin(W_out) (d_ff·V·d) and
    a scaled addition per (prompt, neuron) pair before the log-softmax (J·d_ff·V).

    At most ~`chunk_elements` logits are held at once (G in blocks of neurons, the
    (prompt, neuron, vocabulary) logits in tiles of at most `_TILE` elements, which stay in
    cache), so the peak memory does not grow with d_ff × vocab.
    """
    w_out = spec.out_weight(model, layer).float()  # (d, d_ff)
    head = model.get_submodule(spec.lm_head)
    w_u = head.weight.float()  # (V, d)
    b_u = None if getattr(head, "bias", None) is None else head.bias.float()  # (V,)
    scale, lin, norm_bias = frozen_norm_parts(model.get_submodule(spec.final_norm), trace.final)
    h = trace.residual[layer]  # (J, d)
    a = trace.activations[layer]  # (J, d_ff)
    y = target_ids.to(h.device).long()  # (J,)
    J, d_ff = a.shape
    vocab = w_u.shape[0]
    lo, hi = math.log(1e-8), math.log1p(-1e-8)

    base = lin(h) / scale[:, None]  # (J, d) f(h_j)
    if norm_bias is not None:
        base = base + norm_bias
    base = base @ w_u.T  # (J, V) logits of h_j
    if b_u is not None:
        base = base + b_u
    rows = torch.arange(J, device=h.device)
    base_y = base[rows, y]  # (J,)
    base_lp = (base_y - torch.logsumexp(base, -1)).clamp(lo, hi)  # (J,)
    coef = amplification * a / scale[:, None]  # (J, d_ff) the shift of each pair along G_i

    scores = torch.empty(J, d_ff, device=h.device)
    pairs = max(1, min(chunk_elements, _TILE) // vocab)  # (prompt, neuron) pairs per tile
    block = max(1, min(d_ff, chunk_elements // vocab))  # neurons whose G rows are held at once
    for s in range(0, d_ff, block):
        g = lin(w_out[:, s : s + block].T) @ w_u.T  # (n, V) G_i of this block
        n = g.shape[0]
        g_y = g[:, y].T  # (J, n) G_i[y_j]
        nc = min(n, pairs)
        jc = max(1, pairs // nc)
        for ns in range(0, n, nc):
            for js in range(0, J, jc):
                c = coef[js : js + jc, s + ns : s + ns + nc]  # (jc, nc)
                logits = torch.addcmul(base[js : js + jc, None, :], c[:, :, None], g[None, ns : ns + nc])  # (jc, nc, V)
                lp_y = base_y[js : js + jc, None] + c * g_y[js : js + jc, ns : ns + nc] - torch.logsumexp(logits, -1)
                scores[js : js + jc, s + ns : s + ns + nc] = lp_y.clamp(lo, hi) - base_lp[js : js + jc, None]
    return torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)


_TILE = 1 << 18  # logits per step of the log-softmax (1 MiB in float32: one cache-sized pass)


# --------------------------------------------------------------------------------------------
# NMKE: entropy-guided union mask
# --------------------------------------------------------------------------------------------
def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) along the last dim of probability vectors p."""
    return -torch.special.xlogy(p, p).sum(-1)


def entropy_guided_mask(
    scores: torch.Tensor,
    temperature: float = 30.0,
    general_scale: float = 0.1,
    general_bias: float = 0.3,
    general_exponent: float = 3.0,
    specific_scale: float = 0.1,
    specific_bias: float = 0.3,
    specific_exponent: float = 2.0,
) -> tuple[torch.Tensor, dict]:
    """NMKE's neuron mask of one layer from attribution scores S (J prompts, D neurons).

    1. Knowledge-general statistic r^ge_i = #{j : Z_ji > 0}, Z the per-prompt z-score of S
       (neurons consistently above their prompt's mean).
    2. Knowledge-specific statistic r^sp_i = max_j S_ji (peak attribution).
    3. Normalised entropies: H_ge = mean_j H(softmax(temperature · S_j)) / log D and
       H_sp = H(q) / log D with q_i ∝ max(r^sp_i, 0). `temperature` multiplies the scores
       (an inverse temperature: larger = peakier = lower entropy).
    4. Ratios ρ = bias + scale · clip(H, 0, 1)^exponent for each set; if no neuron has a positive
       peak, ρ_sp = specific_bias (the NMKE code's 0.3 fallback with the default bias).
    5. mask_i = [r^ge_i ≥ Q_{1−ρ_ge}(r^ge)] OR [r^sp_i ≥ Q_{1−ρ_sp}(r^sp)], Q the empirical
       quantile (linear interpolation). r^ge is an integer in {0..J}, so ties can make the
       general set larger than ρ_ge·D.
    Returns the boolean mask (D,) and a dict of the ratios, entropies and set sizes.
    """
    s = scores.double()  # (J, D)
    J, D = s.shape
    log_d = math.log(D) if D > 1 else 1.0
    z = (s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + 1e-6)  # (J, D)
    r_ge = (z > 0).sum(0).double()  # (D,)
    r_sp = s.max(0).values  # (D,)

    h_ge = float(_entropy(torch.softmax(temperature * s, dim=1)).mean() / log_d)
    pos = r_sp.clamp(min=0)  # (D,)
    if float(pos.sum()) < 1e-8:
        h_sp = float("nan")
        rho_sp = specific_bias
    else:
        h_sp = float(_entropy(pos / pos.sum()) / log_d)
        rho_sp = specific_bias + specific_scale * min(max(h_sp, 0.0), 1.0) ** specific_exponent
    rho_ge = general_bias + general_scale * min(max(h_ge, 0.0), 1.0) ** general_exponent
    rho_ge, rho_sp = min(max(rho_ge, 0.0), 1.0), min(max(rho_sp, 0.0), 1.0)

    tau_ge = torch.quantile(r_ge, 1.0 - rho_ge)
    tau_sp = torch.quantile(r_sp, 1.0 - rho_sp)
    general = r_ge >= tau_ge  # (D,)
    specific = r_sp >= tau_sp  # (D,)
    mask = general | specific  # (D,)
    info = {
        "rho_general": rho_ge, "rho_specific": rho_sp, "entropy_general": h_ge, "entropy_specific": h_sp,
        "n_general": int(general.sum()), "n_specific": int(specific.sum()), "n_selected": int(mask.sum()),
        "n_overlap": int((general & specific).sum()),
    }
    return mask.to(scores.device), info
