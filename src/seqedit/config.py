"""Stage configs: the JSON files the workflow writes and the CLI reads (torch-free).

The workflow validates the user's config against `workflow/schemas/config.schema.yaml` and
writes, per stage, only the sections that stage needs; a stage reruns only when those
change. Here each section is turned into its dataclass; an unknown key is an error naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seqedit.data.texts import GeneratedTextConfig, TextDatasetConfig


def read_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    return data


def section(cfg: dict, name: str) -> dict:
    value = cfg.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"config section '{name}' must be a mapping, got {type(value).__name__}")
    return value


@dataclass
class ModelConfig:
    name: str = "testbed"
    path: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    allow_low_precision_edits: bool = False  # edit a float16/bfloat16 model (each round logs the rounding loss)


STATS_SOURCES = ("corpus", "dataset", "generated")


@dataclass
class StatsConfig:
    layers: list[int] | None = None
    n_samples: int = 20000
    max_length: int = 64
    batch_size: int = 64
    source: str = "corpus"  # corpus = the lines of --corpus; dataset = `dataset` via datasets.load_dataset
    dataset: TextDatasetConfig | dict | None = None  # None = TextDatasetConfig's defaults
    seed: int = 0
    generated: GeneratedTextConfig | dict | None = None  # source generated; None = GeneratedTextConfig's defaults
    convergence: bool | None = None  # C_{n/2} → C_n check; None = on for source generated only

    def __post_init__(self):
        for name in ("n_samples", "max_length", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"stats.{name} must be >= 1, got {getattr(self, name)}")
        if self.source not in STATS_SOURCES:
            raise ValueError(f"stats.source must be one of {list(STATS_SOURCES)}, got {self.source!r}")
        if not isinstance(self.dataset, TextDatasetConfig):
            if self.dataset is not None and not isinstance(self.dataset, dict):
                raise ValueError(f"stats.dataset must be a mapping, got {type(self.dataset).__name__}")
            self.dataset = build(TextDatasetConfig, self.dataset or {}, "stats.dataset")
        if not isinstance(self.generated, GeneratedTextConfig):
            if self.generated is not None and not isinstance(self.generated, dict):
                raise ValueError(f"stats.generated must be a mapping, got {type(self.generated).__name__}")
            self.generated = build(GeneratedTextConfig, self.generated or {}, "stats.generated")
        if self.convergence is None:
            self.convergence = self.source == "generated"


@dataclass
class KnowledgeCheckConfig:
    rewrite: float = 0.95
    paraphrase: float = 0.90
    neighborhood: float = 0.90

    def __post_init__(self):
        for name in ("rewrite", "paraphrase", "neighborhood"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"knowledge_check.{name} must be within [0, 1], got {getattr(self, name)}")


@dataclass
class MethodSpec:
    name: str
    hparams: dict = field(default_factory=dict)


def build(cls, values: dict, where: str):
    """Dataclass from a mapping; unknown keys raise ValueError naming them."""
    from seqedit.registry import build_config

    return build_config(cls, values, where)
