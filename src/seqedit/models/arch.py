"""Architecture facts as data: where each layout keeps its blocks, FFN and unembedding.

Nothing else in the package branches on a model's name. A method asks the `ModelSpec`
for a module or for the FFN output projection as a [d_out, d_in] matrix, and writes
updates through `add_to_out_weight`, which handles GPT-2's Conv1D orientation.

Running blocks directly (the fast target optimisation runs only the layers above L on a few
positions) needs three more facts per layout: the keyword under which a block takes its
key/value cache, where the rotary embedding module lives (Llama computes cos/sin once in
the model and hands them to every block; GPT-J rotates inside attention from position ids;
GPT-2 has absolute positions at the embedding only), and whether a block adds its FFN output
to the residual stream as a plain sum (pre-norm blocks, sequential or parallel), so that a
change to the FFN output at one position equals the same change to the block output there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    blocks: str  # path of the ModuleList of transformer blocks
    mlp: str  # FFN module, relative to a block
    mlp_in: tuple[str, ...]  # FFN input projections, relative to the FFN ("c_fc",) or gate/up
    mlp_out: str  # FFN output projection W_out, relative to the FFN; its input is the key
    out_transposed: bool  # True: weight stored [d_in, d_out] (GPT-2 Conv1D)
    in_transposed: bool
    final_norm: str
    lm_head: str
    embed: str
    gated: bool = False
    cache_arg: str = "past_key_values"  # keyword of a block's key/value cache argument
    rotary: str | None = None  # model-level rotary embedding module, called (h, position_ids) -> (cos, sin)
    mlp_adds_to_residual: bool = True  # block output = ... + FFN output (no norm after the sum)

    # --- module paths ---------------------------------------------------------------
    def block_name(self, layer: int) -> str:
        return f"{self.blocks}.{layer}"

    def mlp_name(self, layer: int) -> str:
        return f"{self.blocks}.{layer}.{self.mlp}"

    def out_proj_name(self, layer: int) -> str:
        return f"{self.blocks}.{layer}.{self.mlp}.{self.mlp_out}"

    def in_proj_names(self, layer: int) -> list[str]:
        return [f"{self.blocks}.{layer}.{self.mlp}.{n}" for n in self.mlp_in]

    def out_weight_name(self, layer: int) -> str:
        return self.out_proj_name(layer) + ".weight"

    # --- modules and weights ----------------------------------------------------------
    def n_layers(self, model: nn.Module) -> int:
        return len(model.get_submodule(self.blocks))

    def check_layers(self, model: nn.Module, layers) -> None:
        n = self.n_layers(model)
        bad = [l for l in layers if not 0 <= int(l) < n]
        if bad:
            raise ValueError(f"layer index {bad} out of range: the model has {n} layers (0..{n - 1})")

    def out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return model.get_submodule(self.out_proj_name(layer))

    def out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """W_out of `layer` as a [d_out=d_model, d_in=d_ff] view (no copy)."""
        w = self.out_proj(model, layer).weight
        return w.T if self.out_transposed else w

    def d_ff(self, model: nn.Module) -> int:
        return self.out_weight(model, 0).shape[1]

    def d_model(self, model: nn.Module) -> int:
        return self.out_weight(model, 0).shape[0]

    @torch.no_grad()
    def add_to_out_weight(self, model: nn.Module, layer: int, delta: torch.Tensor) -> None:
        """W_out[layer] += delta, with delta given as [d_out, d_in]."""
        w = self.out_proj(model, layer).weight
        d = delta.T if self.out_transposed else delta
        if d.shape != w.shape:
            raise ValueError(f"update for layer {layer} has shape {tuple(delta.shape)}, expected [d_out, d_in]")
        w.add_(d.to(device=w.device, dtype=w.dtype))

    def block_inputs(self, model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor,
                     attention_mask: torch.Tensor, cache) -> dict:
        """Keyword arguments for calling one block on `hidden` (B, S, d) directly.

        `position_ids` (B, S) are the absolute positions of the S tokens, `attention_mask` an
        additive float mask (B, 1, S, n_keys) over the cached keys followed by the S new ones,
        `cache` an object whose `update(k, v, layer_idx)` returns the keys/values to attend to.
        """
        kw = {self.cache_arg: cache, "attention_mask": attention_mask, "position_ids": position_ids}
        if self.rotary is not None:
            kw["position_embeddings"] = model.get_submodule(self.rotary)(hidden, position_ids)
        return kw

    def unembed(self, model: nn.Module) -> torch.Tensor:
        """Unembedding matrix [vocab, d_model]."""
        return model.get_submodule(self.lm_head).weight

    # --- final hidden states and the unembedding ----------------------------------------
    def trunk(self, model: nn.Module) -> nn.Module:
        """The module that embeds, runs every block and applies the final norm (the parent of
        `final_norm`); its `last_hidden_state` is what `head` turns into logits."""
        return model.get_submodule(self.final_norm.rsplit(".", 1)[0])

    def head(self, model: nn.Module) -> nn.Module:
        """The unembedding module, bias included where the layout has one (GPT-J)."""
        return model.get_submodule(self.lm_head)


SPECS: dict[str, ModelSpec] = {
    "gpt2": ModelSpec(
        model_type="gpt2", blocks="transformer.h", mlp="mlp", mlp_in=("c_fc",), mlp_out="c_proj",
        out_transposed=True, in_transposed=True, final_norm="transformer.ln_f", lm_head="lm_head",
        embed="transformer.wte",
    ),
    "gptj": ModelSpec(
        model_type="gptj", blocks="transformer.h", mlp="mlp", mlp_in=("fc_in",), mlp_out="fc_out",
        out_transposed=False, in_transposed=False, final_norm="transformer.ln_f", lm_head="lm_head",
        embed="transformer.wte", cache_arg="layer_past",
    ),
    "llama": ModelSpec(
        model_type="llama", blocks="model.layers", mlp="mlp", mlp_in=("gate_proj", "up_proj"),
        mlp_out="down_proj", out_transposed=False, in_transposed=False, final_norm="model.norm",
        lm_head="lm_head", embed="model.embed_tokens", gated=True, rotary="model.rotary_emb",
    ),
}


def spec_for(model: nn.Module) -> ModelSpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SPECS:
        raise ValueError(f"unsupported model_type {model_type!r}; known layouts: {sorted(SPECS)}")
    return SPECS[model_type]
