"""Causal tracing (ROME, Meng et al. 2022, §2.1): which layers' MLPs carry a fact at the subject.

For a fact the model knows, three runs of its rewrite prompt are compared:
- clean: the prompt as is; p_clean = p(first token of the true object | prompt);
- corrupted: Gaussian noise added to the embedding output at every subject token, with
  std = `noise_factor` × the std of the clean embeddings over the subject tokens of the traced
  facts (ROME: 3 ×); p_corrupt is the mean over `n_noise` seeded noise samples;
- restored at layer l: corrupted, but the clean output of the MLP (or, `kind: block`, of the
  whole block) at the subject's last token is written back at a window of layers centred on l
  (ROME's `trace_with_patch`: layers l - w//2 … l + (w - 1)//2, clipped to the model).

The indirect effect of layer l is p_restored(l) − p_corrupt, averaged over facts; its peak is
the layer ROME edits, and MEMIT edits the `memit_n` layers ending there. With `skip_layers` = n,
a layer whose window restores any of the first n layers is no candidate for the peak, and the
MEMIT window starts at n at the lowest: in Llama-family models restoring the first MLP alone
recovers most facts (it acts on every subject token, whatever layer stores the fact), which
would put the peak at layer 0. The same noise samples
serve the corrupted run and every layer's restored run (as ROME, whose noise generator is
reseeded per trace), so the per-layer differences are paired.

Module names come from the model's `ModelSpec` (embedding, blocks, MLP), so any layout the
package loads is traced the same way. Rows of one forward are noise samples × restored layers
of one prompt, which needs no padding; only the last position's logits are computed.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from seqedit.analysis.ci import mean_ci
from seqedit.core.hooks import capture, edit_output
from seqedit.core.prompts import build_batch, encode_target, fill_subject
from seqedit.models.arch import ModelSpec

KINDS = ("mlp", "block")

# ROME's MLP tracing restores 10 layers of GPT2-XL's 48; MEMIT edits 5 (GPT2-XL 13–17, Llama3-8B 4–8).
ROME_WINDOW_FRACTION = 10 / 48
MEMIT_N = 5
KNOWN_BATCH = 32  # records checked per forward when looking for known facts


@dataclass
class TracingConfig:
    enabled: bool = False  # the workflow's switch; the library ignores it
    n_records: int = 50  # facts to trace: the first n known ones
    n_noise: int = 10  # noise samples per fact
    noise_factor: float = 3.0  # noise std = noise_factor × std of the subject tokens' embeddings
    window: int | None = None  # layers restored around each layer; None = round(n_layers × 10/48), ≥ 1
    kind: str = "mlp"  # mlp: restore the MLP output; block: the block's output (hidden state)
    memit_n: int = MEMIT_N  # layers of the suggested MEMIT window, ending at the peak
    skip_layers: int = 0  # windows restoring any of the first skip_layers layers are no peak candidates
    known_only: bool = True  # trace only records whose rewrite prompt the model completes with the true object
    batch_size: int = 64  # rows (noise samples × layers) per forward
    seed: int = 0

    def __post_init__(self):
        for name in ("n_records", "n_noise", "memit_n", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"tracing.{name} must be >= 1, got {getattr(self, name)}")
        if float(self.noise_factor) < 0:
            raise ValueError(f"tracing.noise_factor must be >= 0, got {self.noise_factor}")
        if int(self.skip_layers) < 0:
            raise ValueError(f"tracing.skip_layers must be >= 0, got {self.skip_layers}")
        if self.window is not None and int(self.window) < 1:
            raise ValueError(f"tracing.window must be >= 1 or null, got {self.window}")
        if self.kind not in KINDS:
            raise ValueError(f"tracing.kind must be one of {list(KINDS)}, got {self.kind!r}")


def default_window(n_layers: int) -> int:
    """ROME's 10 of 48 layers, in proportion to depth: 6 of SmolLM2's 30, 1 of a 4-layer testbed."""
    return max(1, round(n_layers * ROME_WINDOW_FRACTION))


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """The layers restored for `layer`: a window of `window` centred on it, clipped to the model."""
    lo = max(0, layer - window // 2)
    return list(range(lo, min(n_layers, layer - window // 2 + window)))


def memit_window(peak: int, n: int, lowest: int = 0) -> list[int]:
    """`n` consecutive layers ending at `peak`, none below `lowest` (fewer when the peak is near it)."""
    return list(range(max(lowest, peak - n + 1), peak + 1))


def peak_layer(effect: list[float], window: int, skip_layers: int = 0) -> int:
    """The layer of the largest effect among those whose restored window leaves out the first
    `skip_layers` layers."""
    n_layers = len(effect)
    candidates = [l for l in range(n_layers) if window_layers(l, window, n_layers)[0] >= skip_layers]
    if not candidates:
        raise ValueError(f"tracing.skip_layers {skip_layers} leaves no layer of {n_layers} (window {window}) to peak at")
    return max(candidates, key=lambda l: effect[l])


def subject_span(tokenizer, template: str, subject: str) -> tuple[list[int], int, int]:
    """Ids of `template` filled with `subject`, and the indices of the subject's first and last tokens."""
    text, (start, end) = fill_subject(template, subject)
    enc = tokenizer(text, return_offsets_mapping=True)
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not inside:
        raise ValueError(f"subject {subject!r} not found among the tokens of {text!r}")
    return list(enc["input_ids"]), inside[0], inside[-1]


@torch.no_grad()
def known_mask(model, tokenizer, requests, batch_size: int = 32) -> list[bool]:
    """Per request: does the model's greedy continuation of the rewrite prompt spell the true object
    (every token of " " + target_true the argmax, teacher-forced)?"""
    device = next(model.parameters()).device
    known = []
    for s in range(0, len(requests), batch_size):
        chunk = requests[s : s + batch_size]
        batch = build_batch(tokenizer, [r.prompt for r in chunk], [r.subject for r in chunk],
                            [r.true_text for r in chunk], teacher_force_all=False).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        for i, (pos, ids) in enumerate(zip(batch.target_pos, batch.target_ids)):
            known.append(bool((logits[i, pos].argmax(-1).cpu() == torch.tensor(ids)).all()))
    return known


def fact_noise(seed: int, index: int, n_noise: int, n_tokens: int, d_model: int) -> torch.Tensor:
    """Standard-normal noise (n_noise, n_tokens, d_model) of the `index`-th traced fact: a function
    of (seed, index) only, whatever else is traced."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    return torch.randn(n_noise, n_tokens, d_model, generator=g)


@torch.no_grad()
def embedding_std(model, spec: ModelSpec, facts: list[tuple[list[int], int, int]]) -> float:
    """Std of the embedding module's output over every subject token of `facts` (all dimensions)."""
    device = next(model.parameters()).device
    embed = model.get_submodule(spec.embed)
    vecs = [embed(torch.tensor([ids[a : b + 1]], device=device))[0].float() for ids, a, b in facts]
    return float(torch.cat(vecs).std())


def _restore_module(spec: ModelSpec, kind: str, layer: int) -> str:
    return spec.mlp_name(layer) if kind == "mlp" else spec.block_name(layer)


def _restore(rows: torch.Tensor, position: int, value: torch.Tensor):
    """Output rewrite: the clean `value` at `position` of the selected `rows`."""

    def fn(h):
        h = h.clone()
        h[rows, position] = value
        return h

    return fn


@torch.no_grad()
def trace_fact(model, spec: ModelSpec, ids: list[int], first: int, last: int, target_id: int, noise: torch.Tensor,
               window: int, kind: str = "mlp", batch_size: int = 64) -> dict:
    """Clean, corrupted and per-layer restored probability of `target_id` after one prompt.

    `noise` (n_noise, last - first + 1, d_model) is added, already scaled, to the embedding output
    at the subject tokens; restoring writes the clean output of the `kind` module at token `last`.
    """
    n_layers = spec.n_layers(model)
    device = next(model.parameters()).device
    names = [_restore_module(spec, kind, l) for l in range(n_layers)]
    x = torch.tensor([ids], device=device)
    with capture(model, names) as clean_out:
        clean_logits = model(input_ids=x, logits_to_keep=1).logits[0, -1]
    p_clean = float(clean_logits.float().softmax(-1)[target_id])
    clean = {l: clean_out[names[l]][0, last].clone() for l in range(n_layers)}
    noise = noise.to(device=device, dtype=clean[0].dtype)
    n_noise = noise.shape[0]

    # group -1: corrupted, nothing restored; group l: restored around layer l
    groups = [-1] + list(range(n_layers))
    restored_at = {-1: set()} | {l: set(window_layers(l, window, n_layers)) for l in range(n_layers)}
    per_chunk = max(1, batch_size // n_noise)
    p_group: dict[int, float] = {}
    for s in range(0, len(groups), per_chunk):
        chunk = groups[s : s + per_chunk]
        rows = x.expand(len(chunk) * n_noise, -1)
        row_noise = noise.repeat(len(chunk), 1, 1)

        def corrupt(h, row_noise=row_noise):
            h = h.clone()
            h[:, first : last + 1] += row_noise
            return h

        with ExitStack() as stack:
            stack.enter_context(edit_output(model, spec.embed, corrupt))
            for layer in range(n_layers):
                on = torch.tensor([layer in restored_at[g] for g in chunk], device=device)
                if bool(on.any()):
                    stack.enter_context(edit_output(model, names[layer], _restore(on.repeat_interleave(n_noise),
                                                                                  last, clean[layer])))
            probs = model(input_ids=rows, logits_to_keep=1).logits[:, -1].float().softmax(-1)[:, target_id]
        for j, g in enumerate(chunk):
            p_group[g] = float(probs[j * n_noise : (j + 1) * n_noise].mean())
    restored = [p_group[l] for l in range(n_layers)]
    return {"p_clean": p_clean, "p_corrupt": p_group[-1], "p_restored": restored,
            "effect": [p - p_group[-1] for p in restored]}


def trace(model, tokenizer, spec: ModelSpec, requests, cfg: TracingConfig, progress: bool = True) -> dict:
    """Trace the first `cfg.n_records` known facts among `requests`; the summary `seqedit trace` writes.

    `counts`: records given, checked for knowledge (in order, until enough are known), known among
    those checked, traced.
    """
    if any(r.target_true is None for r in requests):
        raise ValueError("causal tracing needs each record's true object (target_true); ZsRE records have none")
    n_layers = spec.n_layers(model)
    window = int(cfg.window) if cfg.window is not None else default_window(n_layers)
    chosen, n_checked, n_known = [], 0, 0
    for s in range(0, len(requests), KNOWN_BATCH):  # records are checked only until enough are known
        chunk = requests[s : s + KNOWN_BATCH]
        known = known_mask(model, tokenizer, chunk, KNOWN_BATCH) if cfg.known_only else [True] * len(chunk)
        n_checked, n_known = n_checked + len(chunk), n_known + sum(known)
        chosen += [r for r, k in zip(chunk, known) if k][: cfg.n_records - len(chosen)]
        if len(chosen) >= cfg.n_records:
            break
    if not chosen:
        raise ValueError(f"none of the {len(requests)} records is known to the model (its greedy completion of "
                         "the rewrite prompt is never the true object); nothing to trace")
    facts = [subject_span(tokenizer, r.prompt, r.subject) for r in chosen]
    std = embedding_std(model, spec, facts)
    d_model = model.get_submodule(spec.embed).weight.shape[1]
    per_fact = []
    for i, (r, (ids, first, last)) in enumerate(tqdm(list(zip(chosen, facts)), desc="causal tracing", unit="fact",
                                                     disable=not progress, mininterval=2.0)):
        noise = cfg.noise_factor * std * fact_noise(cfg.seed, i, cfg.n_noise, last - first + 1, d_model)
        target_id = encode_target(tokenizer, r.true_text)[0]
        out = trace_fact(model, spec, ids, first, last, target_id, noise, window, cfg.kind, cfg.batch_size)
        per_fact.append({"case_id": r.case_id, "subject_tokens": [first, last], "n_tokens": len(ids), **out})
    counts = {"records": len(requests), "checked": n_checked, "known": n_known, "traced": len(per_fact)}
    return summarize(per_fact, n_layers, window, std, cfg, counts)


def summarize(per_fact: list[dict], n_layers: int, window: int, std: float, cfg: TracingConfig, counts: dict) -> dict:
    """Per-layer mean indirect effect with its 95 % interval over facts, the peak and the layers it suggests."""
    layers = []
    for l in range(n_layers):
        mean, half, n = mean_ci(f["effect"][l] for f in per_fact)
        half = half or 0.0
        layers.append({"layer": l, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n})
    peak = peak_layer([x["mean"] for x in layers], window, int(cfg.skip_layers))
    return {
        "kind": cfg.kind,
        "layers": layers,
        "effect": [x["mean"] for x in layers],
        "peak_layer": peak,
        "rome_layer": peak,
        "memit_layers": memit_window(peak, cfg.memit_n, int(cfg.skip_layers)),
        "p_clean": mean_ci(f["p_clean"] for f in per_fact)[0],
        "p_corrupt": mean_ci(f["p_corrupt"] for f in per_fact)[0],
        "counts": counts,
        "settings": {**asdict(cfg), "window": window, "noise_std": cfg.noise_factor * std, "embedding_std": std,
                     "n_layers": n_layers},
        "seed": cfg.seed,
        "facts": per_fact,
    }
