"""MEMIT: plain MEMIT and MEMIT-seq differ exactly by the previous keys (tiny models); on the toy
testbed one batch flips the edited facts and leaves held-out facts alone."""

import pytest
import torch

from seqedit.core.keys import collect_keys
from seqedit.core.stats import collect_second_moments
from seqedit.data.records import EditRequest
from seqedit.methods.memit import MEMITConfig, MEMITEditor, MEMITSeqEditor
from seqedit.models.arch import spec_for
from seqedit.registry import get_method

from conftest import assert_toy_edits_land, assert_toy_edits_stay_local, TINY_TEXTS, TOY_LOCATE, edit_toy_batch, make_tiny_model

TINY_LAYERS = [0, 1]
BATCH_1 = [EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
           EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex")]
BATCH_2 = [EditRequest(2, "{} speaks", "Orin Tallow", "Quandex", "Velorian"),
           EditRequest(3, "{} plays the", "Tessa Brink", "Quell", "lute")]
# λ small against the batch's own keys, so that C_p = K₁K₁ᵀ weighs in the second solve
TINY_CFG = dict(layers=TINY_LAYERS, n_context_templates=2, context_template_length=3, v_num_grad_steps=5,
                mom2_update_weight=0.5)


def _weights(model, spec):
    return {l: spec.out_weight(model, l).detach().double().clone() for l in TINY_LAYERS}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_memit_and_memit_seq_are_registered_apart():
    assert get_method("memit") == (MEMITConfig, MEMITEditor)
    assert get_method("memit_seq") == (MEMITConfig, MEMITSeqEditor)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_plain_and_sequential_memit_differ_exactly_by_the_previous_keys(model_type, tiny_tokenizer):
    """Batch 2 of memit_seq = plain MEMIT's batch 2 with C_p = K₁K₁ᵀ passed explicitly, K₁ the
    first batch's keys on the model after its edit; plain MEMIT without it is another update."""
    models = [make_tiny_model(model_type, len(tiny_tokenizer)) for _ in range(3)]  # same seed: same weights
    spec = spec_for(models[0])
    stats = collect_second_moments(models[0], tiny_tokenizer, spec, TINY_TEXTS, TINY_LAYERS, progress=False)
    cfg = MEMITConfig(**TINY_CFG)
    seq, explicit, plain = (cls(cfg, m, tiny_tokenizer, spec, stats, seed=0)
                            for cls, m in zip((MEMITSeqEditor, MEMITEditor, MEMITEditor), models))
    for editor in (seq, explicit, plain):
        editor.edit_batch(BATCH_1, 0)
    # batch 1: no earlier keys for either, the same update (bit for bit: the same operations)
    for l in TINY_LAYERS:
        assert torch.equal(spec.out_weight(models[0], l), spec.out_weight(models[1], l))
    assert plain.prev_keys == {l: None for l in TINY_LAYERS}  # plain MEMIT keeps nothing
    # memit_seq's C_p: K₁K₁ᵀ with K₁ recomputed on the edited model
    k1 = collect_keys(models[1], tiny_tokenizer, spec, TINY_LAYERS, BATCH_1, explicit.context_templates())
    cp = {l: k.double() @ k.double().T for l, k in k1.items()}  # (d_ff, d_ff)
    for l in TINY_LAYERS:
        torch.testing.assert_close(seq.prev_keys[l], cp[l], rtol=1e-10, atol=1e-12 * float(cp[l].abs().max()))
    explicit.prev_keys = cp

    before = [_weights(m, spec) for m in models]
    for editor in (seq, explicit, plain):
        editor.edit_batch(BATCH_2, 1)
    delta = [{l: w - b[l] for l, w in _weights(m, spec).items()} for m, b in zip(models, before)]
    for l in TINY_LAYERS:
        # float32 weights: the stored updates agree to float32 rounding of W (|W| ~ 0.02 · √d_ff entries)
        assert _rel(delta[1][l], delta[0][l]) < 1e-4, l
        # the previous keys matter: without them the second update is measurably different
        assert _rel(delta[2][l], delta[0][l]) > 1e-2, l


@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    return edit_toy_batch("memit", toy_testbed, toy_world, cfg=MEMITConfig(**TOY_LOCATE))


def test_edited_facts_flip(edited):
    assert_toy_edits_land(edited)


def test_held_out_facts_move_far_less_than_the_edited_ones(edited):
    assert_toy_edits_stay_local(edited)


def test_only_the_edited_layers_change(edited):
    changed = {n for n, p in edited["model"].named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed == {edited["spec"].out_weight_name(l) for l in TOY_LOCATE["layers"]}


def test_plain_memit_keeps_no_previous_keys(edited):
    assert edited["editor"].prev_keys == {l: None for l in TOY_LOCATE["layers"]}
    assert "prev_keys" in edited["editor"].state_dict()
    assert set(edited["info"]["delta_norm"]) == set(TOY_LOCATE["layers"])
