"""Top-k sampling with an explicit `torch.Generator`, so every sample is reproducible.

Used for context templates (core/templates.py) and for fluency (evaluate/fluency.py).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device




def _sample_top_k(logits: torch.Tensor, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """One token per row from the renormalised top-k of `logits` (B, V) -> (B,)."""
    values, indices = torch.topk(logits.float(), min(top_k, logits.shape[-1]), dim=-1)  # (B, k)
    probs = torch.softmax(values, dim=-1)  # (B, k)
    # Draw on the generator's device so a CPU generator also drives a GPU model.
    choice = torch.multinomial(probs.to(generator.device), 1, generator=generator)  # (B, 1)
    return indices.gather(1, choice.to(indices.device)).squeeze(1)  # (B,)


@torch.no_grad()
def _continue(model: nn.Module, input_ids: torch.Tensor, n_new: int, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """Append `n_new` sampled tokens to equal-length rows `input_ids` (B, T) using the KV cache."""
    out = model(input_ids=input_ids, use_cache=True)
    tokens = [input_ids]
    for step in range(n_new):
        nxt = _sample_top_k(out.logits[:, -1, :], top_k, generator)  # (B,)
        tokens.append(nxt[:, None])  # (B, 1)
        if step + 1 < n_new:
            out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(tokens, dim=1)  # (B, T + n_new)


def generate(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    max_length: int,
    top_k: int = 5,
    generator: torch.Generator | None = None,
    batch_size: int = 16,
) -> list[str]:
    """Continue each prompt by top-k sampling to `max_length` tokens in total (prompt included).

    Prompts are grouped by token length, so a batch needs no padding and every layout
    (absolute positions in GPT-2, rotary in GPT-J/Llama, a BOS for Llama) sees exactly the
    input it would see alone. Groups run in order of length, prompts within a group in
    input order, so the texts depend only on the prompts, `batch_size` and the generator's
    state. Generation does not stop at EOS (as in ROME's `generate_fast`); special tokens
    are dropped when decoding. A prompt already `max_length` tokens long is returned as is.
    """
    if generator is None:
        raise ValueError("generate needs an explicit torch.Generator (no global RNG)")
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be >= 1, got {top_k} and {batch_size}")
    model.eval()
    device = model_device(model)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)

    texts: list[str | None] = [None] * len(prompts)
    for length in sorted(groups):
        members = groups[length]
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            input_ids = torch.tensor([encoded[i] for i in rows], dtype=torch.long, device=device)  # (B, T)
            out_ids = _continue(model, input_ids, max(0, max_length - length), top_k, generator)  # (B, max_length)
            for j, i in enumerate(rows):
                texts[i] = tokenizer.decode(out_ids[j].tolist(), skip_special_tokens=True)
    return texts  # type: ignore[return-value]
