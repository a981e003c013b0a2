"""Layer statistics: the uncentred second moment C_l = E[k kᵀ] of each edited W_out's input.

One streamed pass over a text corpus or dataset (`seqedit.data.texts`) collects every
requested layer at once (one forward per batch, hooks on all the W_out modules; the forward
stops once the deepest of them has run, so no later block and no unembedding runs). Memory is
one (d_ff × d_ff) accumulator per layer, independent of the number of tokens, plus the token
ids of one chunk of texts. Padding tokens are excluded.

With `half` set, the first `half` texts are collected first (length-sorted among themselves), the
sums are copied aside, and the rest follow: C_{n/2} is then the statistic of the first half of the
sample and C_n that of all of it, and the relative change ‖C_n − C_{n/2}‖_F / ‖C_n‖_F per layer,
written in `meta["convergence"]`, says whether n texts are enough (a small change: the estimate
has settled).

`meta["tokens_sha256"]` names the token sample itself: the sha256 of the sorted sha256s of its
rows (token ids as read, after the cut at max_length), so it does not depend on the order or the
batches the texts were read in. Two machines that read the same texts agree on it exactly, though
their sums differ by float rounding.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from tqdm import tqdm

from seqedit.core.hooks import capture, stop_after
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


def _length_sorted_chunks(tokenizer, texts: Iterable[str], max_length: int, chunk: int) -> Iterator[list[list[int]]]:
    """Token ids of `texts` (cut at max_length, empty ones dropped), `chunk` texts at a time, each
    chunk sorted by length: batches of similar length waste less compute on padding, and only one
    chunk of token ids is held at a time however many texts stream in."""
    pending: list[list[int]] = []
    for text in texts:
        ids = tokenizer(text)["input_ids"][:max_length]
        if ids:
            pending.append(ids)
        if len(pending) >= chunk:
            yield sorted(pending, key=len)
            pending = []
    if pending:
        yield sorted(pending, key=len)


@torch.no_grad()
def collect_second_moments(
    model,
    tokenizer,
    spec: ModelSpec,
    texts: Iterable[str],
    layers: list[int],
    max_length: int = 64,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
    progress: bool = True,
    chunk_batches: int = 256,
    half: int | None = None,
) -> LayerStats:
    """One pass over `texts` (a list or a lazy stream), accumulating Σ k kᵀ for every layer in `layers`.

    Texts are tokenized and length-sorted `chunk_batches` batches at a time. `half`: also measure
    the convergence from the first `half` texts to all of them (see the module's docstring).
    """
    if half is not None and int(half) < 1:
        raise ValueError(f"the first part of the convergence check needs >= 1 text, got {half}")
    layers = sorted(set(int(l) for l in layers))
    spec.check_layers(model, layers)
    d_ff = spec.d_ff(model)
    device = next(model.parameters()).device
    acc = {l: torch.zeros(d_ff, d_ff, dtype=dtype, device=device) for l in layers}
    names = {spec.out_proj_name(l): l for l in layers}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    count = n_texts = 0
    row_digests: list[bytes] = []
    total = len(texts) if hasattr(texts, "__len__") else None
    bar = tqdm(total=total, desc="layer stats", unit="text", disable=not progress, mininterval=2.0)
    stream = iter(texts)
    parts = [stream] if half is None else [itertools.islice(stream, int(half)), stream]
    first_part = None
    for part in parts:
        for encoded in _length_sorted_chunks(tokenizer, part, max_length, chunk_batches * batch_size):
            for s in range(0, len(encoded), batch_size):
                rows = encoded[s : s + batch_size]
                row_digests += [hashlib.sha256(repr(row).encode()).digest() for row in rows]
                ids, mask = pad_batch(rows, pad)
                ids, mask = ids.to(device), mask.to(device)
                with capture(model, names, what="input") as seen, stop_after(model, names):
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                keep = mask.bool()
                for name, layer in names.items():
                    k = seen[name][keep].to(dtype)  # (n_tokens, d_ff)
                    acc[layer].addmm_(k.T, k)
                count += int(keep.sum())
                n_texts += len(rows)
                bar.update(len(rows))
        if first_part is None and half is not None:
            first_part = ({l: a.cpu().clone() for l, a in acc.items()}, count, n_texts)
    bar.close()
    if n_texts == 0:
        raise ValueError("no non-empty text to collect layer statistics over")
    meta = {"layers": layers, "n_texts": n_texts, "max_length": max_length, "dtype": str(dtype),
            "tokens_sha256": hashlib.sha256(b"".join(sorted(row_digests))).hexdigest()}
    mom2 = {l: a.cpu() for l, a in acc.items()}
    if first_part is not None:
        meta["convergence"] = convergence(mom2, count, n_texts, *first_part)
    return LayerStats(mom2=mom2, count=count, meta=meta)


def convergence(mom2: dict, count: int, n_texts: int, mom2_half: dict, count_half: int, n_half: int) -> dict:
    """‖C_n − C_{n/2}‖_F / ‖C_n‖_F per layer, C = Σ k kᵀ / tokens, with the counts of both samples."""
    if count_half == 0:
        raise ValueError("the first part of the convergence check holds no token")
    change = {}
    for layer, total in mom2.items():
        c_n = total.double() / count
        c_half = mom2_half[layer].double() / count_half
        change[int(layer)] = float(torch.linalg.matrix_norm(c_n - c_half) / torch.linalg.matrix_norm(c_n))
    return {"n_texts": n_texts, "n_texts_half": n_half, "tokens": count, "tokens_half": count_half,
            "relative_change": change, "max_relative_change": max(change.values())}
