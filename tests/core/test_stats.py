import torch

from seqedit.core.hooks import capture
from seqedit.core.stats import LayerStats, collect_second_moments, sample_texts
from seqedit.models.arch import spec_for

from conftest import TINY_TEXTS


def test_second_moments_match_direct_computation(tiny_model, tiny_tokenizer, tmp_path):
    spec = spec_for(tiny_model)
    texts = sorted(set(TINY_TEXTS))
    stats = collect_second_moments(tiny_model, tiny_tokenizer, spec, texts, [0, 2], batch_size=3, progress=False)
    # Direct: one unpadded forward per text, keys of every token.
    direct = {0: 0, 2: 0}
    count = 0
    for t in texts:
        ids = torch.tensor([tiny_tokenizer(t)["input_ids"]])
        names = [spec.out_proj_name(0), spec.out_proj_name(2)]
        with capture(tiny_model, names, what="input") as seen, torch.no_grad():
            tiny_model(input_ids=ids)
        for l, n in zip([0, 2], names):
            k = seen[n][0].double()
            direct[l] = direct[l] + k.T @ k
        count += ids.shape[1]
    assert stats.count == count
    for l in (0, 2):
        torch.testing.assert_close(stats.mom2[l], direct[l], rtol=1e-5, atol=1e-6)
        cov = stats.cov(l)
        torch.testing.assert_close(cov, cov.T)
        assert torch.linalg.eigvalsh(cov).min() > -1e-8  # PSD


def test_the_pass_stops_after_the_deepest_layer_read(tiny_model, tiny_tokenizer):
    """No block after the deepest statistics layer and no unembedding runs; the sums are those of
    a full forward (the test above)."""
    spec = spec_for(tiny_model)
    n_layers = len(tiny_model.get_submodule(spec.block_name(0).rsplit(".", 1)[0]))
    ran = []
    names = [spec.block_name(l) for l in range(n_layers)] + [spec.lm_head]
    handles = [tiny_model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n in names]
    try:
        collect_second_moments(tiny_model, tiny_tokenizer, spec, TINY_TEXTS[:4], [0, 1], batch_size=2, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert ran, "no block ran"
    assert set(ran) == {spec.block_name(0)}, f"modules past layer 1's MLP ran: {sorted(set(ran))}"


def test_stats_roundtrip_and_missing_layer(tiny_gpt2, tiny_tokenizer, tmp_path):
    spec = spec_for(tiny_gpt2)
    stats = collect_second_moments(tiny_gpt2, tiny_tokenizer, spec, TINY_TEXTS[:7], [1], progress=False)
    stats.save(tmp_path / "s.pt")
    back = LayerStats.load(tmp_path / "s.pt")
    assert back.count == stats.count and back.layers == [1]
    torch.testing.assert_close(back.cov(1), stats.cov(1))
    try:
        back.cov(0)
    except KeyError as err:
        assert "layer 0" in str(err)
    else:
        raise AssertionError("a missing layer must raise")


def test_layer_beyond_model_is_refused(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    try:
        collect_second_moments(tiny_gpt2, tiny_tokenizer, spec, TINY_TEXTS[:3], [7], progress=False)
    except ValueError as err:
        assert "out of range" in str(err) and "3 layers" in str(err)
    else:
        raise AssertionError("layer 7 of a 3-layer model must be refused")


def test_sample_texts_is_seeded():
    lines = [f"line {i}" for i in range(100)]
    assert sample_texts(lines, 10, 1) == sample_texts(lines, 10, 1)
    assert sample_texts(lines, 10, 1) != sample_texts(lines, 10, 2)
    assert sample_texts(lines, 1000, 1) == lines


def test_a_stream_of_texts_in_chunks_gives_the_sums_of_one_list(tiny_gpt2, tiny_tokenizer):
    # texts may arrive lazily (a streamed dataset) and are length-sorted one chunk at a time
    spec = spec_for(tiny_gpt2)
    texts = TINY_TEXTS[:60]
    whole = collect_second_moments(tiny_gpt2, tiny_tokenizer, spec, texts, [1], batch_size=4, progress=False)
    chunked = collect_second_moments(tiny_gpt2, tiny_tokenizer, spec, iter(texts), [1], batch_size=4,
                                     progress=False, chunk_batches=2)
    assert chunked.count == whole.count and chunked.meta["n_texts"] == whole.meta["n_texts"] == 60
    # The keys come from float32 forwards over differently padded batches, so each key carries a
    # few float32 ulps (~1e-7 relative) of batch-dependent rounding before the float64 sums: compare
    # at float32 precision, relative to the largest entry, not at float64's.
    scale = float(whole.mom2[1].abs().max())
    torch.testing.assert_close(chunked.mom2[1], whole.mom2[1], rtol=1e-5, atol=1e-5 * scale)
    assert not torch.equal(chunked.mom2[1], torch.zeros_like(chunked.mom2[1]))


def test_no_text_is_an_error(tiny_gpt2, tiny_tokenizer):
    import pytest

    with pytest.raises(ValueError, match="no non-empty text"):
        collect_second_moments(tiny_gpt2, tiny_tokenizer, spec_for(tiny_gpt2), iter([]), [0], progress=False)


def test_the_token_digest_names_the_sample_not_its_batches(tiny_gpt2, tiny_tokenizer):
    """Two machines that read the same texts agree on `tokens_sha256` whatever their batches or order;
    one text changed, or another cut, is another sample."""
    spec = spec_for(tiny_gpt2)
    texts = TINY_TEXTS[:40]

    def digest(texts, **kw):
        kw = {"batch_size": 4, **kw}
        return collect_second_moments(tiny_gpt2, tiny_tokenizer, spec, texts, [1], progress=False, **kw).meta["tokens_sha256"]

    base = digest(texts)
    assert len(base) == 64
    assert digest(texts, batch_size=7, chunk_batches=1) == base
    assert digest(list(reversed(texts))) == base
    assert digest([*texts[:-1], texts[-1] + " again"]) != base
    assert digest(texts, max_length=4) != base
