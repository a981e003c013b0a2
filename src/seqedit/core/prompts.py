"""Tokenising prompts with a subject in them, and padded batches of prompt + target.

A `PromptBatch` holds right-padded input ids (right padding keeps absolute and rotary
positions of real tokens unchanged), the index of the subject's last token in each row,
and, when targets are given, the positions whose logits predict each target token.

Prompt and target are tokenised separately and concatenated as ids, so a target's tokens
are the same whatever prompt precedes it (no BPE merge across the boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def fill_subject(template: str, subject: str) -> tuple[str, tuple[int, int]]:
    """Put `subject` into the single "{}" of `template`; return text and its char span."""
    i = template.find("{}")
    if i < 0:
        raise ValueError(f"template has no '{{}}' placeholder: {template!r}")
    text = template[:i] + subject + template[i + 2 :]
    return text, (i, i + len(subject))


def encode(tokenizer, text: str, add_special_tokens: bool = True) -> list[int]:
    return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]


def encode_target(tokenizer, target_text: str) -> list[int]:
    """Token ids of a continuation (e.g. " Paris"), never with BOS/EOS added."""
    ids = encode(tokenizer, target_text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"target {target_text!r} tokenises to nothing")
    return ids


def subject_last_token(tokenizer, template: str, subject: str) -> tuple[list[int], int]:
    """Ids of `template` filled with `subject`, and the index of the subject's last token."""
    text, (start, end) = fill_subject(template, subject)
    enc = tokenizer(text, return_offsets_mapping=True)
    last = None
    for idx, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and a < end and b > start:
            last = idx
    if last is None:
        raise ValueError(f"subject {subject!r} not found among the tokens of {text!r}")
    return enc["input_ids"], last


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    lengths: list[int]  # real length of each row
    subject_idx: list[int | None]  # subject-last token index per row (None if no subject)
    target_pos: list[list[int]]  # per row: positions whose logits predict each target token
    target_ids: list[list[int]]  # per row: the target token ids

    def to(self, device) -> "PromptBatch":
        self.input_ids = self.input_ids.to(device)
        self.attention_mask = self.attention_mask.to(device)
        return self


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def build_batch(
    tokenizer,
    prompts: list[str],
    subjects: list[str | None] | None = None,
    targets: list[str | None] | None = None,
    teacher_force_all: bool = True,
) -> PromptBatch:
    """Batch of prompts (templates with "{}" when a subject is given, plain text otherwise).

    With a target, the row is prompt ids + target ids (all target tokens teacher-forced when
    `teacher_force_all`, else all but the last, as in ROME's z-optimisation prompts).
    """
    n = len(prompts)
    subjects = subjects or [None] * n
    targets = targets or [None] * n
    rows, subj_idx, tpos, tids = [], [], [], []
    for prompt, subject, target in zip(prompts, subjects, targets):
        if subject is not None:
            ids, last = subject_last_token(tokenizer, prompt, subject)
        else:
            ids, last = encode(tokenizer, prompt), None
        t_ids = encode_target(tokenizer, target) if target is not None else []
        fed = t_ids if teacher_force_all else t_ids[:-1]
        row = list(ids) + list(fed)
        rows.append(row)
        subj_idx.append(last)
        tpos.append([len(ids) - 1 + j for j in range(len(t_ids))])
        tids.append(t_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, mask = pad_batch(rows, pad_id if pad_id is not None else 0)
    return PromptBatch(input_ids, mask, [len(r) for r in rows], subj_idx, tpos, tids)


def target_logprobs(logits: torch.Tensor, batch: PromptBatch) -> list[torch.Tensor]:
    """Per row, log p(target_t | prefix) for each target token: list of (len_t,) tensors."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, (pos, ids) in enumerate(zip(batch.target_pos, batch.target_ids)):
        if not ids:
            out.append(logp.new_zeros(0))
            continue
        p = torch.tensor(pos, device=logits.device)
        t = torch.tensor(ids, device=logits.device)
        out.append(logp[i, p, t])
    return out
