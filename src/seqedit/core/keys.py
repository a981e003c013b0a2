"""Keys and hidden states at the subject's last token.

- `collect_keys`: the input of W_out (the FFN activation, d_ff) at the subject-last token,
  averaged over the context templates of each group, then over the group means
  (k = ½·k("{}") + ½·mean_i k(g_i ". {}") with the default two groups).
- `hidden_at_subject`: the residual-stream output of a block for the plain prompt, used for
  the residual z − h in the layer-spreading loop.

Both run every prompt of every request in one padded batch (chunked), one forward per chunk
for all requested layers, and each forward stops once the deepest module read has run: no
block above it and no unembedding is computed.
"""

from __future__ import annotations

import torch

from seqedit.core.hooks import capture, stop_after
from seqedit.core.prompts import build_batch
from seqedit.core.templates import fill_context
from seqedit.data.records import EditRequest
from seqedit.models.arch import ModelSpec


@torch.no_grad()
def _at_subject(model, tokenizer, module_names: list[str], what: str, prompts, subjects, chunk: int = 256):
    """For each module: (n_prompts, dim) of its input/output at each prompt's subject-last token."""
    device = next(model.parameters()).device
    out = {n: [] for n in module_names}
    for s in range(0, len(prompts), chunk):
        batch = build_batch(tokenizer, prompts[s : s + chunk], subjects[s : s + chunk]).to(device)
        rows = torch.arange(len(batch.subject_idx), device=device)
        pos = torch.tensor(batch.subject_idx, device=device)
        with capture(model, module_names, what=what) as seen, stop_after(model, module_names):
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        for n in module_names:
            out[n].append(seen[n][rows, pos])
    return {n: torch.cat(v) for n, v in out.items()}


def collect_keys(
    model, tokenizer, spec: ModelSpec, layers: list[int], requests: list[EditRequest], templates: list[list[str]]
) -> dict[int, torch.Tensor]:
    """layer -> keys (d_ff, n_requests), context-averaged."""
    prompts, subjects = [], []
    for group in templates:
        for ctx in group:
            for r in requests:
                prompts.append(fill_context(ctx, r.prompt))
                subjects.append(r.subject)
    names = [spec.out_proj_name(l) for l in layers]
    reps = _at_subject(model, tokenizer, names, "input", prompts, subjects)
    n = len(requests)
    keys = {}
    for l, name in zip(layers, names):
        flat = reps[name]  # (n_ctx_total * n, d_ff), context-major
        group_means, start = [], 0
        for group in templates:
            block = flat[start * n : (start + len(group)) * n].reshape(len(group), n, -1)
            group_means.append(block.mean(0))
            start += len(group)
        keys[l] = torch.stack(group_means).mean(0).T  # (d_ff, n)
    return keys


def hidden_at_subject(model, tokenizer, spec: ModelSpec, layer: int, requests: list[EditRequest]) -> torch.Tensor:
    """Block `layer` output at the subject-last token of each plain prompt: (d_model, n)."""
    name = spec.block_name(layer)
    reps = _at_subject(model, tokenizer, [name], "output", [r.prompt for r in requests], [r.subject for r in requests])
    return reps[name].T
