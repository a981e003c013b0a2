"""Hidden-state probe: where the model puts facts in representation space, before and after.

For the AlphaEdit/NSE "distribution shift" figure: the final layer's hidden state at the last
token of each record's own prompt (the edited fact) and of its first neighbourhood prompt
(an unrelated fact that should not move). Taken once on the unedited model and once at the
end of a run, on the same records, so the two clouds are directly comparable. The CounterFact
and ZsRE evaluations score these prompts anyway and can return the same states from their own
forward passes (`hidden_probe`); `hidden_states` runs them on their own.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from seqedit.core.prompts import encode, pad_batch
from seqedit.data.records import EditRecord

PROBES = ("rewrite", "neighborhood")


def hidden_probe_prompts(record: EditRecord) -> tuple[str, str]:
    """The probe prompts of one record, in PROBES order: its rewrite query and its first
    neighbourhood prompt (the rewrite query again when it has none)."""
    query = record.request.query
    return query, record.neighborhood_prompts[0] if record.neighborhood_prompts else query


def _prompts(records: Sequence[EditRecord]) -> dict[str, list[str]]:
    pairs = [hidden_probe_prompts(r) for r in records]
    return {name: [pair[k] for pair in pairs] for k, name in enumerate(PROBES)}


@torch.no_grad()
def last_token_states(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(len(texts), d_model) float32: the last layer's hidden state at each text's last token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(texts), batch_size):
        rows = [encode(tokenizer, t) for t in texts[s : s + batch_size]]
        ids, mask = pad_batch(rows, pad)
        hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states[-1]
        last = torch.tensor([len(r) - 1 for r in rows], device=hidden.device)
        out.append(hidden[torch.arange(len(rows), device=hidden.device), last].float().cpu())
    return torch.cat(out).numpy()


def hidden_states(model, tokenizer, records: Sequence[EditRecord], batch_size: int = 64) -> dict[str, np.ndarray]:
    """{probe: (n_records, d_model)} for each probe in PROBES."""
    was_training = model.training
    model.eval()
    try:
        return {name: last_token_states(model, tokenizer, texts, batch_size) for name, texts in _prompts(records).items()}
    finally:
        model.train(was_training)
