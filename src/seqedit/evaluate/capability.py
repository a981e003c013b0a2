"""General capability along the stream: what the edits do to the rest of the model.

Three probes, each a number per curve point:

- `perplexity` of held-out general text that states no edited fact: exp of the summed token
  NLLs over the count of predicted tokens (every token after the first of a line; padding
  excluded). The text is a list of lines given by the caller (`evaluation.capability.text_file`,
  one text per line, e.g. any offline prose for a pretrained model); without one, the true
  statements (prompt + true object) of records outside the stream and its neighbourhoods, so
  the testbed is measured on text of the kind it was trained on, about subjects no run edits.
- `heldout_accuracy`: on a fixed set of held-out facts the unedited model knew (teacher-forced
  NLL of the true object below that of the new object on the rewrite prompt, the CounterFact
  success of `evaluate.scoring`), the percentage still preferred. The set is drawn once, before
  any edit, from records disjoint from the stream: not edited, with a subject that no edited
  record's prompt (rewrite, paraphrase, neighbourhood) mentions.
- `matrix_norms`: the Frobenius norm of each edited matrix (recorded per round beside the
  weight drift by the runner).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from seqedit.core.generate import model_device
from seqedit.core.prompts import encode, pad_batch
from seqedit.data.records import EditRecord
from seqedit.evaluate.scoring import score_targets

# Same defaults as `evaluation.capability` in workflow/schemas/config.schema.yaml.
CAPABILITY_DEFAULTS = {"n_facts": 20, "n_texts": 20, "text_file": None, "max_length": 64, "seed": 0}


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 64,
               progress: bool = False) -> dict:
    """{"perplexity", "nll", "n_tokens"} of `texts`; each text is cut to `max_length` tokens."""
    if not texts:
        raise ValueError("perplexity got no texts")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    model.eval()
    device = model_device(model)
    encoded = [encode(tokenizer, t)[:max_length] for t in texts]
    short = [t for t, ids in zip(texts, encoded) if len(ids) < 2]
    if short:
        raise ValueError(f"{len(short)} text(s) have fewer than 2 tokens, e.g. {short[0]!r}")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    total, count = 0.0, 0
    for start in tqdm(range(0, len(order), batch_size), desc="perplexity", disable=not progress):
        ids, mask = pad_batch([encoded[i] for i in order[start : start + batch_size]], pad)  # (B, T) right-padded
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        keep = mask[:, 1:].bool()  # (B, T-1): targets that are real tokens
        total -= float(logp[keep].double().sum())
        count += int(keep.sum())
    nll = total / count
    return {"perplexity": math.exp(nll), "nll": nll, "n_tokens": count}


def fact_accuracy(model: nn.Module, tokenizer, records: Sequence[EditRecord], batch_size: int = 64) -> tuple[float, list[bool]]:
    """100 × the fraction of `records` whose rewrite prompt prefers the true object to the new one."""
    if not records:
        raise ValueError("fact_accuracy got no records")
    missing = [r.case_id for r in records if r.request.true_text is None]
    if missing:
        raise ValueError(f"held-out facts need a true target; case(s) {missing[:5]} have none")
    prompts = [r.request.query for r in records for _ in range(2)]
    targets = [t for r in records for t in (r.request.new_text, r.request.true_text)]
    scores = score_targets(model, tokenizer, prompts, targets, batch_size, desc="held-out facts")
    known = [scores[j + 1].nll < scores[j].nll for j in range(0, len(scores), 2)]
    return 100.0 * sum(known) / len(known), known


def matrix_norms(params: dict[str, torch.Tensor]) -> dict[str, float]:
    """Frobenius norm of each named matrix."""
    return {n: float(torch.linalg.norm(p.detach().float())) for n, p in params.items()}


def _stream_text(stream: Sequence[EditRecord]) -> str:
    parts = []
    for r in stream:
        parts += [r.request.query, *r.paraphrase_prompts, *r.neighborhood_prompts]
    return "\n".join(parts)


def heldout_candidates(records: Sequence[EditRecord], stream: Sequence[EditRecord], seed: int = 0) -> list[EditRecord]:
    """Records disjoint from `stream` and its neighbourhoods, in a seeded order.

    Left out: the edited records, records whose subject is an edited subject, and records whose
    subject any edited record's prompt mentions (the neighbourhood prompts included).
    """
    edited = {r.case_id for r in stream}
    subjects = {r.request.subject for r in stream}
    text = _stream_text(stream)
    pool = [r for r in records if r.case_id not in edited and r.request.subject not in subjects]
    random.Random(f"heldout/{seed}").shuffle(pool)
    return [r for r in pool if r.request.subject not in text]


def _statement(r: EditRecord) -> str | None:
    return None if r.request.true_text is None else r.request.query + r.request.true_text


@dataclass
class CapabilityProbe:
    """The fixed held-out texts and facts a run is measured on at every curve point."""

    texts: list[str] = field(default_factory=list)
    facts: list[EditRecord] = field(default_factory=list)
    text_source: str = "none"
    max_length: int = 64

    def evaluate(self, model: nn.Module, tokenizer, batch_size: int = 64) -> dict:
        out: dict = {"heldout_n_facts": len(self.facts), "heldout_n_texts": len(self.texts),
                     "heldout_text_source": self.text_source}
        if self.texts:
            out["perplexity"] = perplexity(model, tokenizer, self.texts, batch_size, self.max_length)["perplexity"]
        if self.facts:
            out["heldout_accuracy"] = fact_accuracy(model, tokenizer, self.facts, batch_size)[0]
        return out


def read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation.capability.text_file {path} does not exist")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"evaluation.capability.text_file {path} holds no text")
    return lines


def build_probe(cfg: dict | None, model: nn.Module, tokenizer, records: Sequence[EditRecord],
                stream: Sequence[EditRecord], batch_size: int = 64) -> CapabilityProbe:
    """The probe of `evaluation.capability` (`cfg`), drawn with the model still unedited.

    Held-out facts: the first `n_facts` candidates (`heldout_candidates`) the model knows; texts:
    the first `n_texts` lines of `text_file`, else the statements of the next candidates not
    used as facts. Fewer are taken when the records run out.
    """
    c = {**CAPABILITY_DEFAULTS, **(cfg or {})}
    unknown = set(c) - set(CAPABILITY_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown evaluation.capability keys {sorted(unknown)}; known: {sorted(CAPABILITY_DEFAULTS)}")
    n_facts, n_texts = int(c["n_facts"]), int(c["n_texts"])
    if n_facts < 0 or n_texts < 0:
        raise ValueError(f"evaluation.capability.n_facts and n_texts must be >= 0, got {n_facts} and {n_texts}")
    pool = heldout_candidates(records, stream, int(c["seed"])) if (n_facts or (n_texts and not c["text_file"])) else []
    facts: list[EditRecord] = []
    used = 0
    candidates = [r for r in pool if r.request.true_text is not None and r.request.target_true != r.request.target_new]
    while len(facts) < n_facts and used < len(candidates):
        chunk = candidates[used : used + 2 * n_facts]
        used += len(chunk)
        _, known = fact_accuracy(model, tokenizer, chunk, batch_size)
        facts += [r for r, k in zip(chunk, known) if k][: n_facts - len(facts)]
    if c["text_file"]:
        texts, source = read_lines(c["text_file"])[:n_texts], f"file {c['text_file']}"
    else:
        taken = {r.case_id for r in facts}
        texts = [s for s in (_statement(r) for r in pool if r.case_id not in taken) if s][:n_texts]
        source = "held-out records' true statements"
    return CapabilityProbe(texts=texts, facts=facts, text_source=source, max_length=int(c["max_length"]))
