"""Causal tracing on tiny random GPT-2 and Llama models: shapes, a direct computation, exact cases."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from seqedit.analysis.tracing import (TracingConfig, default_window, embedding_std, fact_noise, known_mask, memit_window,
                                      peak_layer, subject_span, trace, trace_fact, window_layers)
from seqedit.core.hooks import edit_output
from seqedit.core.prompts import encode_target
from seqedit.data.records import EditRequest
from seqedit.models.arch import spec_for
from seqedit.models.load import tiny_config

# float32 probabilities of a ~400-token vocabulary: one batched row and the same row alone differ
# by reduction order only, a few float32 ulps of p ≈ 1e-3
RTOL, ATOL = 1e-4, 1e-8


def sharp_model(model_type: str, vocab: int, n_layer: int = 4, seed: int = 0):
    """A tiny random model with a wide initialisation, so that noise and restoring move p visibly."""
    torch.manual_seed(seed)
    cfg = tiny_config(model_type, vocab, n_layer=n_layer)
    cfg.initializer_range = 0.3
    return AutoModelForCausalLM.from_config(cfg).eval()


def requests():
    return [
        EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
        EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
        EditRequest(2, "The capital of {} is", "Zorvia", "Varkel", "Quell"),
    ]


def by_hand(model, spec, ids, first, last, target_id, noise, restore: dict[int, torch.Tensor], kind="mlp"):
    """Mean over noise samples of p(target) with one noise sample per forward and the given
    {layer: clean output at `last`} written back by hand."""
    probs = []
    for k in range(noise.shape[0]):
        def corrupt(h, k=k):
            h = h.clone()
            h[0, first : last + 1] = h[0, first : last + 1] + noise[k]
            return h

        handles = [edit_output(model, spec.embed, corrupt)]
        for layer, value in restore.items():
            name = spec.mlp_name(layer) if kind == "mlp" else spec.block_name(layer)

            def put(h, value=value):
                h = h.clone()
                h[0, last] = value
                return h

            handles.append(edit_output(model, name, put))
        for h in handles:
            h.__enter__()
        try:
            with torch.no_grad():
                probs.append(model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)[target_id])
        finally:
            for h in reversed(handles):
                h.__exit__(None, None, None)
    return float(torch.stack(probs).mean())


def clean_outputs(model, spec, ids, last, kind="mlp"):
    from seqedit.core.hooks import capture

    n = spec.n_layers(model)
    names = [spec.mlp_name(l) if kind == "mlp" else spec.block_name(l) for l in range(n)]
    with capture(model, names) as seen, torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    return [seen[names[l]][0, last].clone() for l in range(n)]


def test_window_arithmetic():
    assert default_window(48) == 10 and default_window(30) == 6 and default_window(4) == 1
    assert window_layers(20, 10, 48) == list(range(15, 25))  # ROME's l - 5 … l + 4
    assert window_layers(1, 10, 48) == list(range(0, 6)) and window_layers(46, 10, 48) == list(range(41, 48))
    assert window_layers(3, 1, 30) == [3]
    assert memit_window(17, 5) == [13, 14, 15, 16, 17] and memit_window(2, 5) == [0, 1, 2]
    assert memit_window(5, 5, lowest=1) == [1, 2, 3, 4, 5] and memit_window(3, 5, lowest=2) == [2, 3]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_effect_equals_restoring_by_hand(model_type, tiny_tokenizer):
    model = sharp_model(model_type, len(tiny_tokenizer))
    spec = spec_for(model)
    r = requests()[0]
    ids, first, last = subject_span(tiny_tokenizer, r.prompt, r.subject)
    assert first < last < len(ids) - 1  # a multi-token subject before the prompt's end
    target = encode_target(tiny_tokenizer, r.true_text)[0]
    std = embedding_std(model, spec, [(ids, first, last)])
    noise = 3 * std * fact_noise(7, 0, 3, last - first + 1, model.config.hidden_size)
    window = 2
    # batch_size 4 with 3 noise samples: one group per forward, so chunking is exercised too
    out = trace_fact(model, spec, ids, first, last, target, noise, window, batch_size=4)
    clean = clean_outputs(model, spec, ids, last)
    n = spec.n_layers(model)
    assert len(out["p_restored"]) == len(out["effect"]) == n
    p_corrupt = by_hand(model, spec, ids, first, last, target, noise, {})
    assert out["p_corrupt"] == pytest.approx(p_corrupt, rel=RTOL, abs=ATOL)
    for layer in range(n):
        restore = {l: clean[l] for l in window_layers(layer, window, n)}
        expected = by_hand(model, spec, ids, first, last, target, noise, restore)
        assert out["p_restored"][layer] == pytest.approx(expected, rel=RTOL, abs=ATOL)
        assert out["effect"][layer] == pytest.approx(expected - p_corrupt, rel=1e-3, abs=1e-7)
    # the check means something only if noise and restoring move p far beyond the tolerance
    assert abs(out["p_clean"] - out["p_corrupt"]) > 100 * RTOL * out["p_clean"]
    assert max(abs(e) for e in out["effect"]) > 100 * RTOL * out["p_clean"]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_no_noise_no_effect(model_type, tiny_tokenizer):
    model = sharp_model(model_type, len(tiny_tokenizer))
    cfg = TracingConfig(n_records=3, n_noise=2, noise_factor=0.0, known_only=False)
    result = trace(model, tiny_tokenizer, spec_for(model), requests(), cfg, progress=False)
    for fact in result["facts"]:
        assert fact["p_corrupt"] == pytest.approx(fact["p_clean"], rel=RTOL, abs=ATOL)
        assert max(abs(e) for e in fact["effect"]) < RTOL * fact["p_clean"] + ATOL


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ["mlp", "block"])
def test_last_layer_at_subject_changes_nothing(model_type, kind, tiny_tokenizer):
    """The last layer's output at the subject's last token feeds only that token's logits: restoring it
    leaves p at the prompt's end exactly as corrupted (the subject ends before the prompt does)."""
    model = sharp_model(model_type, len(tiny_tokenizer))
    cfg = TracingConfig(n_records=3, n_noise=3, window=1, kind=kind, known_only=False)
    result = trace(model, tiny_tokenizer, spec_for(model), requests(), cfg, progress=False)
    for fact in result["facts"]:
        assert fact["subject_tokens"][1] < fact["n_tokens"] - 1
        assert abs(fact["effect"][-1]) <= RTOL * fact["p_corrupt"] + ATOL
        assert abs(fact["p_clean"] - fact["p_corrupt"]) > 100 * RTOL * fact["p_clean"]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_last_block_at_a_final_subject_restores_clean(model_type, tiny_tokenizer):
    """When the subject ends the prompt, the last block's output at its last token is all the logits
    read: writing back its clean value gives the clean probability, and no lower layer does."""
    model = sharp_model(model_type, len(tiny_tokenizer))
    r = EditRequest(0, "Where was {}", "Varkel Dunmore", "x", "born")
    cfg = TracingConfig(n_records=1, n_noise=3, window=1, kind="block", known_only=False)
    fact = trace(model, tiny_tokenizer, spec_for(model), [r], cfg, progress=False)["facts"][0]
    assert fact["subject_tokens"][1] == fact["n_tokens"] - 1
    assert abs(fact["p_clean"] - fact["p_corrupt"]) > 100 * RTOL * fact["p_clean"]
    assert fact["p_restored"][-1] == pytest.approx(fact["p_clean"], rel=RTOL, abs=ATOL)
    # earlier tokens read the corrupted subject, so restoring the first block alone is not enough
    assert abs(fact["p_restored"][0] - fact["p_clean"]) > 100 * RTOL * fact["p_clean"]


def test_summary_shapes_and_seed(tiny_tokenizer):
    model = sharp_model("llama", len(tiny_tokenizer))
    spec = spec_for(model)
    cfg = TracingConfig(n_records=2, n_noise=4, known_only=False, memit_n=2, seed=3)
    a = trace(model, tiny_tokenizer, spec, requests(), cfg, progress=False)
    b = trace(model, tiny_tokenizer, spec, requests(), cfg, progress=False)
    c = trace(model, tiny_tokenizer, spec, requests(), TracingConfig(n_records=2, n_noise=4, known_only=False,
                                                                     memit_n=2, seed=4), progress=False)
    assert a["effect"] == b["effect"] and a["facts"] == b["facts"]
    assert a["facts"][0]["p_corrupt"] != c["facts"][0]["p_corrupt"]
    n = spec.n_layers(model)
    assert [x["layer"] for x in a["layers"]] == list(range(n))
    assert a["counts"] == {"records": 3, "checked": 3, "known": 3, "traced": 2}
    assert a["peak_layer"] == max(range(n), key=lambda l: a["effect"][l]) == a["rome_layer"]
    assert a["memit_layers"] == memit_window(a["peak_layer"], 2)
    assert a["settings"]["window"] == default_window(n) and a["seed"] == 3
    for l, x in enumerate(a["layers"]):
        values = torch.tensor([f["effect"][l] for f in a["facts"]], dtype=torch.float64)
        assert x["mean"] == pytest.approx(float(values.mean()), rel=1e-12, abs=1e-15)
        half = 12.706 * float(values.std()) / 2 ** 0.5  # t(0.975, 1) for two facts
        assert x["ci_high"] - x["mean"] == pytest.approx(half, rel=1e-9, abs=1e-15)


def test_known_mask_is_the_greedy_completion(tiny_tokenizer):
    model = sharp_model("gpt2", len(tiny_tokenizer))
    tok = tiny_tokenizer
    known, unknown = [], []
    for i, (prompt, subject) in enumerate([("{} was born in", "Varkel Dunmore"), ("{} works for", "Mirel Astan"),
                                           ("{} speaks", "Orin Tallow"), ("{} plays the", "Tessa Brink")]):
        ids = tok(prompt.format(subject))["input_ids"]
        with torch.no_grad():
            order = model(input_ids=torch.tensor([ids])).logits[0, -1].argsort(descending=True).tolist()
        text = tok.decode([order[0]])
        if text.startswith(" ") and encode_target(tok, text) == [order[0]]:
            known.append(EditRequest(i, prompt, subject, "x", text[1:]))
        for t in order[1:]:
            other = tok.decode([t])
            if other.startswith(" ") and len(other) > 1 and encode_target(tok, other) == [t]:
                unknown.append(EditRequest(i, prompt, subject, "x", other[1:]))
                break
    assert known and unknown
    assert known_mask(model, tok, known + unknown, batch_size=3) == [True] * len(known) + [False] * len(unknown)


def test_bad_settings_fail_with_one_line():
    with pytest.raises(ValueError, match="tracing.kind"):
        TracingConfig(kind="attn")
    with pytest.raises(ValueError, match="tracing.n_noise"):
        TracingConfig(n_noise=0)


@pytest.fixture
def traced_dir(tmp_path, tiny_tokenizer):
    """A saved tiny Llama, a small world in CounterFact form and a tracing config."""
    from seqedit.data.world import WorldConfig, write_world

    model = sharp_model("llama", len(tiny_tokenizer))
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    write_world(WorldConfig(seed=0, n_subjects=8, n_relations=1, n_objects=2, n_records=4, n_filler=0),
                tmp_path / "world")
    return tmp_path


def write_config(d, **tracing):
    import json

    cfg = {"tracing": {"n_records": 3, "n_noise": 2, "known_only": False, **tracing},
           "model": {"name": "tiny", "path": str(d / "model"), "dtype": "float32", "device": "cpu"}}
    (d / "tracing_config.json").write_text(json.dumps(cfg))
    return d / "tracing_config.json"


def test_trace_cli_writes_the_summary_and_the_figure(traced_dir):
    import json

    from seqedit.cli import main
    from seqedit.figures import tracing as figure

    d = traced_dir
    main(["trace", "--config", str(write_config(d, seed=2)), "--model", str(d / "model"), "--records",
          str(d / "world" / "counterfact.json"), "--kind", "counterfact", "--out", str(d / "tracing.json"), "--quiet"])
    result = json.loads((d / "tracing.json").read_text())
    assert result["counts"] == {"records": 4, "checked": 4, "known": 4, "traced": 3}
    assert result["seed"] == 2 and result["settings"]["n_noise"] == 2 and len(result["effect"]) == 4
    assert result["memit_layers"][-1] == result["peak_layer"] == result["rome_layer"]
    assert result["provenance"]["config_hash"] and result["records"].endswith("counterfact.json")
    paths = figure.plot(figure.load_tracing(d / "tracing.json"), d / "figures", "tiny")
    assert [p.name for p in paths] == ["tiny_tracing.png", "tiny_tracing.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_trace_cli_fails_in_one_line_when_no_record_is_known(traced_dir, capsys):
    from seqedit.cli import main

    d = traced_dir
    with pytest.raises(SystemExit) as err:
        main(["trace", "--config", str(write_config(d, known_only=True)), "--model", str(d / "model"), "--records",
              str(d / "world" / "counterfact.json"), "--kind", "counterfact", "--out", str(d / "t.json"), "--quiet"])
    assert err.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the loader's progress bar
    assert last.startswith("seqedit trace: error: none of the 4 records is known")
    assert not (d / "t.json").exists()


def test_records_are_checked_only_until_enough_are_known(tiny_tokenizer):
    from seqedit.analysis.tracing import KNOWN_BATCH

    model = sharp_model("gpt2", len(tiny_tokenizer), n_layer=2)
    many = requests() * 14  # 42 records, more than one batch of the knowledge check
    cfg = TracingConfig(n_records=2, n_noise=1, known_only=False)
    result = trace(model, tiny_tokenizer, spec_for(model), many, cfg, progress=False)
    assert result["counts"] == {"records": 42, "checked": KNOWN_BATCH, "known": KNOWN_BATCH, "traced": 2}


def test_schema_defaults_are_the_library_defaults():
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml")
                            .read_text())
    props = schema["properties"]["tracing"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == asdict(TracingConfig())


def test_skipped_layers_take_no_part_in_the_peak():
    # SmolLM2-like: the first MLP restores most facts, then a second bump in the early-middle layers
    effect = [0.07, 0.068, 0.068, 0.072, 0.02, 0.026, 0.023, 0.024, 0.017, 0.01]
    assert peak_layer(effect, 6) == 3
    assert peak_layer(effect, 6, skip_layers=1) == 5  # windows of layers 0-3 restore layer 0
    assert peak_layer(effect, 1, skip_layers=1) == 3
    with pytest.raises(ValueError, match="leaves no layer"):
        peak_layer(effect, 6, skip_layers=8)
    with pytest.raises(ValueError, match="skip_layers must be >= 0"):
        TracingConfig(skip_layers=-1)
