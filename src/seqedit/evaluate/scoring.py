"""Teacher-forced scoring of (prompt, target) pairs in padded batches: the reference scorer.

The CounterFact and ZsRE metrics use it with `reference=True` (by default they use
`packed.score_prompts`, which gives the same numbers from less work); `TargetScore` is the
result type of both. Each pair becomes one row of
`core.prompts.build_batch` (prompt ids + target ids, right-padded); one forward pass per
batch gives, for every target token, its log-probability and whether it is the argmax.

Rows are sorted by length before batching so that a batch holds rows of similar length
(less padding); results come back in the caller's order. Right padding with an attention
mask leaves the logits of real tokens unchanged, so batching does not change the numbers
beyond float round-off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm import tqdm

from seqedit.core.generate import model_device

from seqedit.core.prompts import PromptBatch, build_batch, target_logprobs


@dataclass(frozen=True)
class TargetScore:
    """Scores of one target continuation after one prompt (teacher-forced)."""

    token_logprobs: tuple[float, ...]  # log p(t_i | prompt, t_<i) per target token
    token_correct: tuple[bool, ...]  # t_i is the argmax at its position

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood of the target."""
        return -sum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def all_correct(self) -> bool:
        return all(self.token_correct)

    @property
    def accuracy(self) -> float:
        """Fraction of target tokens that are the argmax."""
        return sum(self.token_correct) / len(self.token_correct)


def _gather_target_logits(logits: torch.Tensor, batch: PromptBatch) -> tuple[torch.Tensor, PromptBatch]:
    """Keep only the positions that predict target tokens.

    Returns logits of shape (B, L, V), L = longest target, and a copy of `batch` whose
    `target_pos` index into that tensor, so `target_logprobs` runs its log-softmax over
    a few positions instead of the whole (B, T, V) tensor (large for a 128k vocabulary).
    """
    width = max(len(p) for p in batch.target_pos)
    pos = torch.zeros((len(batch.target_pos), width), dtype=torch.long)  # (B, L)
    for i, p in enumerate(batch.target_pos):
        pos[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    pos = pos.to(logits.device)
    index = pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # (B, L, V)
    small = torch.gather(logits, 1, index)  # (B, L, V)
    remapped = replace(batch, target_pos=[list(range(len(p))) for p in batch.target_pos])
    return small, remapped


@torch.no_grad()
def score_targets(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    targets: list[str],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "scoring",
) -> list[TargetScore]:
    """Teacher-forced log-probabilities and argmax hits of `targets[i]` after `prompts[i]`.

    `prompts` are plain text (no "{}"); `targets` are continuation texts, e.g. " Paris".
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = model_device(model)
    # Sort by a cheap length proxy (characters) so batches hold similar lengths.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(targets[i]))
    scores: list[TargetScore | None] = [None] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        rows = order[start : start + batch_size]
        batch = build_batch(tokenizer, [prompts[i] for i in rows], targets=[targets[i] for i in rows])
        batch.to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
        small, small_batch = _gather_target_logits(logits, batch)  # (B, L, V)
        # One device-to-host copy per batch: all rows' target log-probs, concatenated.
        flat = torch.cat(target_logprobs(small, small_batch)).cpu().tolist()  # sum of len_t floats
        argmax = small.argmax(dim=-1).cpu().tolist()  # (B, L)
        offset = 0
        for j, i in enumerate(rows):
            ids = small_batch.target_ids[j]
            hits = tuple(argmax[j][k] == t for k, t in enumerate(ids))
            scores[i] = TargetScore(tuple(flat[offset : offset + len(ids)]), hits)
            offset += len(ids)
    return scores  # type: ignore[return-value]
