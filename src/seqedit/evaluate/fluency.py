"""Fluency: n-gram entropy of top-k sampled generations (ROME `n_gram_entropy`).

Design notes §5.1, generation metrics. Each generation prompt is continued by top-k
sampling to a total of `max_length` tokens (prompt included); each text is split into
words, and the Shannon entropies (bits) of its bigram and trigram frequency distributions
are combined as (2/3·H2 + 4/3·H3)/2 and averaged over texts. Reported ×100 (≈ 600 for a
healthy model, lower when the model repeats itself).

Two deliberate differences from the reference code:
- Words come from `word_tokenize` below, a small regex tokenizer written in the spirit of
  `nltk.word_tokenize` (Treebank rules: punctuation and clitics such as "n't", "'s" are
  separate tokens). nltk is not a dependency of this package. Known differences: quotes
  are kept as '"' instead of Treebank's `` and '', and no sentence splitting is done (a
  period is always its own token unless inside an abbreviation like "U.S." or a number).
- Sampling draws from an explicit `torch.Generator`, so generations (and the fluency
  number) are a function of the seed; the reference samples from the global RNG unseeded.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Sequence

import torch
from torch import nn

from seqedit.data.records import EditRecord
from seqedit.core.generate import generate  # noqa: F401  (re-exported)

# ---------------------------------------------------------------------------------------
# Word tokenisation (nltk.word_tokenize stand-in)

_W = r"[\w\u0300-\u036f]"  # word characters, plus combining accents left by NFKD normalisation
_SPLIT_NT = re.compile(rf"(?i)({_W})(n't)\b")  # "don't" -> "do n't", "can't" -> "ca n't" (as Treebank)
_SPLIT_CLITIC = re.compile(rf"(?i)({_W})('(?:s|m|d|ll|re|ve))\b")  # "it's" -> "it 's"
_TOKEN = re.compile(
    rf"""
      n't | '(?:s|m|d|ll|re|ve)\b          # clitics, already separated from their word
    | (?:[^\W\d_]\.){{2,}}                 # abbreviations with inner periods: U.S. e.g.
    | \d+(?:[.,:]\d+)+                     # numbers with separators: 1,000 3.14 10:30
    | {_W}+(?:[-'’]{_W}+)*                 # words, numbers, hyphenated words, O'Neil
    | \.\.\. | --                          # multi-character punctuation
    | [^\w\s]                              # any other symbol on its own
    """,
    re.VERBOSE | re.IGNORECASE,
)


def word_tokenize(text: str) -> list[str]:
    """Split `text` into words, numbers and punctuation, Treebank-style.

    >>> word_tokenize("I don't know, it's 3.14 in the U.S.")
    ['I', 'do', "n't", 'know', ',', 'it', "'s", '3.14', 'in', 'the', 'U.S.']
    """
    text = _SPLIT_NT.sub(r"\1 \2", text)
    text = _SPLIT_CLITIC.sub(r"\1 \2", text)
    return _TOKEN.findall(text)


# ---------------------------------------------------------------------------------------
# n-gram entropy


def _entropy_bits(counts: Counter) -> float:
    """Shannon entropy (bits) of a frequency distribution; 0 for an empty one."""
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def text_ngram_entropy(text: str, weights: Sequence[float] = (2 / 3, 4 / 3), ns: Sequence[int] = (2, 3)) -> float:
    """mean_n(w_n · H_n) for one text, H_n the entropy of its n-gram distribution."""
    if len(weights) != len(ns):
        raise ValueError(f"{len(weights)} weights for {len(ns)} n-gram orders")
    tokens = word_tokenize(text)
    weighted = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        weighted.append(w * _entropy_bits(grams))
    return sum(weighted) / len(weighted)


def ngram_entropy(texts: Sequence[str], weights: Sequence[float] = (2 / 3, 4 / 3), ns: Sequence[int] = (2, 3)) -> float:
    """Mean over `texts` of (2/3·H2 + 4/3·H3)/2, in bits (not ×100)."""
    if not texts:
        raise ValueError("ngram_entropy needs at least one text")
    return sum(text_ngram_entropy(t, weights, ns) for t in texts) / len(texts)



def clean_text(text: str) -> str:
    """ROME's post-processing of generations: NFKD normalisation, blank lines to spaces."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ")


def evaluate_fluency(
    model: nn.Module,
    tokenizer,
    records: Sequence[EditRecord],
    n_records: int,
    n_prompts: int,
    max_length: int = 100,
    top_k: int = 5,
    seed: int = 0,
) -> dict:
    """Fluency of generations from the first `n_prompts` generation prompts of the first `n_records` records.

    Returns {"fluency": 100 × mean n-gram entropy (None without texts), "n_texts", "samples"
    (the first 3 texts), "texts_per_record" (one list per record of `records[:n_records]`, for
    the consistency metric)}. The sampler is a CPU `torch.Generator` seeded with `seed`.
    """
    chosen = list(records[:n_records])
    prompts = [p for r in chosen for p in r.generation_prompts[:n_prompts]]
    generator = torch.Generator().manual_seed(seed)
    texts = [clean_text(t) for t in generate(model, tokenizer, prompts, max_length, top_k, generator)] if prompts else []
    fluency = 100.0 * ngram_entropy(texts) if texts else None
    per_record, start = [], 0
    for r in chosen:
        n = len(r.generation_prompts[:n_prompts])
        per_record.append(texts[start : start + n])
        start += n
    return {"fluency": fluency, "n_texts": len(texts), "samples": texts[:3], "texts_per_record": per_record}
