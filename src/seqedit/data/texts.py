"""Texts the layer statistics are collected over: the lines of a corpus file, or a text dataset.

The papers average E[k kᵀ] over 100,000 Wikipedia articles (`wikipedia` 20200501.en; wikitext
as an option). `TextDatasetConfig` names such a dataset the way `datasets.load_dataset` takes
it: a hub id (`wikitext`, `wikimedia/wikipedia`), a local folder, or a builder (`text`, `json`,
`parquet`) with `data_files`. With `streaming: true` only the texts used are read. Texts are a
seeded sample: a shuffle buffer over the stream, or seeded indices into a loaded split; empty
texts are skipped and do not count.

Without network access a hub dataset loads only from the local cache (a split prepared there is
read with `streaming: false`); otherwise the error is one line naming the dataset and what to do.
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
