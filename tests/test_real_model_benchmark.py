"""benchmarks/real_model.py without a real model: its FLOP count and its split of the time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from seqedit.data.records import EditRequest
from seqedit.models.arch import spec_for

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
REQUESTS = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "The capital of {} is", "Zorvia", "Mirel Astan works for Quandex", "Quell"),
]


@pytest.fixture(scope="module")
def real_model():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import real_model

        yield real_model
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_flops_of_the_last_layer_are_the_unembedding_at_the_read_positions(real_model, tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    templates = [["{}"], ["The one. {}"]]
    top = real_model.target_flops(tiny_model, tiny_tokenizer, spec, REQUESTS, templates, layer=2)
    d, vocab = spec.d_model(tiny_model), len(tiny_tokenizer)
    assert top["blocks_above"] == 0
    # With no block above L only the unembedding at the target and KL positions depends on δ.
    expected = 2 * top["read_positions"] * 2 * d * vocab / len(REQUESTS) / 1e9
    assert top["gflop_per_request_step"]["floor"] == pytest.approx(expected, abs=1e-3)
    low = real_model.target_flops(tiny_model, tiny_tokenizer, spec, REQUESTS, templates, layer=0)
    g = low["gflop_per_request_step"]
    assert low["blocks_above"] == 2 and low["suffix_tokens"] < low["real_tokens"]
    assert g["floor"] <= g["fast"] < g["reference"]


def test_part_timer_counts_nested_calls_once(real_model, monkeypatch):
    """Exclusive time: an outer part's seconds leave out the timed calls nested in it."""
    clock = [0.0]
    monkeypatch.setattr(real_model.time, "perf_counter", lambda: clock[0])
    timer = real_model.PartTimer()

    def keys():
        clock[0] += 1.0

    inner = timer.wrap("keys", keys)

    def targets():
        clock[0] += 10.0
        inner()
        inner()
        return torch.ones(2, 3), {"steps": [1, 2], "loss": [0.5, 0.25]}

    wrapped = timer.wrap("targets", targets)
    z, log = wrapped()
    wrapped()
    assert timer.calls == {"targets": 2, "keys": 4, "solve": 0, "attribution": 0}
    assert timer.seconds == {"targets": 20.0, "keys": 4.0, "solve": 0.0, "attribution": 0.0}
    assert torch.equal(timer.first_z, z) and timer.first_log["steps"] == [1, 2]
    assert timer.stack == []


def test_fast_is_compared_with_each_other_mode_timed(real_model, tmp_path):
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    rows, files = [], {}
    for mode, seconds, scale in (("fast", 10.0, 1.0), ("reference", 40.0, 1.0), ("per_request", 30.0, 1.0 + 1e-3)):
        files[("memit", mode)] = tmp_path / f"{mode}.pt"
        torch.save(z * scale, files[("memit", mode)])
        rows.append({"method": "memit", "mode": mode, "edit_seconds": seconds, "peak_rss_mb": 1.0,
                     "split_seconds": {"targets": seconds / 2}, "target_steps": [3, 4]})
    out = {c["against"]: c for c in real_model.compare(rows, files)}
    assert set(out) == {"reference", "per_request"}
    assert out["reference"]["speedup_edit"] == 4.0 and out["per_request"]["speedup_edit"] == 3.0
    assert out["reference"]["z_max_rel_diff"] == 0.0
    assert out["per_request"]["z_max_rel_diff"] == pytest.approx(1e-3 / (1 + 1e-3), rel=1e-4)


def test_methods_without_targets_are_compared_by_their_weight_updates(real_model, tmp_path):
    update = {"w.0": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "w.1": torch.zeros(2, 2)}  # an unchanged matrix
    rows, files = [], {}
    for mode, seconds, bump in (("fast", 2.0, 0.0), ("reference", 14.0, 0.01)):
        files[("kn", mode)] = tmp_path / f"{mode}.pt"
        torch.save({n: w + bump * (w != 0) for n, w in update.items()}, files[("kn", mode)])
        rows.append({"method": "kn", "mode": mode, "edit_seconds": seconds, "peak_rss_mb": 1.0,
                     "split_seconds": {"targets": 0.0, "attribution": seconds - 1.0}, "target_steps": None})
    (c,) = real_model.compare(rows, files)
    assert c["speedup_edit"] == 7.0 and c["speedup_attribution"] == 13.0 and "speedup_targets" not in c
    assert c["update_max_rel_diff"] == pytest.approx(0.01 / 1.01, rel=1e-6) and "z_max_rel_diff" not in c


def test_kn_flops_of_the_last_layer_are_a_forward_and_the_unembedding(real_model, tiny_model, tiny_tokenizer):
    from seqedit.core.prompts import encode, encode_target
    from seqedit.methods.kn import KNConfig, KNEditor

    requests = REQUESTS + [EditRequest(2, "{} speaks", "Orin Tallow", "Velorian", "the lute")]  # 2 true tokens
    spec = spec_for(tiny_model)
    n_layers, d, vocab = spec.n_layers(tiny_model), spec.d_model(tiny_model), len(tiny_tokenizer)
    per_tok = real_model.block_matmul_flops(tiny_model, spec)
    last = KNEditor(KNConfig(steps=5, layers=[n_layers - 1]), tiny_model, tiny_tokenizer, spec)
    f = real_model.kn_flops(tiny_model, tiny_tokenizer, spec, requests, last)
    # With only the last layer searched, a point runs no block: the unembedding forward and backward.
    expected = 0
    for r in requests:
        prompt, truth = encode(tiny_tokenizer, r.query), encode_target(tiny_tokenizer, r.true_text)
        for t in range(len(truth)):
            T = len(prompt) + t
            expected += T * n_layers * (per_tok + 4 * d * (T + 1) / 2) + 2 * 5 * 2 * d * vocab
    assert f["passes"] == sum(len(encode_target(tiny_tokenizer, r.true_text)) for r in requests) == 4
    assert f["flop_per_edit"]["fast"] == pytest.approx(expected / len(requests), rel=1e-9)
    every = KNEditor(KNConfig(steps=5), tiny_model, tiny_tokenizer, spec)
    g = real_model.kn_flops(tiny_model, tiny_tokenizer, spec, requests, every)["flop_per_edit"]
    assert f["flop_per_edit"]["fast"] < g["fast"] < g["reference"]


def test_every_mode_timed_reaches_the_method_config(real_model):
    """A run labelled `reference` must run the reference code: each method either takes the mode into
    its config (target_mode, or KN's attribution_mode) or is timed in the fast mode only."""
    import argparse

    from seqedit.registry import available_methods, build_config, get_method

    args = argparse.Namespace(v_loss_layer=29, steps=None)
    one_path = set()
    for method in available_methods():
        if not real_model.has_modes(method):
            one_path.add(method)
            continue
        for mode in real_model.MODES:
            cfg = build_config(get_method(method)[0], real_model.overrides(args, method, mode), method)
            acts = getattr(cfg, "target_mode", None) or getattr(cfg, "attribution_mode")
            assert acts == ("fast" if mode == "fast" else "per_request" if mode == "per_request" and
                            hasattr(cfg, "target_mode") else "reference"), (method, mode)
    assert one_path == {"ft_l", "kne"}
