"""The sequential edit stream: which records a run edits, in which order.

A run's seed picks its stream: a seeded sample of `n_edits` records from the whole file,
so seeds differ in the facts they edit (the variation a confidence interval over seeds
should capture), while a fixed seed always gives the same stream. With `shuffle` off the
stream is the file's first `n_edits` records, in file order (the papers' protocol).
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def edit_stream(records: Sequence[T], n_edits: int, seed: int, shuffle: bool = True) -> list[T]:
    """The `n_edits` records a run with this seed edits, in editing order."""
    return [records[i] for i in _stream_indices(len(records), n_edits, seed, shuffle)]


def union_of_streams(records: Sequence[T], n_edits: int, seeds: Sequence[int], shuffle: bool = True) -> list[T]:
    """Every record some seed's stream edits, once, in file order (what the knowledge check covers)."""
    picked = sorted({i for seed in seeds for i in _stream_indices(len(records), n_edits, seed, shuffle)})
    return [records[i] for i in picked]


def _stream_indices(n_records: int, n_edits: int, seed: int, shuffle: bool) -> list[int]:
    if n_edits < 1:
        raise ValueError(f"run.n_edits must be >= 1, got {n_edits}")
    if n_edits > n_records:
        raise ValueError(f"run.n_edits ({n_edits}) exceeds the {n_records} records available")
    if not shuffle:
        return list(range(n_edits))
    # a string seed hashes the same in every process (unlike hash() of a str)
    return random.Random(f"edit-stream/{seed}").sample(range(n_records), n_edits)
