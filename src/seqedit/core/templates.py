"""Context templates: "{}" plus short model-sampled prefixes, as in MEMIT's compute_ks/z.

The reference samples them without a seed and caches them in a module global, so two runs
edit with different prefixes. Here they come from an explicit generator, are returned to
the caller (who keeps them in the editor state) and depend only on model and seed.
"""

from __future__ import annotations

import torch

from seqedit.core.generate import generate

SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


def generate_context_templates(
    model, tokenizer, n_templates: int = 5, length: int = 10, seed: int = 0, top_k: int = 5
) -> list[list[str]]:
    """Groups of templates: [["{}"], [g_1 + ". {}", ..., g_n + ". {}"]]."""
    if n_templates == 0:
        return [["{}"]]
    gen = torch.Generator().manual_seed(seed)
    starts = [SEED_WORDS[i % len(SEED_WORDS)] for i in range(n_templates)]
    samples = []
    for word in starts:  # one call per word, so each prefix has its own prompt length
        n_prompt = len(tokenizer(word)["input_ids"])
        samples += generate(model, tokenizer, [word], n_prompt + length, top_k=top_k, generator=gen)
    cleaned = [s.replace("{", " ").replace("}", " ").replace("\n", " ").strip() + ". {}" for s in samples]
    return [["{}"], cleaned]


def flatten(templates: list[list[str]]) -> list[str]:
    return [t for group in templates for t in group]


def fill_context(context: str, prompt: str) -> str:
    """Put a request prompt (itself holding "{}" for the subject) into a context template."""
    return context.replace("{}", prompt, 1)
