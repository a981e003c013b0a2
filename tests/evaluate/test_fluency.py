"""Fluency: word tokenisation, n-gram entropy by hand, and seeded top-k generation."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tiny_model
from seqedit.data.records import EditRecord, EditRequest
from seqedit.evaluate.fluency import evaluate_fluency, generate, ngram_entropy, text_ngram_entropy, word_tokenize

PROMPTS = ["Varkel Dunmore was born in", "The capital of Zorvia is", "Orin Tallow speaks", "Mirel"]


# --- word_tokenize --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        ("I don't know; it's fine.", ["I", "do", "n't", "know", ";", "it", "'s", "fine", "."]),
        ("They'll pay $1,000 (3.5%) in the U.S.", ["They", "'ll", "pay", "$", "1,000", "(", "3.5", "%", ")", "in", "the", "U.S."]),
        ("a well-known O'Neil -- can't", ["a", "well-known", "O'Neil", "--", "ca", "n't"]),
        ('He said "wait..."', ["He", "said", '"', "wait", "...", '"']),
        ("", []),
    ],
)
def test_word_tokenize(text, tokens):
    assert word_tokenize(text) == tokens


# --- ngram_entropy --------------------------------------------------------------------------


def test_all_distinct_ngrams_have_log2_entropy():
    # 6 distinct words: 5 distinct bigrams (H2 = log2 5) and 4 distinct trigrams (H3 = log2 4 = 2).
    text = "alpha beta gamma delta epsilon zeta"
    expected = (2 / 3 * math.log2(5) + 4 / 3 * 2.0) / 2
    assert text_ngram_entropy(text) == pytest.approx(expected)
    assert ngram_entropy([text]) == pytest.approx(expected)


def test_repeated_ngrams_hand_count():
    # tokens a b a b a b: bigrams ab×3, ba×2; trigrams aba×2, bab×2.
    h2 = -(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4))
    h3 = 1.0
    assert text_ngram_entropy("a b a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert text_ngram_entropy("a a a a a a") == 0.0  # one bigram, one trigram type
    assert text_ngram_entropy("one") == 0.0  # too short for any bigram


def test_ngram_entropy_averages_texts_and_repetition_lowers_it():
    varied = "the cat sat on the mat while a dog ran past the old red barn"
    repeated = "the cat sat " * 5
    assert text_ngram_entropy(repeated) < text_ngram_entropy(varied)
    assert ngram_entropy([varied, repeated]) == pytest.approx((text_ngram_entropy(varied) + text_ngram_entropy(repeated)) / 2)
    assert ngram_entropy(["x y z"], weights=(1.0,), ns=(2,)) == pytest.approx(1.0)  # 2 distinct bigrams
    with pytest.raises(ValueError):
        ngram_entropy([])


# --- generate ------------------------------------------------------------------------------


def test_generate_is_deterministic_per_seed(tiny_tokenizer, tiny_gpt2):
    run = lambda seed: generate(tiny_gpt2, tiny_tokenizer, PROMPTS, max_length=30, top_k=5,
                                generator=torch.Generator().manual_seed(seed), batch_size=2)
    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert a != c
    for prompt, text in zip(PROMPTS, a):
        assert text.startswith(prompt)
        assert len(text) > len(prompt)


def test_generate_needs_a_generator(tiny_tokenizer, tiny_gpt2):
    with pytest.raises(ValueError, match="Generator"):
        generate(tiny_gpt2, tiny_tokenizer, PROMPTS, max_length=20)


def naive_greedy(model, tokenizer, prompt: str, max_length: int) -> str:
    """Greedy decoding without KV cache, one prompt alone: the oracle for top_k = 1."""
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        while len(ids) < max_length:
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("model_type", ["gpt2", "gptj", "llama"])
def test_top1_generation_matches_uncached_greedy(tiny_tokenizer, model_type):
    """top_k = 1 is greedy: the KV-cached, length-grouped batches must equal single-prompt decoding."""
    model = make_tiny_model(model_type, len(tiny_tokenizer), seed=1)
    prompts = PROMPTS + ["Tessa Brink plays the", "Orin Tallow speaks"]  # a repeated length group
    texts = generate(model, tiny_tokenizer, prompts, max_length=24, top_k=1,
                     generator=torch.Generator().manual_seed(0), batch_size=2)
    assert texts == [naive_greedy(model, tiny_tokenizer, p, 24) for p in prompts]


def test_prompt_at_max_length_is_returned_unchanged(tiny_tokenizer, tiny_gpt2):
    prompt = "The capital of Zorvia is"
    n = len(tiny_tokenizer(prompt)["input_ids"])
    out = generate(tiny_gpt2, tiny_tokenizer, [prompt], max_length=n, generator=torch.Generator().manual_seed(0))
    assert out == [prompt]


def test_evaluate_fluency(tiny_tokenizer, tiny_gpt2):
    req = EditRequest(case_id=0, prompt="{} was born in", subject="Varkel Dunmore", target_new="Quell", target_true="Zorvia")
    records = [
        EditRecord(request=req, kind="counterfact", generation_prompts=("Varkel Dunmore is", "Varkel Dunmore was", "unused")),
        EditRecord(request=req, kind="counterfact", generation_prompts=("Zorvia is",)),
        EditRecord(request=req, kind="counterfact", generation_prompts=("not used",)),
    ]
    out = evaluate_fluency(tiny_gpt2, tiny_tokenizer, records, n_records=2, n_prompts=2, max_length=30, top_k=5, seed=4)
    assert out["n_texts"] == 3
    assert [s.split(" ")[0] for s in out["samples"]] == ["Varkel", "Varkel", "Zorvia"]
    assert out["fluency"] == pytest.approx(100 * ngram_entropy(out["samples"]))
    again = evaluate_fluency(tiny_gpt2, tiny_tokenizer, records, n_records=2, n_prompts=2, max_length=30, top_k=5, seed=4)
    assert again == out
