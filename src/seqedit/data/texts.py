"""Texts the layer statistics are collected over: the lines of a corpus file, a text dataset, or
the model's own generations.

The papers average E[k kᵀ] over 100,000 Wikipedia articles (`wikipedia` 20200501.en; wikitext
as an option). `TextDatasetConfig` names such a dataset the way `datasets.load_dataset` takes
it: a hub id (`wikitext`, `wikimedia/wikipedia`), a local folder, or a builder (`text`, `json`,
`parquet`) with `data_files`. With `streaming: true` only the texts used are read. Texts are a
seeded sample: a shuffle buffer over the stream, or seeded indices into a loaded split; empty
texts are skipped and do not count.

Without network access a hub dataset loads only from the local cache (a split prepared there is
read with `streaming: false`); otherwise the error is one line naming the dataset and what to do.

`generated` texts state none of the edited facts by construction: seeded samples of the model
itself, continued from a few neutral seed prompts (the empty prompt = BOS alone) with top-k and
nucleus sampling. The sample is a function of the model, the settings and the seed only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class TextDatasetConfig:
    path: str = "wikitext"
    name: str | None = "wikitext-103-raw-v1"
    split: str = "train"
    text_field: str = "text"
    streaming: bool = True
    data_files: str | list | dict | None = None
    shuffle_buffer: int = 10000

    def __post_init__(self):
        if not str(self.path).strip():
            raise ValueError("stats.dataset.path must name a dataset")
        if not str(self.text_field).strip():
            raise ValueError("stats.dataset.text_field must name the column holding the text")
        if int(self.shuffle_buffer) < 0:
            raise ValueError(f"stats.dataset.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")

    def describe(self) -> str:
        parts = [repr(self.path)] + ([f"name {self.name!r}"] if self.name else []) + [f"split {self.split!r}"]
        return ", ".join(parts)


@dataclass
class GeneratedTextConfig:
    prompts: list[str] | None = None  # seed prompts; None = GENERATION_PROMPTS; "" = BOS alone
    n_tokens: int = 64  # tokens sampled per text (fewer when it ends at EOS)
    top_k: int = 50  # 0 = no top-k cut
    top_p: float = 0.95  # nucleus; 1.0 = no cut
    temperature: float = 1.0
    batch_size: int = 32  # texts sampled together

    def __post_init__(self):
        if self.prompts is None:
            self.prompts = list(GENERATION_PROMPTS)
        if not self.prompts or not all(isinstance(p, str) for p in self.prompts):
            raise ValueError("stats.generated.prompts must be a non-empty list of strings")
        for name in ("n_tokens", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"stats.generated.{name} must be >= 1, got {getattr(self, name)}")
        if int(self.top_k) < 0:
            raise ValueError(f"stats.generated.top_k must be >= 0, got {self.top_k}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"stats.generated.top_p must be within (0, 1], got {self.top_p}")
        if float(self.temperature) <= 0.0:
            raise ValueError(f"stats.generated.temperature must be > 0, got {self.temperature}")


# Openings that name no entity and ask for no fact: the model writes what it likes.
GENERATION_PROMPTS = ("", "The", "In", "It is", "This is", "When", "There are", "One of the")


def corpus_texts(path: str | Path, n_samples: int, seed: int) -> list[str]:
    """A seeded sample of `n_samples` non-empty lines of a corpus file (all of them if fewer),
    escaped newlines undone."""
    from seqedit.core.stats import sample_texts
    from seqedit.data.corpus import read_corpus

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    return sample_texts(read_corpus(path), n_samples, seed)


def open_dataset(cfg: TextDatasetConfig):
    """The split `cfg` names, via `datasets.load_dataset`; a failure is one OSError line."""
    import datasets
    from huggingface_hub.utils import logging as hub_logging

    datasets.logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # no "Retrying in 8s" lines before the one error line
    try:
        return datasets.load_dataset(cfg.path, cfg.name, split=cfg.split, data_files=cfg.data_files,
                                     streaming=cfg.streaming)
    except Exception as err:  # noqa: BLE001  (connection, missing config or split, bad files: all end here)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = "offline (HF_HUB_OFFLINE set)" if datasets.config.HF_HUB_OFFLINE else "without network access"
        raise OSError(f"cannot load the text dataset {cfg.describe()}: {reason}; {where} a hub dataset loads only "
                      f"from the local cache ({datasets.config.HF_DATASETS_CACHE}; streaming: false reads a split "
                      "prepared there): download it where the hub is reachable, or set stats.dataset.path to a "
                      "local folder or to a 'text'/'json' builder with data_files") from None


def dataset_texts(cfg: TextDatasetConfig, n_samples: int, seed: int) -> Iterator[str]:
    """Up to `n_samples` non-empty texts of the dataset in a seeded order, read lazily.

    The dataset is opened here, so a missing one fails before anything else is loaded.
    """
    ds = open_dataset(cfg)
    if cfg.streaming:
        if cfg.shuffle_buffer > 0:
            ds = ds.shuffle(seed=seed, buffer_size=cfg.shuffle_buffer)
        rows = iter(ds)
    else:
        order = list(range(len(ds)))
        random.Random(seed).shuffle(order)
        rows = (ds[i] for i in order)
    return _non_empty(rows, cfg, n_samples)


def _non_empty(rows, cfg: TextDatasetConfig, n_samples: int) -> Iterator[str]:
    n = 0
    for index, row in enumerate(rows):
        if cfg.text_field not in row:
            raise ValueError(f"text dataset {cfg.describe()} has no column {cfg.text_field!r} "
                           f"(row {index} has {sorted(row)}); set stats.dataset.text_field")
        text = row[cfg.text_field]
        if isinstance(text, str) and text.strip():
            yield text
            n += 1
            if n >= n_samples:
                return


def _filter_logits(logits: "torch.Tensor", top_k: int, top_p: float) -> "torch.Tensor":
    """Logits outside the top k, or outside the smallest set of probability >= top_p, set to -inf."""
    import torch

    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # tokens after the mass already reached top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def generated_texts(model, tokenizer, cfg: GeneratedTextConfig, n_samples: int, seed: int,
                    progress: bool = True) -> list[str]:
    """`n_samples` texts the model writes itself: sample i continues prompt i mod len(prompts).

    Each batch holds texts of one prompt (no padding) and draws from its own generator seeded by
    (seed, batch), so the sample does not depend on the device's global random state. A text ends
    at `n_tokens` sampled tokens or at EOS; it is returned with its prompt, special tokens removed.
    """
    import torch
    from tqdm import tqdm

    if int(n_samples) < 1:
        raise ValueError(f"the number of generated texts must be >= 1, got {n_samples}")
    device = next(model.parameters()).device
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    jobs = []  # (prompt index, number of texts) per batch
    for p in range(len(cfg.prompts)):
        count = len(range(p, n_samples, len(cfg.prompts)))
        jobs += [(p, min(cfg.batch_size, count - s)) for s in range(0, count, cfg.batch_size)]
    texts: dict[int, list[str]] = {p: [] for p in range(len(cfg.prompts))}
    bar = tqdm(total=n_samples, desc="generating texts", unit="text", disable=not progress, mininterval=2.0)
    for b, (p, rows) in enumerate(jobs):
        ids = (tokenizer(cfg.prompts[p])["input_ids"] if cfg.prompts[p] else []) or [start]
        g = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + b)
        out = _sample(model, torch.tensor([ids] * rows, device=device), cfg, g, eos)
        texts[p] += tokenizer.batch_decode(out, skip_special_tokens=True)
        bar.update(rows)
    bar.close()
    # sample i is the (i // n_prompts)-th text of prompt i mod n_prompts
    return [texts[i % len(cfg.prompts)][i // len(cfg.prompts)] for i in range(n_samples)]


def _sample(model, ids, cfg: GeneratedTextConfig, generator, eos: int | None):
    """`cfg.n_tokens` sampled continuations of `ids` (rows of one prompt), with the key/value cache;
    a row that has sampled EOS keeps EOS."""
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        seq, done = ids, torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(cfg.n_tokens):
            logits = _filter_logits(out.logits[:, -1].float() / cfg.temperature, cfg.top_k, cfg.top_p)
            probs = logits.softmax(-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator).to(ids.device)
            if eos is not None:
                nxt = torch.where(done[:, None], torch.full_like(nxt, eos), nxt)
                done |= nxt[:, 0] == eos
            seq = torch.cat([seq, nxt], dim=1)
            if eos is not None and bool(done.all()):
                break
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
    return seq
