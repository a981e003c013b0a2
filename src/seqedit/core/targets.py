"""Target vectors z: the block-L output at the subject that makes the model say target_new.

MEMIT §1.3 (compute_z). For each request a free vector δ is added to block L's output at
the subject-last token of every rewriting prompt (one per context template: the context,
then the prompt, then all target tokens but the last, teacher-forced) and of one KL prompt
"{subject} is a". δ minimises

    NLL(target_new) + kl_factor · KL(p_δ ‖ p_0 at the KL prompt) + wd · ‖δ‖ / ‖h_init‖²

with Adam; after each step ‖δ‖ is clamped to clamp_norm_factor · ‖h_init‖. A request stops
once its loss is below `early_stop_loss`; at most `n_steps − 1` steps are taken (the last
iteration only evaluates), as in the reference. z = h_init + δ.

All requests of a batch are optimised together. The loss is the *sum* of per-request losses,
so each δ_i sees exactly its own gradient; Adam is element-wise and all rows step together, so
this equals per-request optimisation up to float rounding. The loss is read from the model's
final logits (the reference's v_loss_layer is the last layer for every model).

Modes (all give the same z up to float rounding):
- `"fast"` (default): computes only what depends on δ and is read. One no-grad forward of the
  unedited prompts records block L's output and, for every layer above L, the keys/values of
  the positions before each prompt's subject-last token p. Each step then runs only the
  positions from p through the row's last read position (the KL prompts: p alone), starting
  from block L's output (+ δ at p), through the blocks above L, attending to the cached prefix,
  and applies the final norm and unembedding only at the target positions and the KL position.
  Rows run in groups of similar width (`length_groups`), each padded only to its own widest
  row, in parts of at most `PART_ROWS` rows; each part's backward runs before the next part's
  forward (the loss is a sum of per-part terms), so one part's activations are alive at a time.
  With `module="mlp"` (ROME) δ is added to the FFN output of block L; in a block that
  adds its FFN output to the residual stream as a plain sum (every layout in `models/arch.py`)
  that is the same as adding δ to block L's output, so the same path serves, with h_init read
  from the FFN output. A layout without that property falls back to
  `"reference"`.
- `"reference"` (alias `"batched"`): one padded full forward/backward of every prompt per step,
  δ added by a hook, logits over the whole vocabulary at every position.
- `"per_request"`: the reference computation, one request at a time.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from transformers import DynamicCache

from seqedit.core.hooks import _first, capture, edit_output, stop_after
from seqedit.core.prefix import PrefixCache, cached_kv
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


MODES = ("fast", "reference", "batched", "per_request")
# The fast mode runs a group of rows in parts of at most this many rows, each part's forward and
# backward in turn, so that one part's activations and logits are alive at a time.
PART_ROWS = 128


def optimize_targets(
    model,
    tokenizer,
    spec: ModelSpec,
    requests: list[EditRequest],
    templates: list[list[str]],
    cfg: TargetConfig,
    mode: str = "fast",
) -> tuple[torch.Tensor, dict]:
    """Return z (n_requests, d_model) and a log {"loss": [...], "steps": [...]} per request."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "per_request":
        zs, logs = [], {"loss": [], "steps": []}
        for r in requests:
            z, log = optimize_targets(model, tokenizer, spec, [r], templates, cfg, mode="reference")
            zs.append(z)
            logs["loss"] += log["loss"]
            logs["steps"] += log["steps"]
        return torch.cat(zs), logs
    if mode == "fast" and cfg.module == "mlp" and not spec.mlp_adds_to_residual:
        mode = "reference"

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

    d = spec.d_model(model)
    delta = torch.zeros(n, d, device=device, requires_grad=True)
    idx = dict(rows=rows, pos=pos, own=own, n_rw=n_rw, n_ctx=n_ctx, t_rows=t_rows, t_pos=t_pos, t_ids=t_ids)
    with frozen(model):
        build = _fast_forward if mode == "fast" else _reference_forward
        step_logp, state = build(model, spec, cfg, batch, delta, idx)
        return _optimize(cfg, n, n_ctx, delta, state, step_logp, t_rows, t_w)


# step_logp() yields the read-outs of one forward in parts (the reference: one part; the fast mode:
# one per group of rows), each (tok_sel, tok_lp, kl_sel, kl_lp): the indices (into the flat list of
# teacher-forced target tokens) and log p of the target tokens the part reads, and the requests
# whose KL prompt it reads with log p over the vocabulary at the subject-last token (len(kl_sel),
# vocab). A part's graph can be freed (by its backward) before the next is computed. The builders
# also return a dict whose "h_init" (n, d) is set once the first part has been yielded.
StepFn = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]]


def _reference_forward(model, spec, cfg, batch, delta, idx) -> tuple[StepFn, dict]:
    """Full padded forward of every prompt, δ added by a hook; h_init read on the first call."""
    rows, pos, own, n_rw, n_ctx = idx["rows"], idx["pos"], idx["own"], idx["n_rw"], idx["n_ctx"]
    name = _module_name(spec, cfg)
    state = {}

    def add_delta(h):
        if "h_init" not in state:  # first pass: δ = 0, record the unedited value at the "{}" prompt
            state["h_init"] = h[rows[:n_rw:n_ctx], pos[:n_rw:n_ctx]].detach().clone()  # (n, d)
        return h.index_put((rows, pos), delta[own].to(h.dtype), accumulate=True)

    def step():
        with edit_output(model, name, add_delta):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        yield (torch.arange(len(idx["t_rows"]), device=rows.device), logp[idx["t_rows"], idx["t_pos"], idx["t_ids"]],
               torch.arange(len(rows) - n_rw, device=rows.device), logp[rows[n_rw:], pos[n_rw:]])

    return step, state


def length_groups(widths: list[int], max_groups: int = 8, overhead: int = 8) -> list[list[int]]:
    """Split rows into groups of similar width: each group is run padded to its own widest row.

    Minimises Σ_g |g|·max width(g) + overhead·(number of groups), at most `max_groups` groups;
    `overhead` is the cost of one more group in padded tokens. Some optimal split puts rows of
    equal width together and takes contiguous runs of the sorted distinct widths, so an exact
    dynamic programme over the distinct widths finds it. Returns row indices per group,
    narrowest first, each in row order.
    """
    rows_of = Counter(widths)
    distinct = sorted(rows_of)
    count = [rows_of[v] for v in distinct]
    u, inf = len(distinct), float("inf")
    # best[g][j]: cost of the j narrowest widths in g groups, the last group ending at width j - 1.
    best = [[inf] * (u + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (u + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0
    for g in range(1, max_groups + 1):
        for j in range(1, u + 1):
            rows = 0
            for i in range(j - 1, g - 2, -1):  # the last group holds widths i .. j - 1
                rows += count[i]
                c = best[g - 1][i] + rows * distinct[j - 1] + overhead
                if c < best[g][j]:
                    best[g][j], cut[g][j] = c, i
    g = min(range(1, max_groups + 1), key=lambda k: (best[k][u], k)) if u else 0
    bounds, j = [], u
    while g > 0:
        bounds.append((cut[g][j], j))
        j, g = cut[g][j], g - 1
    return [[r for r, w in enumerate(widths) if distinct[i] <= w <= distinct[j - 1]] for i, j in bounds[::-1]]


def _fast_forward(model, spec, cfg, batch, delta, idx) -> tuple[StepFn, dict]:
    """Run the unedited prompts once; each step runs only positions ≥ p through the blocks above L."""
    rows, pos, own, n_rw, n_ctx = idx["rows"], idx["pos"], idx["own"], idx["n_rw"], idx["n_ctx"]
    device = batch.input_ids.device
    L, n_layers = cfg.layer, spec.n_layers(model)
    block_l = spec.block_name(L)
    read = [block_l] + ([spec.mlp_name(L)] if cfg.module == "mlp" else [])
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), capture(model, read) as seen, stop_after(model, [spec.block_name(n_layers - 1)]):
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, past_key_values=cache, use_cache=True)
    h_l = seen[block_l]  # (B, T, d): block L's output, δ = 0
    h_init = seen[read[-1]][rows[:n_rw:n_ctx], pos[:n_rw:n_ctx]].clone()  # (n, d)
    kv = {l: tuple(t.detach() for t in cached_kv(cache, l)) for l in range(L + 1, n_layers)}
    del cache, seen

    # Read-out slots: every teacher-forced target position, then each KL row's slot 0. Suffix
    # slot j of row b is absolute position p_b + j; a row needs its slots up to the last one
    # read (the KL rows only slot 0), and the rows run in groups of similar width.
    kl_rows = rows[n_rw:]
    out_rows = torch.cat([idx["t_rows"], kl_rows])
    out_slot = torch.cat([idx["t_pos"] - pos[idx["t_rows"]], torch.zeros_like(kl_rows)])
    need = torch.zeros(len(rows), dtype=torch.long, device=device).scatter_reduce(
        0, out_rows, out_slot + 1, reduce="amax")
    parts = [m[s : s + PART_ROWS] for m in length_groups(need.tolist()) for s in range(0, len(m), PART_ROWS)]
    groups = []
    for members in parts:
        g_rows = torch.tensor(members, device=device)
        last = pos[g_rows] + need[g_rows] - 1  # each row's last needed position
        groups.append(_group_inputs(h_l, kv, g_rows, pos[g_rows], last, out_rows, out_slot))
    n_tok = len(idx["t_rows"])
    for g in groups:  # which of the group's read-outs are target tokens, which KL positions
        is_tok = g["out"] < n_tok
        g["tok_sel"], g["kl_sel"], g["is_tok"] = g["out"][is_tok], g["out"][~is_tok] - n_tok, is_tok
    blocks = model.get_submodule(spec.blocks)
    final_norm, lm_head = model.get_submodule(spec.final_norm), model.get_submodule(spec.lm_head)

    def step():
        for g in groups:
            h = g["h0"] + g["at_p"] * delta[own[g["rows"]]].to(g["h0"].dtype)[:, None, :]
            for l in range(L + 1, n_layers):
                h = _first(blocks[l](h, **spec.block_inputs(model, h, g["at"], g["mask"], g["prefix"])))
            logits = lm_head(final_norm(h[g["local"], g["slot"]]))  # (read-outs of the group, vocab)
            logp = torch.log_softmax(logits.float(), dim=-1)
            tok = logp[g["is_tok"]]
            yield (g["tok_sel"], tok[torch.arange(len(tok), device=device), idx["t_ids"][g["tok_sel"]]],
                   g["kl_sel"], logp[~g["is_tok"]])

    return step, {"h_init": h_init}


def _group_inputs(h_l, kv, g_rows, g_pos, last, out_rows, out_slot) -> dict:
    """One group's constant inputs: block L's output at its suffix slots, absolute positions,
    the additive mask over [cached prefix, suffix], the prefix cache, and its read-out slots."""
    device = h_l.device
    n_prefix = int(g_pos.max())  # the group's cached prefix width: positions 0 .. max p − 1
    width = int((last - g_pos).max()) + 1
    j = torch.arange(width, device=device)
    # (B_g, S) absolute positions; a row's padding slots repeat its last needed position and,
    # coming after its real slots, are seen by none of them.
    at = torch.minimum(g_pos[:, None] + j, last[:, None])
    h0 = h_l[g_rows[:, None], at]  # (B_g, S, d)
    # Prefix slot k is real for k < p_b; suffix slot k' is visible from slot j when k' ≤ j.
    k = torch.arange(n_prefix, device=device)
    see_prefix = (k[None, :] < g_pos[:, None])[:, None, :].expand(-1, width, -1)  # (B_g, S, P)
    see_suffix = (j[None, :] <= j[:, None])[None].expand(len(g_rows), -1, -1)  # (B_g, S, S)
    allowed = torch.cat([see_prefix, see_suffix], dim=-1)[:, None]  # (B_g, 1, S, P + S)
    mask = torch.zeros(allowed.shape, dtype=h0.dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(h0.dtype).min)
    prefix = PrefixCache({l: (kt[g_rows, :, :n_prefix], vt[g_rows, :, :n_prefix]) for l, (kt, vt) in kv.items()})
    local = torch.full((int(out_rows.max()) + 1,), -1, dtype=torch.long, device=device)
    local[g_rows] = torch.arange(len(g_rows), device=device)
    out = torch.nonzero(local[out_rows] >= 0).flatten()  # read-outs of this group, in read-out order
    return {"rows": g_rows, "h0": h0, "at": at, "mask": mask, "prefix": prefix,
            "at_p": (j == 0).to(h0.dtype)[None, :, None],  # δ enters at suffix slot 0 (= p)
            "local": local[out_rows[out]], "slot": out_slot[out], "out": out}


def _optimize(cfg, n, n_ctx, delta, state: dict, step_logp: StepFn, t_rows, t_w) -> tuple[torch.Tensor, dict]:
    """Adam on δ with early stopping and the norm clamp; the loss terms come from `step_logp`."""
    device = delta.device
    n_rw = n * n_ctx
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps = [0] * n
    last_loss = [float("nan")] * n
    kl_ref = None  # (n, vocab): log p at the KL positions before any step (δ = 0)
    for it in range(cfg.n_steps):
        # The loss is a sum over requests, each term a sum over the parts that read its rows, so
        # each part's backward runs as soon as it is computed, weighted by the requests still active
        # before this step: one that stops now gets its δ back below, and δ rows are independent.
        backward = it < cfg.n_steps - 1
        weight = active.to(delta.dtype)
        opt.zero_grad()
        loss = torch.zeros(n, device=device)  # (n,), detached
        for tok_sel, tok_lp, kl_sel, kl_lp in step_logp():
            nll_row = -torch.zeros(n_rw, device=device).index_add(0, t_rows[tok_sel], tok_lp * t_w[tok_sel])  # (n_rw,)
            part = nll_row.view(n, n_ctx).mean(1)  # (n,) this part's share of each request's NLL
            if len(kl_sel):
                if kl_ref is None:
                    kl_ref = torch.zeros(n, kl_lp.shape[-1], device=device)
                if it == 0:
                    kl_ref[kl_sel] = kl_lp.detach()
                kl = (kl_lp.exp() * (kl_lp - kl_ref[kl_sel])).sum(-1)  # KL(p_δ ‖ p_0) of these requests
                part = part.index_add(0, kl_sel, cfg.kl_factor * kl)
            if backward:
                (part * weight).sum().backward()
            loss += part.detach()
        h_init = state["h_init"]
        wd = cfg.weight_decay * delta.norm(dim=1) / h_init.norm(dim=1) ** 2  # (n,)
        if backward:
            (wd * weight).sum().backward()
        loss += wd.detach()
        for i in range(n):
            if active[i]:
                last_loss[i] = float(loss[i])
        active &= loss >= cfg.early_stop_loss
        if not backward or not bool(active.any()):
            break
        keep = delta.detach().clone()
        opt.step()
        with torch.no_grad():
            delta[~active] = keep[~active]  # stopped requests do not move (Adam momentum)
            limit = cfg.clamp_norm_factor * h_init.norm(dim=1, keepdim=True)
            norm = delta.norm(dim=1, keepdim=True)
            delta.mul_(torch.where(norm > limit, limit / norm, torch.ones_like(norm)))
        for i in range(n):
            steps[i] += int(active[i])
    z = (state["h_init"] + delta.detach()).float()
    return z, {"loss": last_loss, "steps": steps}
