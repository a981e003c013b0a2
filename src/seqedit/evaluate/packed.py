"""Teacher-forced scoring that shares the prompt: all targets of a prompt in one row.

`scoring.score_targets` (the reference) runs one row per (prompt, target) pair and takes
full-vocabulary logits at every position. Here each distinct prompt is one row,

    prompt ids, then target_1 ids[:-1], then target_2 ids[:-1], ...

with an attention mask that lets every token see the prompt and the earlier tokens of its
own target only, and position ids that restart each target right after the prompt. Every
scored token therefore sees exactly the keys, values and positions it sees in its own
reference row, so the numbers are the reference's up to float round-off. A target's last
token is never an input (no later position reads it), and the first token of every target
is predicted from the same position, the prompt's last token.

Only the model's trunk runs on the whole row (`ModelSpec.trunk`: embeddings, blocks, final
norm); the unembedding (`ModelSpec.head`) and the log-softmax run only at the scored
positions. Rows are sorted by length and cut into batches of at most `token_budget` padded
tokens, so a batch of short prompts holds many rows and a long prompt does not blow up memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from seqedit.core.generate import model_device
from seqedit.core.prompts import encode, encode_target
from seqedit.evaluate.scoring import TargetScore
from seqedit.models.arch import spec_for

DEFAULT_TOKEN_BUDGET = 4096  # padded tokens per forward pass


@dataclass
class _Row:
    """One distinct prompt and its targets, laid out as one sequence."""

    prompt: str
    ids: list[int]  # prompt ids + each target's ids but its last
    positions: list[int]  # position id of each token
    segment: list[int]  # 0 for the prompt, k for target k (1-based)
    scored: list[int]  # indices into `ids` whose outputs are read (distinct)
    lookups: list[list[tuple[int, int]]]  # per target: (index into `scored`, token id) per target token


def _layout(prompt: str, prompt_ids: list[int], targets: list[list[int]]) -> _Row:
    n = len(prompt_ids)
    ids, positions, segment = list(prompt_ids), list(range(n)), [0] * n
    scored, lookups = [n - 1], []  # every target's first token is read at the prompt's last token
    for k, t in enumerate(targets, start=1):
        look = [(0, t[0])]
        for m, tok in enumerate(t[:-1]):
            ids.append(tok)
            positions.append(n + m)
            segment.append(k)
            scored.append(len(ids) - 1)
            look.append((len(scored) - 1, t[m + 1]))
        lookups.append(look)
    return _Row(prompt, ids, positions, segment, scored, lookups)


def _batches(rows: list[_Row], token_budget: int) -> list[list[int]]:
    """Row indices, longest first, cut so that rows × longest row ≤ token_budget (a longer row alone)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i].ids), i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * len(rows[batches[-1][0]].ids) <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _inputs(rows: list[_Row], pad_id: int, dtype: torch.dtype, device) -> dict:
    """input_ids, position_ids and the additive 4-D attention mask (B, 1, T, T) of a batch."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
    for b, r in enumerate(rows):
        ids[b, : len(r.ids)] = torch.tensor(r.ids)
        pos[b, : len(r.ids)] = torch.tensor(r.positions)
        seg[b, : len(r.ids)] = torch.tensor(r.segment)
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)  # (B, T, 1), (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (q >= 0) & (k >= 0) & ((k == 0) | (k == q))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding queries see themselves: no empty softmax row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"input_ids": ids.to(device), "position_ids": pos.to(device), "attention_mask": mask.unsqueeze(1).to(device)}


@torch.no_grad()
def score_prompts(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    targets: Sequence[Sequence[str]],
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    hidden_of: Collection[str] = (),
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[list[list[TargetScore]], dict[str, np.ndarray]]:
    """Scores of `targets[i][j]` after `prompts[i]`, and the final hidden states of `hidden_of`.

    Returns `scores` with `scores[i][j]` the `TargetScore` of targets[i][j] (the same numbers as
    `scoring.score_targets` on the pair), and {prompt: (d_model,) float32} for each prompt in
    `hidden_of` (which must be among `prompts`): the trunk's output, final norm applied, at the
    prompt's last token. Equal prompts are run once, with the union of their targets.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} target lists")
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    missing = set(hidden_of) - set(prompts)
    if missing:
        raise ValueError(f"hidden states asked for {len(missing)} prompts that are not scored, e.g. {sorted(missing)[0]!r}")
    # One row per distinct prompt, holding the distinct targets asked after it.
    row_of: dict[str, int] = {}
    row_targets: list[dict[str, int]] = []
    for p, ts in zip(prompts, targets):
        if p not in row_of:
            row_of[p] = len(row_of)
            row_targets.append({})
        for t in ts:
            row_targets[row_of[p]].setdefault(t, len(row_targets[row_of[p]]))
    target_ids = {t: encode_target(tokenizer, t) for ts in row_targets for t in ts}
    rows = [_layout(p, encode(tokenizer, p), [target_ids[t] for t in ts]) for p, ts in zip(row_of, row_targets)]

    spec = spec_for(model)
    trunk, head = spec.trunk(model), spec.head(model)
    was_training = model.training
    model.eval()
    device = model_device(model)
    dtype = next(model.parameters()).dtype
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    row_scores: list[list[TargetScore]] = [[] for _ in rows]
    hidden: dict[str, np.ndarray] = {}
    wanted = set(hidden_of)
    try:
        for batch in tqdm(_batches(rows, token_budget), desc=desc, disable=not progress):
            chunk = [rows[i] for i in batch]
            inputs = _inputs(chunk, pad if pad is not None else 0, dtype, device)
            states = trunk(**inputs, use_cache=False).last_hidden_state  # (B, T, d), final norm applied
            width = states.shape[1]
            flat = torch.tensor([b * width + s for b, r in enumerate(chunk) for s in r.scored], device=device)
            picked = states.reshape(-1, states.shape[-1])[flat]  # (N, d): only the scored positions
            logp = torch.log_softmax(head(picked).float(), dim=-1)  # (N, V)
            best = logp.argmax(dim=-1).cpu().tolist()
            # Every (position, token) read in this batch, gathered in one indexing and one copy.
            offsets, pairs, off = [], [], 0
            for r in chunk:
                offsets.append(off)
                pairs += [(off + s, t) for look in r.lookups for s, t in look]
                off += len(r.scored)
            at = torch.tensor(pairs, device=device).T
            values = logp[at[0], at[1]].cpu().tolist()
            v = 0
            for r, off, i in zip(chunk, offsets, batch):
                for look in r.lookups:
                    lp = tuple(values[v : v + len(look)])
                    hits = tuple(best[off + s] == t for s, t in look)
                    row_scores[i].append(TargetScore(lp, hits))
                    v += len(look)
                if r.prompt in wanted:
                    hidden[r.prompt] = picked[off].float().cpu().numpy()
    finally:
        model.train(was_training)
    scores = [[row_scores[row_of[p]][row_targets[row_of[p]][t]] for t in ts] for p, ts in zip(prompts, targets)]
    return scores, hidden
