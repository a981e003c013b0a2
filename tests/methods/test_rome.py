"""ROME: one rank-one update per request, for every request of a batch; flips facts on the toy testbed."""

from pathlib import Path

import pytest
import torch
import yaml

from seqedit.core.hooks import capture
from seqedit.core.prompts import build_batch
from seqedit.core.stats import collect_second_moments
from seqedit.data.records import EditRequest
from seqedit.methods.rome import ROMEConfig, ROMEEditor
from seqedit.models.arch import spec_for
from seqedit.registry import build_config, get_method

from conftest import assert_toy_edits_land, assert_toy_edits_stay_local, TINY_TEXTS, edit_toy_batch, toy_outcome

HPARAMS = Path(__file__).resolve().parents[2] / "config" / "hparams" / "rome"
BATCH = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
    EditRequest(2, "{} speaks", "Orin Tallow", "the lute", "Velorian"),
]
TINY = dict(layers=[1], v_num_grad_steps=6, v_lr=0.3, context_template_length_params=[[3, 2]])


def shuffled_texts(n: int = 300, seed: int = 0) -> list[str]:
    """TINY_TEXTS has 7 distinct lines: too few token contexts for a full-rank E[k kᵀ] at d_ff = 64.
    Random word orders give enough."""
    import random

    words = sorted({w for line in TINY_TEXTS for w in line.split()})
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, 10)) for _ in range(n)]


def _editor(model, tok, **overrides):
    spec = spec_for(model)
    stats = collect_second_moments(model, tok, spec, shuffled_texts(), [1], progress=False)
    return ROMEEditor(ROMEConfig(**{**TINY, **overrides}), model, tok, spec, stats, seed=0)


def _plain_io(editor, request):
    """W_out input and output at the subject-last token of the plain prompt, read independently."""
    batch = build_batch(editor.tokenizer, [request.prompt], [request.subject])
    name = editor.spec.out_proj_name(editor.layer)
    with torch.no_grad(), capture(editor.model, [name], "input") as k, capture(editor.model, [name], "output") as v:
        editor.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return k[name][0, batch.subject_idx[0]], v[name][0, batch.subject_idx[0]]


def test_rome_changes_only_its_layer(tiny_model, tiny_tokenizer):
    editor = _editor(tiny_model, tiny_tokenizer)
    w0 = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    editor.edit_batch(BATCH, 0)
    changed = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == set(editor.param_names()) == {editor.spec.out_weight_name(1)}


def test_rome_edits_every_request_of_a_batch(tiny_model, tiny_tokenizer):
    editor = _editor(tiny_model, tiny_tokenizer)
    spec = editor.spec
    w0 = spec.out_weight(tiny_model, 1).detach().clone()
    info = editor.edit_batch(BATCH, 0)
    assert [u["case_id"] for u in info["updates"]] == [0, 1, 2]
    assert len(editor.last_updates) == 3
    # Right after its own update, each request's plain prompt maps k_in to v* exactly.
    assert max(u["fit_error"] for u in info["updates"]) < 1e-4
    # The last request still does at the end (read back through hooks, not from the editor).
    k_in, v_out = _plain_io(editor, BATCH[-1])
    last = editor.last_updates[-1]
    torch.testing.assert_close(k_in, last["k_in"])
    torch.testing.assert_close(v_out, last["v_star"], rtol=1e-4, atol=1e-4)
    # The total change is the sum of the three rank-one updates, and has rank 3.
    total = (spec.out_weight(tiny_model, 1).detach() - w0).double()  # (d_model, d_ff)
    summed = sum(torch.outer(u["v"], u["u"]) for u in editor.last_updates).double()
    torch.testing.assert_close(total, summed, rtol=1e-4, atol=1e-5)
    s = torch.linalg.svdvals(total)
    assert s[2] > 1e-3 * s[0] and s[3] < 1e-5 * s[0]


def test_rome_only_first_request_would_have_rank_one(tiny_gpt2, tiny_tokenizer):
    # The control for the rank test above: one request gives a rank-one change.
    editor = _editor(tiny_gpt2, tiny_tokenizer)
    w0 = editor.spec.out_weight(tiny_gpt2, 1).detach().clone()
    editor.edit_batch(BATCH[:1], 0)
    s = torch.linalg.svdvals((editor.spec.out_weight(tiny_gpt2, 1).detach() - w0).double())
    assert s[1] < 1e-5 * s[0]


def test_left_vector_solves_the_second_moment(tiny_gpt2, tiny_tokenizer):
    editor = _editor(tiny_gpt2, tiny_tokenizer)
    k = torch.randn(editor.spec.d_ff(tiny_gpt2), generator=torch.Generator().manual_seed(0))
    u = editor.left_vector(k, 0).double()
    assert abs(float(u.norm()) - 1.0) < 1e-6
    cu = editor.cov @ u  # ∝ k
    assert torch.nn.functional.cosine_similarity(cu, k.double(), dim=0) > 1 - 1e-6
    plain = _editor(tiny_gpt2, tiny_tokenizer, mom2_adjustment=False)
    assert plain.cov is None
    torch.testing.assert_close(plain.left_vector(k, 0), k / k.norm())


def test_context_templates_follow_the_length_params(tiny_gpt2, tiny_tokenizer):
    editor = _editor(tiny_gpt2, tiny_tokenizer, context_template_length_params=[[2, 3], [4, 2], [5, 0]])
    groups = editor.context_templates()
    assert [len(g) for g in groups] == [1, 3, 2] and groups[0] == ["{}"]
    assert all(t.endswith(". {}") for g in groups[1:] for t in g)
    assert editor.context_templates() is groups  # generated once
    with pytest.raises(ValueError):
        ROMEConfig(layers=[1, 2])


def test_hparams_files_build_the_config():
    config_cls, _ = get_method("rome")
    files = sorted(HPARAMS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"gpt2-xl", "gpt-j-6b", "llama3-8b", "smollm2-135m", "testbed"}
    for f in files:
        build_config(config_cls, yaml.safe_load(f.read_text()), str(f))


# --- the toy testbed ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    return edit_toy_batch("rome", toy_testbed, toy_world)


def test_toy_batch_flips(edited):
    assert_toy_edits_land(edited)
    # generalization / specificity measured 56-81 / 89-97 on testbeds trained at 1, 2 and 3 threads
    after = toy_outcome(edited)["edit"]
    assert after["generalization"] >= 37.5 and after["specificity"] >= 75.0
    assert len(edited["info"]["updates"]) == 8


def test_toy_held_out_facts_move_far_less_than_the_edited_ones(edited):
    assert_toy_edits_stay_local(edited)


def test_toy_only_the_edited_layer_changes(edited):
    changed = {n for n, p in edited["model"].named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed == set(edited["editor"].param_names())
