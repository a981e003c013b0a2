"""Layer statistics: the uncentred second moment C_l = E[k kᵀ] of each edited W_out's input.

One streamed pass over a text corpus collects every requested layer at once (one forward
per batch, hooks on all the W_out modules). Memory is one (d_ff × d_ff) accumulator per
layer, independent of the number of tokens. Padding tokens are excluded.
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from seqedit.core.hooks import capture
from seqedit.core.prompts import pad_batch
from seqedit.models.arch import ModelSpec


@dataclass
class LayerStats:
    """Σ k kᵀ and token count per layer; `cov(l)` is the mean E[k kᵀ]."""

    mom2: dict[int, torch.Tensor]  # layer -> (d_ff, d_ff) sum of outer products
    count: int
    meta: dict

    @property
    def layers(self) -> list[int]:
        return sorted(self.mom2)

    def cov(self, layer: int, dtype=torch.float64) -> torch.Tensor:
        if layer not in self.mom2:
            raise KeyError(f"no statistics for layer {layer}; the stats file has layers {self.layers}")
        return (self.mom2[layer] / self.count).to(dtype)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"mom2": self.mom2, "count": self.count, "meta": self.meta}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "LayerStats":
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"layer statistics file {path} does not exist") from None
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"layer statistics file {path} is unreadable ({first}); collect it again") from None
        if not isinstance(d, dict) or not {"mom2", "count", "meta"} <= set(d):
            raise ValueError(f"layer statistics file {path} holds no statistics (keys mom2, count, meta)")
        return cls(mom2=d["mom2"], count=int(d["count"]), meta=d["meta"])


def sample_texts(lines: list[str], n_samples: int, seed: int) -> list[str]:
    lines = [l for l in lines if l.strip()]
    if n_samples >= len(lines):
        return lines
    return random.Random(seed).sample(lines, n_samples)


@torch.no_grad()
def collect_second_moments(
    model,
    tokenizer,
    spec: ModelSpec,
    texts: list[str],
    layers: list[int],
    max_length: int = 64,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
    progress: bool = True,
) -> LayerStats:
    """One pass over `texts`, accumulating Σ k kᵀ for every layer in `layers`."""
    layers = sorted(set(int(l) for l in layers))
    spec.check_layers(model, layers)
    d_ff = spec.d_ff(model)
    device = next(model.parameters()).device
    acc = {l: torch.zeros(d_ff, d_ff, dtype=dtype, device=device) for l in layers}
    names = {spec.out_proj_name(l): l for l in layers}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    count = 0
    # Length-sorted batches waste less compute on padding.
    encoded = sorted((tokenizer(t)["input_ids"][:max_length] for t in texts), key=len)
    encoded = [e for e in encoded if e]
    starts = range(0, len(encoded), batch_size)
    for s in tqdm(starts, desc="layer stats", disable=not progress, mininterval=2.0):
        ids, mask = pad_batch(encoded[s : s + batch_size], pad)
        ids, mask = ids.to(device), mask.to(device)
        with capture(model, names, what="input") as seen:
            model(input_ids=ids, attention_mask=mask)
        keep = mask.bool()
        for name, layer in names.items():
            k = seen[name][keep].to(dtype)  # (n_tokens, d_ff)
            acc[layer].addmm_(k.T, k)
        count += int(keep.sum())
    meta = {"layers": layers, "n_texts": len(encoded), "max_length": max_length, "dtype": str(dtype)}
    return LayerStats(mom2={l: a.cpu() for l, a in acc.items()}, count=count, meta=meta)
