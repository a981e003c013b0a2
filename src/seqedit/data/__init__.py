"""Data layer: benchmark loaders (CounterFact, ZsRE) and the seeded synthetic world.

`load_records(path, kind)` turns a real or synthetic benchmark file into `EditRecord`s (kinds:
CounterFact in ROME's form, ZsRE in MEND's, CounterFact in EasyEdit's reduced form);
`write_world(WorldConfig(...), out_dir)` writes the synthetic world's three files. For real
files: `subset.write_subset` (the records a study uses), `corpus.write_records_corpus` (the
corpus of their true facts), `fetch.fetch` (a checked download).
"""

from __future__ import annotations

from pathlib import Path

from seqedit.data.counterfact import load_counterfact
from seqedit.data.counterfact_easyedit import load_counterfact_easyedit, read_easyedit_raws
from seqedit.data.records import EditRecord, EditRequest, RecordError
from seqedit.data.relations import RELATIONS, Relation
from seqedit.data.world import WORLD_FILES, World, WorldConfig, generate_world, write_world
from seqedit.data.validation import read_record_list
from seqedit.data.zsre import load_zsre

DATASET_KINDS = ("counterfact", "zsre", "counterfact_easyedit")


def load_records(path: str | Path, kind: str, limit: int | None = None) -> list[EditRecord]:
    """Load a benchmark file of the given schema `kind` (one of DATASET_KINDS)."""
    if kind == "counterfact":
        return load_counterfact(path, limit)
    if kind == "counterfact_easyedit":
        return load_counterfact_easyedit(path, limit)
    if kind == "zsre":
        return load_zsre(path, limit)
    raise ValueError(f"unknown dataset kind {kind!r}; choose one of {list(DATASET_KINDS)}")


def read_raw_records(path: str | Path, kind: str) -> list:
    """The records of a benchmark file (or EasyEdit CounterFact folder) as raw JSON objects, in
    the order `load_records` parses them."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {list(DATASET_KINDS)}")
    if kind == "counterfact_easyedit":
        return read_easyedit_raws(path)
    return read_record_list(path)


__all__ = [
    "DATASET_KINDS", "EditRecord", "EditRequest", "RELATIONS", "RecordError", "Relation", "WORLD_FILES",
    "World", "WorldConfig", "generate_world", "load_counterfact", "load_counterfact_easyedit",
    "load_records", "read_raw_records", "load_zsre", "write_world",
]
