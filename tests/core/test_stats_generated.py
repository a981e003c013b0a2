"""Layer statistics over the model's own generations, and the n/2 → n convergence check."""

from __future__ import annotations

import json

import pytest
import torch

from seqedit.core.stats import LayerStats, collect_second_moments
from seqedit.data.texts import GeneratedTextConfig, _filter_logits, generated_texts
from seqedit.models.arch import spec_for

from conftest import TINY_TEXTS, generated_stats_setup, make_tiny_model


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_tokenizer):
    return make_tiny_model(request.param, len(tiny_tokenizer))


def test_generation_is_seeded(model, tiny_tokenizer):
    cfg = GeneratedTextConfig(prompts=["", "The", "It is"], n_tokens=6, batch_size=2)
    a = generated_texts(model, tiny_tokenizer, cfg, 7, seed=1, progress=False)
    b = generated_texts(model, tiny_tokenizer, cfg, 7, seed=1, progress=False)
    c = generated_texts(model, tiny_tokenizer, cfg, 7, seed=2, progress=False)
    assert a == b and a != c and len(a) == 7
    # text i continues prompt i mod 3
    for i, text in enumerate(a):
        assert text.startswith(cfg.prompts[i % 3])
    assert len(set(a)) == 7


def test_top_k_one_is_the_greedy_continuation(model, tiny_tokenizer):
    """With top_k = 1 sampling must pick the argmax, and the key/value cache must give the same
    continuation as full forward passes."""
    cfg = GeneratedTextConfig(prompts=["The capital of"], n_tokens=5, top_k=1, batch_size=2)
    text = generated_texts(model, tiny_tokenizer, cfg, 2, seed=0, progress=False)
    ids = tiny_tokenizer("The capital of")["input_ids"]
    with torch.no_grad():
        for _ in range(5):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    expected = tiny_tokenizer.decode(ids, skip_special_tokens=True)
    assert text == [expected, expected]


def test_nucleus_and_top_k_cuts():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()  # noqa: E731
    assert kept(_filter_logits(logits, 0, 0.75)) == [True, True, False, False]  # 0.5 + 0.3 >= 0.75
    assert kept(_filter_logits(logits, 0, 0.5)) == [True, False, False, False]
    assert kept(_filter_logits(logits, 0, 0.9)) == [True, True, True, False]
    assert kept(_filter_logits(logits, 3, 1.0)) == [True, True, True, False]
    assert kept(_filter_logits(logits[:, [3, 1, 0, 2]], 2, 1.0)) == [False, True, True, False]


def test_convergence_equals_a_direct_computation(model, tiny_tokenizer):
    spec = spec_for(model)
    texts = TINY_TEXTS[:7] * 6 + ["Varkel Dunmore speaks Velorian and works for Quandex."] * 10
    half = 21
    stats = collect_second_moments(model, tiny_tokenizer, spec, texts, [0, 2], batch_size=8, progress=False, half=half)
    whole = collect_second_moments(model, tiny_tokenizer, spec, texts, [0, 2], batch_size=8, progress=False)
    first = collect_second_moments(model, tiny_tokenizer, spec, texts[:half], [0, 2], batch_size=8, progress=False)
    conv = stats.meta["convergence"]
    assert conv["n_texts"] == len(texts) and conv["n_texts_half"] == half
    assert conv["tokens"] == whole.count and conv["tokens_half"] == first.count
    for layer in (0, 2):
        # float32 keys, float64 sums: batches composed differently agree to float32 precision
        torch.testing.assert_close(stats.cov(layer), whole.cov(layer), rtol=1e-5, atol=1e-9)
        c_n, c_half = whole.cov(layer), first.cov(layer)
        expected = float(torch.linalg.matrix_norm(c_n - c_half) / torch.linalg.matrix_norm(c_n))
        assert expected > 0.01  # the second half differs (it adds a new sentence), so the check can fail
        assert conv["relative_change"][layer] == pytest.approx(expected, rel=1e-4)
    assert conv["max_relative_change"] == max(conv["relative_change"].values())
    assert "convergence" not in whole.meta


def test_identical_halves_have_converged(tiny_tokenizer):
    model = make_tiny_model("llama", len(tiny_tokenizer))
    texts = TINY_TEXTS[:7] * 2
    stats = collect_second_moments(model, tiny_tokenizer, spec_for(model), texts, [1], progress=False, half=7)
    assert stats.meta["convergence"]["relative_change"][1] < 1e-6  # float32 keys, same texts twice


def test_stats_cli_records_generated_source(tmp_path, tiny_tokenizer):
    from seqedit.cli import main

    generated_stats_setup(tmp_path, tiny_tokenizer, n_samples=10)
    for out in ("a.pt", "b.pt"):
        main(["stats", "--config", str(tmp_path / "stats.json"), "--model", str(tmp_path / "model"),
              "--out", str(tmp_path / out), "--quiet"])
    a, b = LayerStats.load(tmp_path / "a.pt"), LayerStats.load(tmp_path / "b.pt")
    assert a.meta["source"] == "generated" and a.meta["n_samples"] == 10 and a.meta["seed"] == 5
    assert a.meta["generated"]["prompts"] == ["", "The"] and a.meta["generated"]["top_k"] == 50
    assert a.meta["n_texts"] == 10 and a.meta["convergence"]["n_texts_half"] == 5
    assert set(a.meta["convergence"]["relative_change"]) == {0, 1}
    assert a.count == b.count and all(torch.equal(a.mom2[l], b.mom2[l]) for l in (0, 1))  # seeded end to end


def test_corpus_flag_is_refused_for_generated(tmp_path):
    from seqedit.cli import main

    (tmp_path / "stats.json").write_text(json.dumps({"stats": {"layers": [0], "source": "generated"}}))
    (tmp_path / "corpus.txt").write_text("a line\n")
    with pytest.raises(SystemExit):
        main(["stats", "--config", str(tmp_path / "stats.json"), "--model", "x", "--corpus",
              str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "s.pt")])


def test_bad_generation_settings_fail_with_one_line():
    with pytest.raises(ValueError, match="stats.generated.top_p"):
        GeneratedTextConfig(top_p=0.0)
    with pytest.raises(ValueError, match="stats.generated.prompts"):
        GeneratedTextConfig(prompts=[])
