"""Generation-based success: the model must produce the answer itself, no target given.

Teacher-forced scores compare the probabilities of two given continuations, which can
flatter an editor (Yang et al., "The Mirage of Model Editing", ACL 2025). Here each prompt
is continued greedily and the continuation's text is compared with the object:

- CounterFact: the rewrite and paraphrase prompts succeed when the continuation begins with
  `target_new`, the neighbourhood prompts when it begins with `target_true`. Each prompt is
  continued by (longest of its targets' token counts) + 1 tokens, so a word that only starts
  like the target ("Parisian" for "Paris") is seen to go on.
- ZsRE: exact match: the greedy answer of exactly the answer's token count equals the answer
  (rewrite and paraphrases against `target_new`, the NQ question against its gold answer).

Comparison is at the word level after normalisation: case folded, punctuation and runs of
whitespace dropped (`words`). "Paris" therefore matches "Paris, France" and " paris" but not
"Parisian".

Greedy decoding runs in left-padded batches with a KV cache: positions count real tokens only
(`position_ids` from the attention mask), so a row's continuation is the one it has alone up to
float round-off. Rows are sorted by length, so a batch carries little padding.

Summary: `efficacy_gen`, `generalization_gen`, `specificity_gen` (×100, mean over records of
each record's mean over its prompts of that kind) and `n_records_gen`.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from seqedit.core.generate import model_device
from seqedit.core.prompts import encode, encode_target
from seqedit.data.records import EditRecord

SUMMARY_KEYS = {"efficacy_gen": "rewrite_gen", "generalization_gen": "paraphrase_gen",
                "specificity_gen": "neighborhood_gen"}

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words of `text`, case folded; punctuation and whitespace separate words and are dropped."""
    return _WORD.findall(text.casefold())


def begins_with(continuation: str, target: str) -> bool:
    """Whether the words of `continuation` start with all the words of `target`."""
    t = words(target)
    if not t:
        raise ValueError(f"target {target!r} has no words to compare")
    return words(continuation)[: len(t)] == t


def exact_match(answer: str, target: str) -> bool:
    """Whether `answer` and `target` have the same words."""
    t = words(target)
    if not t:
        raise ValueError(f"target {target!r} has no words to compare")
    return words(answer) == t


def _pad_id(tokenizer) -> int:
    for pid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if pid is not None:
            return int(pid)
    return 0


@torch.no_grad()
def greedy_continuations(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    n_new: Sequence[int] | int,
    batch_size: int = 32,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy token ids continuing each prompt, `n_new[i]` of them (or `n_new` for all).

    Generation does not stop at EOS, so every row gets exactly its count.
    """
    n = [int(n_new)] * len(prompts) if isinstance(n_new, int) else [int(k) for k in n_new]
    if len(n) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(n)} token counts")
    if any(k < 1 for k in n):
        raise ValueError("every prompt needs at least 1 new token")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = model_device(model)
    encoded = [encode(tokenizer, p) for p in prompts]
    if any(not ids for ids in encoded):
        raise ValueError("a prompt tokenises to nothing; greedy continuation needs at least one token")
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    pad = _pad_id(tokenizer)
    out: list[list[int] | None] = [None] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc="greedy", disable=not progress):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T) left-padded
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for j, i in enumerate(rows):
            ids[j, width - len(encoded[i]):] = torch.tensor(encoded[i], dtype=torch.long)
            mask[j, width - len(encoded[i]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): real tokens at 0..len-1
        steps = max(n[i] for i in rows)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        new = []
        for step in range(steps):
            nxt = res.logits[:, -1, :].argmax(dim=-1)  # (B,)
            new.append(nxt)
            if step + 1 < steps:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, T + step + 1)
                pos = pos[:, -1:] + 1  # (B, 1)
                res = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                            past_key_values=res.past_key_values, use_cache=True)
        tokens = torch.stack(new, dim=1).cpu().tolist()  # (B, steps)
        for j, i in enumerate(rows):
            out[i] = tokens[j][: n[i]]
    return out  # type: ignore[return-value]


def _rows(record: EditRecord, tokenizer) -> list[tuple[str, str, str, int]]:
    """(kind, prompt, target text, new tokens) for each prompt of a record."""
    req = record.request
    if record.kind == "counterfact":
        if req.true_text is None:
            raise ValueError(f"case {record.case_id}: CounterFact generation needs a true target (target_true is None)")
        n = max(len(encode_target(tokenizer, req.new_text)), len(encode_target(tokenizer, req.true_text))) + 1
        rows = [("rewrite", req.query, req.new_text, n)]
        rows += [("paraphrase", p, req.new_text, n) for p in record.paraphrase_prompts]
        rows += [("neighborhood", p, req.true_text, n) for p in record.neighborhood_prompts]
        return rows
    if record.kind == "zsre":
        n = len(encode_target(tokenizer, req.new_text))
        rows = [("rewrite", req.query, req.new_text, n)]
        rows += [("paraphrase", p, req.new_text, n) for p in record.paraphrase_prompts]
        if record.neighborhood_prompts:
            if record.neighborhood_answer is None:
                raise ValueError(f"case {record.case_id}: ZsRE record has a neighborhood prompt but no neighborhood_answer")
            answer = " " + record.neighborhood_answer
            rows.append(("neighborhood", record.neighborhood_prompts[0], answer, len(encode_target(tokenizer, answer))))
        return rows
    raise ValueError(f"unknown record kind {record.kind!r}; expected 'counterfact' or 'zsre'")


def evaluate_generation(
    model: nn.Module,
    tokenizer,
    records: Sequence[EditRecord],
    batch_size: int = 32,
    progress: bool = False,
) -> dict:
    """Generation-based success of `model` on `records` (one kind): {"summary": {...}, "per_record": [...]}.

    Per-record entries hold `case_id`, `rewrite_gen`, `paraphrase_gen`, `neighborhood_gen`
    (fractions in [0, 1], None without prompts of that kind) and the decoded continuations
    (`continuations`: kind -> list of texts).
    """
    if not records:
        raise ValueError("evaluate_generation got no records")
    kinds = sorted({r.kind for r in records})
    if len(kinds) > 1:
        raise ValueError(f"records mix kinds {kinds}; evaluate each kind separately")
    match = begins_with if kinds[0] == "counterfact" else exact_match
    flat = [(ri, *row) for ri, r in enumerate(records) for row in _rows(r, tokenizer)]
    ids = greedy_continuations(model, tokenizer, [f[2] for f in flat], [f[4] for f in flat], batch_size, progress)
    hits: list[dict[str, list[int]]] = [{"rewrite": [], "paraphrase": [], "neighborhood": []} for _ in records]
    texts: list[dict[str, list[str]]] = [{"rewrite": [], "paraphrase": [], "neighborhood": []} for _ in records]
    for (ri, kind, _, target, _), tok_ids in zip(flat, ids):
        text = tokenizer.decode(tok_ids, skip_special_tokens=True)
        hits[ri][kind].append(int(match(text, target)))
        texts[ri][kind].append(text)
    per_record = []
    for r, h, t in zip(records, hits, texts):
        entry: dict = {"case_id": r.case_id}
        for kind, values in h.items():
            entry[f"{kind}_gen"] = sum(values) / len(values) if values else None
        entry["continuations"] = t
        per_record.append(entry)
    summary: dict = {}
    for name, key in SUMMARY_KEYS.items():
        values = [e[key] for e in per_record if e[key] is not None]
        summary[name] = 100.0 * sum(values) / len(values) if values else None
    summary["n_records_gen"] = len(per_record)
    return {"summary": summary, "per_record": per_record}
