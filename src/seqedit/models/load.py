"""Loading any causal LM by hub id or local path, offline; tiny random builders for tests.

`load_model` takes the same `AutoModelForCausalLM.from_pretrained(path_or_id)` route for the
self-trained testbed (a local directory written by `save_pretrained`) and for a hub model.
Without network access a hub id only works if it is already in the local cache; otherwise
the error says which path to use instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def load_model(path_or_id: str, dtype: str = "float32", device: str = "cpu"):
    """Return (model, tokenizer) in eval mode on `device`."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    local = Path(path_or_id)
    looks_local = local.exists() or str(path_or_id).startswith((".", "/", "results", "data"))
    if looks_local and not (local / "config.json").is_file():
        raise FileNotFoundError(f"model path {path_or_id} does not exist or holds no config.json")
    try:
        tok = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=DTYPES[dtype])
    except OSError as err:
        if looks_local:
            raise
        raise OSError(
            f"could not load {path_or_id!r} (no hub access here, HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}); "
            "download it elsewhere and set model.path to the local directory"
        ) from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def tiny_config(model_type: str, vocab_size: int, n_layer: int = 3, d_model: int = 32, d_ff: int = 64):
    """A small config of the GPT-2, GPT-J or Llama layout (random weights, offline)."""
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if model_type == "gpt2":
        return AutoConfig.for_model("gpt2", n_layer=n_layer, n_embd=d_model, n_head=4, n_inner=d_ff, n_positions=128, **common)
    if model_type == "gptj":
        return AutoConfig.for_model(
            "gptj", n_layer=n_layer, n_embd=d_model, n_head=4, n_inner=d_ff, n_positions=128, rotary_dim=4, **common
        )
    if model_type == "llama":
        return AutoConfig.for_model(
            "llama", num_hidden_layers=n_layer, hidden_size=d_model, intermediate_size=d_ff, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, **common,
        )
    raise ValueError(f"no tiny config for model_type {model_type!r}")
