"""A read-only key/value cache of a prompt's prefix, for running later positions block by block.

When a change enters the residual stream at position p of block L (a target's δ, a patched FFN
neuron), the positions before p give the same keys and values in every block, whatever the
change. One no-grad forward records them; the changed positions are then run through the
blocks above L on their own, attending to the cached prefix (`ModelSpec.block_inputs`).
"""

from __future__ import annotations

import torch


class PrefixCache:
    """Key/value cache of the positions before p, per layer, read-only: `update` returns the
    cached keys/values followed by the new ones and never stores the new ones, so one cache
    serves every forward that runs positions from p on."""

    def __init__(self, kv: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.kv = kv

    def update(self, key, value, layer_idx, *_args, **_kwargs):
        k, v = self.kv[layer_idx]
        return torch.cat([k, key.to(k.dtype)], dim=-2), torch.cat([v, value.to(v.dtype)], dim=-2)


def cached_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values) of one layer of a transformers DynamicCache, each (B, heads, T, head_dim)."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]  # older transformers
