"""Consistency (ROME's reference score): TF-IDF cosine of a record's generations and texts about its new object.

Design notes §5.1, generation metrics. For a CounterFact record with relation r and new object o,
the texts generated from its generation prompts are joined into one text A, the reference
texts for (r, o) (other subjects that have o for r) into one text B, and

    consistency = 100 · cos(tfidf(A), tfidf(B)),

averaged over the records that have reference texts.

TF-IDF follows sklearn's `TfidfVectorizer` with its defaults (written here; sklearn is not a
dependency): lower-case, tokens r"(?u)\\b\\w\\w+\\b", tf = raw counts, tf-idf = tf · idf over a
fixed vocabulary (other terms dropped), L2-normalised. A fitted idf is sklearn's smoothed one,
idf(t) = ln((1 + n) / (1 + df(t))) + 1 over n documents, with the vocabulary sorted.

Where the reference texts and the idf come from (`evaluation.consistency`), recorded in the
summary as `consistency_source`:

- ``configured``: `snippets` (ROME's attribute_snippets.json: a list of {relation_id,
  target_id, samples: [{name, text}]}), `idf` (idf.npy) and `vocab` (tfidf_vocab.json,
  {term: index}): the reference setting;
- ``fitted-on-snippets``: `snippets` only; the idf is fitted on the snippets, one document per
  snippet (what ROME's `collect_stats` does when the idf files are missing);
- ``attribute-prompts``: no snippets; the reference texts of (r, o) are the records' attribute
  prompts (other subjects whose answer is o) completed with o, and the idf is fitted on them
  (each distinct text one document). The CLI builds them from every record of the records
  file, so the idf is the same for every seed and every curve point.

A record is keyed by (relation_id, target_new id), the id falling back to the target's text
when the record has none. One deviation: a text without a vocabulary term has a zero vector
and similarity 0 (sklearn's division gives NaN).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from seqedit.data.records import EditRecord

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token_pattern
SOURCES = ("configured", "fitted-on-snippets", "attribute-prompts")


@dataclass
class ConsistencyConfig:
    """Files of the consistency metric (`evaluation.consistency`); all null = attribute prompts."""

    snippets: str | None = None
    idf: str | None = None
    vocab: str | None = None

    def __post_init__(self):
        if (self.idf is None) != (self.vocab is None):
            raise ValueError("evaluation.consistency: idf and vocab go together (give both or neither)")
        if self.idf is not None and self.snippets is None:
            raise ValueError("evaluation.consistency: idf and vocab need snippets (the texts they weigh)")

    @property
    def source(self) -> str:
        if self.snippets is None:
            return "attribute-prompts"
        return "configured" if self.idf is not None else "fitted-on-snippets"


def tokenize(text: str) -> list[str]:
    """sklearn's default analyzer: lower-case, words of two or more word characters."""
    return TOKEN.findall(text.lower())


class Tfidf:
    """A fixed vocabulary {term: index} with its idf vector."""

    def __init__(self, vocab: dict[str, int], idf: np.ndarray):
        idf = np.asarray(idf, dtype=np.float64)
        if idf.ndim != 1:
            raise ValueError(f"idf must be a vector, got shape {idf.shape}")
        if vocab and max(vocab.values()) >= len(idf):
            raise ValueError(f"the vocabulary has index {max(vocab.values())}, the idf only {len(idf)} entries")
        if not np.isfinite(idf).all():
            raise ValueError("the idf holds non-finite values")
        self.vocab, self.idf = vocab, idf

    @classmethod
    def fit(cls, documents: Sequence[str]) -> "Tfidf":
        """Vocabulary (sorted terms) and smoothed idf of `documents`, as sklearn's fit."""
        if not documents:
            raise ValueError("cannot fit an idf on no documents")
        df = Counter(term for doc in documents for term in set(tokenize(doc)))
        if not df:
            raise ValueError("cannot fit an idf: the documents hold no word of two or more characters")
        terms = sorted(df)
        n = len(documents)
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in terms])
        return cls({t: i for i, t in enumerate(terms)}, idf)

    def vector(self, text: str) -> dict[int, float]:
        """The L2-normalised tf-idf vector of `text`, sparse ({index: weight}); {} without known terms."""
        counts = Counter(self.vocab[t] for t in tokenize(text) if t in self.vocab)
        weights = {i: c * float(self.idf[i]) for i, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {i: w / norm for i, w in weights.items()} if norm > 0 else {}

    def similarity(self, a: str, b: str) -> float:
        """Cosine of the tf-idf vectors of `a` and `b`; 0 when either has no known term."""
        va, vb = self.vector(a), self.vector(b)
        if len(vb) < len(va):
            va, vb = vb, va
        return sum(w * vb.get(i, 0.0) for i, w in va.items())


def record_key(record: EditRecord) -> tuple[str | None, str]:
    """(relation_id, target_new id): the key of a record's reference texts."""
    return record.request.relation_id, str(record.extra.get("target_new_id", record.request.target_new))


def load_snippets(path: str | Path) -> dict[tuple[str, str], list[str]]:
    """ROME's attribute_snippets.json as {(relation_id, target_id): [text, ...]}, entries of one key joined."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute snippets file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: top level is a JSON {type(data).__name__}, expected a list of snippet entries")
    snippets: dict[tuple[str, str], list[str]] = {}
    for i, entry in enumerate(data):
        try:
            key = (str(entry["relation_id"]), str(entry["target_id"]))
            texts = [sample["text"] for sample in entry["samples"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: entry {i}: needs relation_id, target_id and samples [{{name, text}}] ({err!r})") from None
        if not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{path}: entry {i}: a sample's text is not a string")
        snippets.setdefault(key, []).extend(texts)
    return snippets


def snippets_from_records(records: Sequence[EditRecord]) -> dict[tuple[str, str], list[str]]:
    """Reference texts built from the records: each attribute prompt completed with the record's
    new object, gathered per (relation, new object), each text once, in record order."""
    snippets: dict[tuple[str, str], list[str]] = {}
    for r in records:
        texts = snippets.setdefault(record_key(r), [])
        for prompt in r.attribute_prompts:
            text = f"{prompt} {r.request.target_new}"
            if text not in texts:
                texts.append(text)
    return {k: v for k, v in snippets.items() if v}


def load_tfidf(idf_path: str | Path, vocab_path: str | Path) -> Tfidf:
    """ROME's idf.npy and tfidf_vocab.json."""
    for label, p in (("idf", idf_path), ("vocab", vocab_path)):
        if not Path(p).is_file():
            raise FileNotFoundError(f"tf-idf {label} file {p} does not exist")
    try:
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{vocab_path}: not valid JSON ({err})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) and v >= 0 for v in vocab.values()):
        raise ValueError(f"{vocab_path}: expected a mapping of terms to non-negative indices")
    try:
        idf = np.load(idf_path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{idf_path}: not a numpy array file ({err})") from None
    try:
        return Tfidf(vocab, idf)
    except ValueError as err:
        raise ValueError(f"{idf_path} with {vocab_path}: {err}") from None


@dataclass
class ConsistencyScorer:
    """Reference texts per (relation, new object), the tf-idf that compares them, and their source."""

    snippets: dict[tuple[str, str], list[str]]
    tfidf: Tfidf
    source: str

    def record_score(self, record: EditRecord, generations: Sequence[str]) -> float | None:
        """100 · cos(tfidf(generations joined), tfidf(reference texts joined)); None without either."""
        reference = self.snippets.get(record_key(record))
        if not reference or not generations:
            return None
        return 100.0 * self.tfidf.similarity(" ".join(generations), " ".join(reference))

    def score(self, records: Sequence[EditRecord], generations: Sequence[Sequence[str]]) -> dict:
        """{"consistency": mean over scored records (None if none), "per_record": [score or None]}."""
        if len(records) != len(generations):
            raise ValueError(f"{len(records)} records but {len(generations)} lists of generations")
        per_record = [self.record_score(r, g) for r, g in zip(records, generations)]
        scored = [s for s in per_record if s is not None]
        return {"consistency": sum(scored) / len(scored) if scored else None, "per_record": per_record}


def build_scorer(cfg: ConsistencyConfig | dict | None, records: Sequence[EditRecord]) -> ConsistencyScorer | None:
    """The scorer `cfg` describes; `records` supply the attribute prompts when no snippets are
    configured. None when there is nothing to compare against (no snippets, no attribute prompts)."""
    if not isinstance(cfg, ConsistencyConfig):
        from seqedit.config import build

        cfg = build(ConsistencyConfig, cfg or {}, "evaluation.consistency")
    if cfg.snippets is None:
        snippets = snippets_from_records(records)
        if not snippets:
            return None
        documents = list(dict.fromkeys(t for texts in snippets.values() for t in texts))
        return ConsistencyScorer(snippets, Tfidf.fit(documents), cfg.source)
    snippets = load_snippets(cfg.snippets)
    if cfg.idf is not None:
        tfidf = load_tfidf(cfg.idf, cfg.vocab)
    else:
        tfidf = Tfidf.fit([t for texts in snippets.values() for t in texts])
    return ConsistencyScorer(snippets, tfidf, cfg.source)
