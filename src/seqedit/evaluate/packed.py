"""Teacher-forced scoring that shares the prompt: all targets of a prompt in one sequence.

`scoring.score_targets` (the reference) runs one row per (prompt, target) pair and takes
full-vocabulary logits at every position. Here each distinct prompt is one segment,

    prompt ids, then target_1 ids[:-1], then target_2 ids[:-1], ...

and several such segments are packed, end to end, into one row of at most `row_tokens`
tokens. The attention mask lets a token see only its own segment's prompt and the earlier
tokens of its own target, and position ids restart at 0 for every prompt and restart after
the prompt for every target. Every scored token therefore sees exactly the keys, values and
positions it sees in its own reference row, so the numbers are the reference's up to float
round-off (masked keys get a weight of exactly 0). A target's last token is never an input
(no later position reads it), and the first token of every target is predicted from one
position, the prompt's last token.

Only the model's trunk runs on the packed rows (`ModelSpec.trunk`: embeddings, blocks,
final norm); the unembedding (`ModelSpec.head`) and the log-softmax run only at the scored
positions. Packing leaves almost no padding, so a batch of `token_budget // row_tokens` rows
is a batch of about `token_budget` real tokens whatever the prompts' lengths.
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

DEFAULT_TOKEN_BUDGET = 4096  # tokens per forward pass
DEFAULT_ROW_TOKENS = 128  # tokens per packed row (a longer segment gets a row of its own)


@dataclass
class _Segment:
    """One distinct prompt and its targets, laid out as one run of tokens."""

    prompt: str
    ids: list[int]  # prompt ids + each target's ids but its last
    positions: list[int]  # position id of each token
    part: list[int]  # 0 for the prompt, k for target k (1-based)
    scored: list[int]  # indices into `ids` whose outputs are read (distinct)
    lookups: list[list[tuple[int, int]]]  # per target: (index into `scored`, token id) per target token


def _layout(prompt: str, prompt_ids: list[int], targets: list[list[int]]) -> _Segment:
    n = len(prompt_ids)
    if n == 0:
        raise ValueError(f"prompt {prompt!r} tokenises to nothing: no position predicts its targets")
    ids, positions, part = list(prompt_ids), list(range(n)), [0] * n
    scored, lookups = [n - 1], []  # every target's first token is read at the prompt's last token
    for k, t in enumerate(targets, start=1):
        look = [(0, t[0])]
        for m, tok in enumerate(t[:-1]):
            ids.append(tok)
            positions.append(n + m)
            part.append(k)
            scored.append(len(ids) - 1)
            look.append((len(scored) - 1, t[m + 1]))
        lookups.append(look)
    return _Segment(prompt, ids, positions, part, scored, lookups)


def _pack(segments: list[_Segment], row_tokens: int) -> list[list[int]]:
    """Segment indices per row: first fit, longest first, rows of at most `row_tokens` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(segments)), key=lambda i: (-len(segments[i].ids), i)):
        size = len(segments[i].ids)
        for r, free in enumerate(room):
            if size <= free:
                rows[r].append(i)
                room[r] -= size
                break
        else:
            rows.append([i])
            room.append(row_tokens - size)
    return rows


def _inputs(rows: list[list[_Segment]], pad_id: int, dtype: torch.dtype, device) -> dict:
    """input_ids, position_ids and the additive 4-D attention mask (B, 1, T, T) of packed rows."""
    width = max(sum(len(s.ids) for s in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)  # which segment of the row; -1: padding
    part = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : sum(len(s.ids) for s in row)] = torch.tensor([t for s in row for t in s.ids])
        pos[b, : sum(len(s.ids) for s in row)] = torch.tensor([p for s in row for p in s.positions])
        seg[b, : sum(len(s.ids) for s in row)] = torch.tensor([j for j, s in enumerate(row) for _ in s.ids])
        part[b, : sum(len(s.ids) for s in row)] = torch.tensor([k for s in row for k in s.part])
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = (seg.unsqueeze(2) == seg.unsqueeze(1)) & (seg.unsqueeze(1) >= 0)  # (B, T, T): query, key
    kq, kk = part.unsqueeze(2), part.unsqueeze(1)
    allowed = causal & same & ((kk == 0) | (kk == kq))
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
    row_tokens: int = DEFAULT_ROW_TOKENS,
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
    if token_budget < 1 or row_tokens < 1:
        raise ValueError(f"token_budget and row_tokens must be >= 1, got {token_budget} and {row_tokens}")
    missing = set(hidden_of) - set(prompts)
    if missing:
        raise ValueError(f"hidden states asked for {len(missing)} prompts that are not scored, "
                         f"e.g. {sorted(missing)[0]!r}")
    # One segment per distinct prompt, holding the distinct targets asked after it.
    seg_of: dict[str, int] = {}
    seg_targets: list[dict[str, int]] = []
    for p, ts in zip(prompts, targets):
        if p not in seg_of:
            seg_of[p] = len(seg_of)
            seg_targets.append({})
        for t in ts:
            seg_targets[seg_of[p]].setdefault(t, len(seg_targets[seg_of[p]]))
    target_ids = {t: encode_target(tokenizer, t) for ts in seg_targets for t in ts}
    segments = [_layout(p, encode(tokenizer, p), [target_ids[t] for t in ts]) for p, ts in zip(seg_of, seg_targets)]

    spec = spec_for(model)
    trunk, head = spec.trunk(model), spec.head(model)
    was_training = model.training
    model.eval()
    device = model_device(model)
    dtype = next(model.parameters()).dtype
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    row_tokens = min(row_tokens, token_budget)  # a row never holds more than a batch
    packed = _pack(segments, row_tokens)
    per_batch = max(1, token_budget // row_tokens)
    seg_scores: list[list[TargetScore]] = [[] for _ in segments]
    hidden: dict[str, np.ndarray] = {}
    wanted = set(hidden_of)
    try:
        for start in tqdm(range(0, len(packed), per_batch), desc=desc, disable=not progress):
            rows = [[segments[i] for i in row] for row in packed[start : start + per_batch]]
            inputs = _inputs(rows, pad if pad is not None else 0, dtype, device)
            states = trunk(**inputs, use_cache=False).last_hidden_state  # (B, T, d), final norm applied
            width = states.shape[1]
            # Flat index of every scored position; offsets[j]: where segment j's scored positions start.
            flat, offsets = [], []
            for b, row in enumerate(rows):
                at = b * width
                for sgm in row:
                    offsets.append(len(flat))
                    flat += [at + i for i in sgm.scored]
                    at += len(sgm.ids)
            picked = states.reshape(-1, states.shape[-1])[torch.tensor(flat, device=device)]  # (N, d)
            logp = torch.log_softmax(head(picked).float(), dim=-1)  # (N, V): only the scored positions
            best = logp.argmax(dim=-1).cpu().tolist()
            # Every (position, token) read in this batch, in one indexing and one copy.
            chunk = [i for row in packed[start : start + per_batch] for i in row]
            pairs = [(off + s, t) for i, off in zip(chunk, offsets) for look in segments[i].lookups for s, t in look]
            where = torch.tensor(pairs, device=device).T  # (2, n_pairs): scored row, token id
            values = logp[where[0], where[1]].cpu().tolist()
            v = 0
            for i, off in zip(chunk, offsets):
                sgm = segments[i]
                for look in sgm.lookups:
                    hits = tuple(best[off + s] == t for s, t in look)
                    seg_scores[i].append(TargetScore(tuple(values[v : v + len(look)]), hits))
                    v += len(look)
                if sgm.prompt in wanted:
                    hidden[sgm.prompt] = picked[off].float().cpu().numpy()
    finally:
        model.train(was_training)
    scores = [[seg_scores[seg_of[p]][seg_targets[seg_of[p]][t]] for t in ts] for p, ts in zip(prompts, targets)]
    return scores, hidden
