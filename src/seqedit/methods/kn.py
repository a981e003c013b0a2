"""KN: knowledge neurons (Dai et al., 2022, "Knowledge Neurons in Pretrained Transformers"),
as the ROME/MEMIT baseline runs it (`kmeng01/rome: baselines/kn/kn_main.py` and the vendored
`knowledge_neurons.py`; design notes §2.6 and §3.4).

Per request, in order, on the model as edited so far:

1. Attribution (integrated gradients). For every layer l and FFN neuron i, with a_i the
   neuron's activation at the last prompt position and p(y) the probability of the *true*
   target token:
       IG_i^l = a_i / m · Σ_{j=0..m−1} ∂p(y | a ← α_j a) / ∂a_i ,   α_j = linspace(0, 1, m)
   (m = `steps`, evaluated in chunks of `batch_size` rows; only layer l is patched in a
   forward). Multi-token targets: the score is averaged over the target tokens, token t
   scored on the prompt extended by the first t−1 tokens (`multi_token`, below).
2. Selection: neurons with IG > `adaptive_threshold` · max IG over all layers and neurons.
3. Edit: each selected neuron's output vector, i.e. column i of W_out^l as [d_out, d_in],
       w_i ← w_i − orig_scale · E[ŷ] + target_scale · E[y_new]
   with E the input word embedding, ŷ the model's argmax prediction after the prompt before
   this edit. A multi-token target adds each of its tokens' embeddings × `multi_token_scale`.
   No gradient step.

`attribution_mode` picks how the IG is computed; both give the same scores up to float
rounding. "fast" (default) runs, for each integration point, only what the patch changes: the
last position, through the blocks above the patched layer, on the prompt's cached prefix, with
the unembedding at that position alone. "reference" runs every point as a full patched forward
and backward of the prompt, as the reference code does.

The true target (`target_true`) is what is attributed; where a request has none (ZsRE), the
model's own greedy prediction after the prompt is used instead.

Differences from the reference code, each deliberate:
- the neuron activation is the W_out input (post-nonlinearity, the FFN "key"), as in Dai et
  al.'s BERT code; the GPT-2 port patches the `c_fc` output, i.e. *before* the GELU;
- `multi_token`: "teacher_forced" (default, as design notes §2.6 describe) extends the prompt
  with the true tokens; "greedy" with the model's greedy tokens (what the library intends);
  "prompt_last" scores every token at the last prompt position (what the GPT-2 path of the
  reference actually does: its re-tokenisation branch tests `model_type == "gpt"`, never
  true for "gpt2");
- targets carry their leading space (" Paris", as evaluated); the reference encodes the bare
  string;
- the reference's GPT-2 branch indexes the embedding with a token *list*, so even a
  single-token target is added ×1, not ×2; `target_scale: 1.0` reproduces that;
- `refine` / `p` are not offered: with the single rewrite prompt and refine = false (every
  reference config) every coarse neuron is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transformers import DynamicCache

from seqedit.core.hooks import _first, capture, edit_input, stop_after
from seqedit.core.prefix import PrefixCache, cached_kv
from seqedit.core.prompts import encode, encode_target
from seqedit.core.targets import frozen
from seqedit.methods.base import Editor
from seqedit.registry import register_method


ATTRIBUTION_MODES = ("fast", "reference")
# The fast attribution runs at most this many integration rows (points × layers) in one pass.
FAST_ROWS = 1024


@dataclass
class KNConfig:
    steps: int = 20  # integration points m (α = linspace(0, 1, m))
    batch_size: int = 20  # integration points per forward
    adaptive_threshold: float = 0.2  # keep IG > this · max IG
    multi_token: str = "teacher_forced"  # "teacher_forced" | "greedy" | "prompt_last"
    orig_scale: float = 2.0  # w_i −= orig_scale · E[original argmax prediction]
    target_scale: float = 2.0  # w_i += target_scale · E[target_new] (single-token target)
    multi_token_scale: float = 1.0  # per-token scale when target_new has several tokens
    layers: list[int] | None = None  # layers searched and edited; null = all (reference)
    attribution_mode: str = "fast"  # "fast" | "reference": the same IG, computed two ways (below)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0.0 <= self.adaptive_threshold <= 1.0:
            raise ValueError(f"adaptive_threshold must be within [0, 1], got {self.adaptive_threshold}")
        if self.multi_token not in ("teacher_forced", "greedy", "prompt_last"):
            raise ValueError(f"multi_token must be teacher_forced, greedy or prompt_last, got {self.multi_token!r}")
        if self.attribution_mode not in ATTRIBUTION_MODES:
            raise ValueError(f"attribution_mode must be one of {list(ATTRIBUTION_MODES)}, got {self.attribution_mode!r}")
        if self.layers is not None and (not self.layers or sorted(set(self.layers)) != list(self.layers)):
            raise ValueError(f"layers must be null or a non-empty ascending list without repeats, got {self.layers}")


class KNEditor(Editor):
    name = "kn"

    def __init__(self, config: KNConfig, model, tokenizer, spec, stats=None, seed: int = 0):
        super().__init__(config, model, tokenizer, spec, stats, seed)
        self.layers = list(config.layers) if config.layers is not None else list(range(spec.n_layers(model)))

    def param_names(self) -> list[str]:
        return [self.spec.out_weight_name(l) for l in self.layers]

    # --- attribution -------------------------------------------------------------------------
    def _device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _greedy(self, ids: list[int], n: int) -> list[int]:
        out = list(ids)
        for _ in range(n):
            logits = self.model(input_ids=torch.tensor([out], device=self._device())).logits  # (1, T, V)
            out.append(int(logits[0, -1].argmax()))
        return out[len(ids):]

    def layer_scores(self, ids: list[int], target: int) -> torch.Tensor:
        """IG of p(target | ids) for every layer's FFN neurons at the last position: (n_layers, d_ff)."""
        if self.config.attribution_mode == "fast":
            return self._layer_scores_fast(ids, target)
        return self._layer_scores_reference(ids, target)

    def _layer_scores_fast(self, ids: list[int], target: int) -> torch.Tensor:
        """The IG computed from what the patch changes: the last position, in the blocks above l.

        The patch at layer l touches only the last position p, so the positions before p keep
        their keys and values in every block: one no-grad forward records them, block l's
        output at p without its FFN term (r_l), and the neuron activations a_l. An integration
        row of layer l is then the single position p, entering above block l as
        r_l + W_out(α a_l), run through blocks l+1 … attending to the cached prefix, and read
        through the final norm and unembedding at p alone. The rows of every layer run in one
        staggered pass (those of layer l join the batch after block l), and one backward gives
        each row's gradient; at most `FAST_ROWS` rows per pass.
        """
        cfg, spec, model, device = self.config, self.spec, self.model, self._device()
        n_layers, pos = spec.n_layers(model), len(ids) - 1
        acts = {l: spec.out_proj_name(l) for l in self.layers}
        outs = {l: (spec.block_name(l), spec.mlp_name(l)) for l in self.layers}
        cache = DynamicCache(config=model.config)
        with torch.no_grad(), capture(model, acts.values(), what="input") as seen_in, capture(
            model, [n for pair in outs.values() for n in pair], what="output"
        ) as seen_out, stop_after(model, [spec.block_name(n_layers - 1)]):
            model(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True)
        base = {l: seen_in[acts[l]][0, pos] for l in self.layers}  # (d_ff,) a_l
        resid = {l: seen_out[outs[l][0]][0, pos] - seen_out[outs[l][1]][0, pos] for l in self.layers}  # (d,) r_l
        kv = {k: tuple(t[:, :, :pos].detach() for t in cached_kv(cache, k)) for k in range(min(self.layers) + 1, n_layers)}
        del cache, seen_in, seen_out
        alphas = torch.linspace(0, 1, cfg.steps, device=device)  # (m,)
        blocks = model.get_submodule(spec.blocks)
        final_norm, head = model.get_submodule(spec.final_norm), model.get_submodule(spec.lm_head)
        per_pass = max(1, FAST_ROWS // cfg.steps)
        scores = []
        for s in range(0, len(self.layers), per_pass):
            layers = self.layers[s : s + per_pass]
            scaled = [(alphas[:, None] * base[l].float()[None]).requires_grad_(True) for l in layers]  # (m, d_ff) each
            entering = {}
            for l, x in zip(layers, scaled):
                w_out = model.get_submodule(acts[l])
                entering[l] = resid[l][None] + w_out(x.to(resid[l].dtype))  # (m, d) block l's output at p
            h = None
            for k in range(layers[0], n_layers):
                if k in entering:  # layer k's rows join after block k
                    h = entering[k][:, None] if h is None else torch.cat([h, entering[k][:, None]])  # (R, 1, d)
                if k + 1 < n_layers:
                    rows = h.shape[0]
                    at = torch.full((rows, 1), pos, device=device)
                    mask = torch.zeros(rows, 1, 1, pos + 1, dtype=h.dtype, device=device)
                    k_pre, v_pre = kv[k + 1]
                    prefix = PrefixCache({k + 1: (k_pre.expand(rows, -1, -1, -1), v_pre.expand(rows, -1, -1, -1))})
                    h = _first(blocks[k + 1](h, **spec.block_inputs(model, h, at, mask, prefix)))
            probs = torch.softmax(head(final_norm(h[:, 0])).float(), dim=-1)[:, target]  # (R,)
            grads = torch.autograd.grad(probs.sum(), scaled)
            scores += [g.sum(0) * base[l].float() / cfg.steps for l, g in zip(layers, grads)]
        return torch.stack(scores)  # (n_layers, d_ff)

    def _layer_scores_reference(self, ids: list[int], target: int) -> torch.Tensor:
        """The IG as the reference computes it: each integration point a full forward and
        backward of the prompt, the layer's activation patched at the last position."""
        cfg, device = self.config, self._device()
        pos = len(ids) - 1
        names = [self.spec.out_proj_name(l) for l in self.layers]
        with torch.no_grad(), capture(self.model, names, what="input") as seen:
            self.model(input_ids=torch.tensor([ids], device=device))
        alphas = torch.linspace(0, 1, cfg.steps, device=device)  # (m,)
        scores = []
        for name in names:
            base = seen[name][0, pos].float()  # (d_ff,)
            grad_sum = torch.zeros_like(base)
            for chunk in alphas.split(cfg.batch_size):
                scaled = (chunk[:, None] * base[None]).requires_grad_(True)  # (b, d_ff)

                def patch(x, scaled=scaled):
                    x = x.clone()
                    x[:, pos] = scaled.to(x.dtype)
                    return x

                input_ids = torch.tensor([ids], device=device).expand(len(chunk), -1)  # (b, T)
                with edit_input(self.model, name, patch):
                    logits = self.model(input_ids=input_ids).logits  # (b, T, V)
                probs = torch.softmax(logits[:, pos].float(), dim=-1)[:, target]  # (b,)
                grad_sum += torch.autograd.grad(probs.sum(), scaled)[0].sum(0)  # (d_ff,)
            scores.append(grad_sum * base / cfg.steps)
        return torch.stack(scores)  # (n_layers, d_ff)

    def attribute(self, request) -> tuple[torch.Tensor, list[int]]:
        """Token-averaged IG scores (n_layers, d_ff) for the request's true target, and its ids."""
        prompt_ids = encode(self.tokenizer, request.query)
        if request.true_text is not None:
            truth = encode_target(self.tokenizer, request.true_text)
        else:  # no true answer (ZsRE): attribute the model's own prediction
            truth = self._greedy(prompt_ids, 1)
        if self.config.multi_token == "greedy" and len(truth) > 1:
            prefix_src = self._greedy(prompt_ids, len(truth) - 1)
        else:
            prefix_src = truth
        total = None
        for t, tok in enumerate(truth):
            prefix = [] if self.config.multi_token == "prompt_last" else prefix_src[:t]
            s = self.layer_scores(prompt_ids + prefix, tok)
            total = s if total is None else total + s
        return total / len(truth), truth

    # --- edit ----------------------------------------------------------------------------------
    def edit_batch(self, requests, round_: int) -> dict:
        cfg = self.config
        device = self._device()
        emb = self.model.get_submodule(self.spec.embed).weight.detach()  # (vocab, d_model)
        w_start = {l: self.spec.out_weight(self.model, l).detach().clone() for l in self.layers}
        records = []
        for r in requests:
            with torch.enable_grad(), frozen(self.model):  # gradients w.r.t. the activations only
                scores, truth = self.attribute(r)  # (n_layers, d_ff)
            threshold = cfg.adaptive_threshold * scores.max()
            picked = torch.nonzero(scores > threshold).tolist()  # [[layer_pos, neuron], ...]
            prompt_ids = encode(self.tokenizer, r.query)
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([prompt_ids], device=device)).logits
                orig = int(logits[0, -1].argmax())
                new_ids = encode_target(self.tokenizer, r.new_text)
                if len(new_ids) == 1:
                    add = cfg.target_scale * emb[new_ids[0]]  # (d_model,)
                else:
                    add = cfg.multi_token_scale * emb[new_ids].sum(0)  # (d_model,)
                step = add - cfg.orig_scale * emb[orig]  # (d_model,)
                for li, i in picked:
                    w = self.spec.out_weight(self.model, self.layers[li])  # (d_model, d_ff) view
                    w[:, i] += step.to(w.dtype)
            records.append({
                "case_id": r.case_id, "neurons": [(self.layers[li], i) for li, i in picked],
                "max_score": float(scores.max()), "original_prediction": orig, "attributed": truth,
            })
        delta = {l: float((self.spec.out_weight(self.model, l).detach() - w_start[l]).norm()) for l in self.layers}
        return {
            "updates": records, "n_neurons": [len(x["neurons"]) for x in records],
            "delta_norm": {l: v for l, v in delta.items() if v > 0},
        }


register_method(
    "kn", KNConfig, KNEditor, label="KN", kind="baseline",
    description="KN: finds knowledge neurons by integrated gradients and rewrites their value vectors toward the new object.",
)
