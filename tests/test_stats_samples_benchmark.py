"""benchmarks/stats_samples.py without a real model: its emulation of the whole-model pass."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from seqedit.models.arch import spec_for

from conftest import TINY_TEXTS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_whole_model_pass_runs_every_block_and_gives_the_same_sums(tiny_gpt2, tiny_tokenizer):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import stats_samples
    finally:
        sys.path.remove(str(BENCHMARKS))
    spec = spec_for(tiny_gpt2)
    ran = []
    handle = tiny_gpt2.get_submodule(spec.lm_head).register_forward_hook(lambda *a: ran.append(1))
    try:
        stopped, count, _ = stats_samples.collect(tiny_gpt2, tiny_tokenizer, spec, TINY_TEXTS[:6], [0])
        assert not ran
        full, full_count, _ = stats_samples.collect(tiny_gpt2, tiny_tokenizer, spec, TINY_TEXTS[:6], [0], full_forward=True)
        assert ran
    finally:
        handle.remove()
    assert count == full_count > 0
    torch.testing.assert_close(stopped[0], full[0], rtol=1e-6, atol=1e-8)
    assert stats_samples.rel(full[0], stopped[0]) < 1e-6
