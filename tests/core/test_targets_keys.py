import pytest
import torch

from seqedit.core.hooks import capture, stop_after
from seqedit.core.keys import collect_keys, hidden_at_subject
import seqedit.core.targets as targets_mod
from seqedit.core.targets import TargetConfig, length_groups, optimize_targets
from seqedit.core.templates import generate_context_templates
from seqedit.data.records import EditRequest
from seqedit.models.arch import spec_for

REQUESTS = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
    EditRequest(2, "{} speaks", "Orin Tallow", "the lute", "Velorian"),
]
# Different prompt lengths, the subject not always first, targets of one and several tokens.
MIXED = REQUESTS + [
    EditRequest(3, "The capital of {} is", "Zorvia", "Mirel Astan works for Quandex", "Quell"),
    EditRequest(4, "Where was {} born? In", "Tessa Brink", "Quell", "Zorvia"),
    # the subject last in a long prompt: the largest p, and a row no wider than its one target token
    EditRequest(5, "Of all the lute players the best known is {}", "Orin Tallow", "Quell", "Zorvia"),
]


def test_context_templates_depend_only_on_seed(tiny_gpt2, tiny_tokenizer):
    a = generate_context_templates(tiny_gpt2, tiny_tokenizer, 3, 5, seed=11)
    b = generate_context_templates(tiny_gpt2, tiny_tokenizer, 3, 5, seed=11)
    c = generate_context_templates(tiny_gpt2, tiny_tokenizer, 3, 5, seed=12)
    assert a == b and a != c
    assert a[0] == ["{}"] and len(a[1]) == 3
    assert all(t.endswith(". {}") and t.count("{}") == 1 for t in a[1])


def test_batched_targets_equal_per_request_targets(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    templates = [["{}"], ["The one. {}", "A b c. {}"]]
    cfg = TargetConfig(layer=1, n_steps=8, lr=0.3)
    z_b, log_b = optimize_targets(tiny_model, tiny_tokenizer, spec, REQUESTS, templates, cfg, mode="reference")
    z_r, log_r = optimize_targets(tiny_model, tiny_tokenizer, spec, REQUESTS, templates, cfg, mode="per_request")
    assert z_b.shape == (3, spec.d_model(tiny_model))
    torch.testing.assert_close(z_b, z_r, rtol=1e-4, atol=1e-5)
    assert log_b["steps"] == log_r["steps"]
    # The optimisation did something, and the model's weights are untouched.
    h = hidden_at_subject(tiny_model, tiny_tokenizer, spec, 1, REQUESTS).T
    assert (z_b - h).norm(dim=1).min() > 0
    assert all(p.grad is None for p in tiny_model.parameters())


def test_target_lowers_the_loss_and_respects_the_clamp(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    # Layer 1 of 3: a change at the subject must reach later positions through attention.
    # No weight decay or KL here: on a random model only the NLL term is meaningful.
    cfg = TargetConfig(layer=1, n_steps=15, lr=0.1, clamp_norm_factor=0.5, weight_decay=0.0, kl_factor=0.0)
    z, log = optimize_targets(tiny_gpt2, tiny_tokenizer, spec, REQUESTS[:1], [["{}"]], cfg)
    h = hidden_at_subject(tiny_gpt2, tiny_tokenizer, spec, 1, REQUESTS[:1]).T
    assert (z - h).norm() <= 0.5 * h.norm() * (1 + 1e-5)
    cfg0 = TargetConfig(layer=1, n_steps=1, weight_decay=0.0, kl_factor=0.0)
    _, log0 = optimize_targets(tiny_gpt2, tiny_tokenizer, spec, REQUESTS[:1], [["{}"]], cfg0)
    assert log["loss"][0] < log0["loss"][0]


def test_keys_average_templates_by_group(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    t1, t2 = "The one. {}", "A b c. {}"
    both = collect_keys(tiny_model, tiny_tokenizer, spec, [0, 1], REQUESTS, [["{}"], [t1, t2]])
    plain = collect_keys(tiny_model, tiny_tokenizer, spec, [1], REQUESTS, [["{}"]])[1]
    k1 = collect_keys(tiny_model, tiny_tokenizer, spec, [1], REQUESTS, [[t1]])[1]
    k2 = collect_keys(tiny_model, tiny_tokenizer, spec, [1], REQUESTS, [[t2]])[1]
    assert both[1].shape == (spec.d_ff(tiny_model), 3)
    torch.testing.assert_close(both[1], 0.5 * plain + 0.25 * (k1 + k2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("module,layer", [("block", 0), ("block", 1), ("mlp", 0), ("mlp", 1)])
def test_fast_targets_equal_reference_targets(tiny_model, tiny_tokenizer, module, layer):
    """Only the positions from the subject on, above layer L: the same z, losses and step counts."""
    spec = spec_for(tiny_model)
    templates = [["{}"], ["The one. {}", "A b c d e f. {}"]]
    cfg = TargetConfig(layer=layer, n_steps=8, lr=0.3, module=module)
    z_f, log_f = optimize_targets(tiny_model, tiny_tokenizer, spec, MIXED, templates, cfg, mode="fast")
    z_r, log_r = optimize_targets(tiny_model, tiny_tokenizer, spec, MIXED, templates, cfg, mode="reference")
    assert optimize_targets.__defaults__[-1] == "fast"
    # float32, a few steps of Adam over a 32-wide model: rounding differences stay ~1e-5 relative.
    rel = (z_f - z_r).norm(dim=1) / z_r.norm(dim=1)
    assert rel.max() < 1e-4, rel
    assert log_f["steps"] == log_r["steps"]
    torch.testing.assert_close(torch.tensor(log_f["loss"]), torch.tensor(log_r["loss"]), rtol=1e-4, atol=1e-5)
    # The optimisation moved z away from the unedited value.
    name = spec.block_name(layer) if module == "block" else spec.mlp_name(layer)
    assert ((z_f - _plain_output(tiny_model, tiny_tokenizer, name, MIXED)).norm(dim=1) > 1e-3).all()
    assert all(p.grad is None for p in tiny_model.parameters())


@pytest.mark.parametrize("grouping", ["one", "each", "default", "parts"])
def test_fast_targets_do_not_depend_on_how_rows_are_grouped(tiny_model, tiny_tokenizer, monkeypatch, grouping):
    """One padded group, one group per row, the cost-optimal split, or one group run in parts of 3
    rows (each part's forward and backward in turn): the same z as the reference."""
    spec = spec_for(tiny_model)
    templates = [["{}"], ["The one. {}", "A b c d e f. {}"]]
    cfg = TargetConfig(layer=0, n_steps=6, lr=0.3)
    z_r, log_r = optimize_targets(tiny_model, tiny_tokenizer, spec, MIXED, templates, cfg, mode="reference")
    split = {"one": lambda w: [list(range(len(w)))], "each": lambda w: [[i] for i in reversed(range(len(w)))],
             "default": length_groups, "parts": lambda w: [list(range(len(w)))]}[grouping]
    if grouping == "parts":
        monkeypatch.setattr(targets_mod, "PART_ROWS", 3)
    seen = []
    monkeypatch.setattr(targets_mod, "length_groups", lambda w: seen.append(list(w)) or split(w))
    z_f, log_f = optimize_targets(tiny_model, tiny_tokenizer, spec, MIXED, templates, cfg, mode="fast")
    widths = seen[0]
    assert len(widths) == len(MIXED) * 3 + len(MIXED) and widths[-len(MIXED):] == [1] * len(MIXED)
    assert len(set(widths[: 3 * len(MIXED)])) > 1  # MIXED has prompts of several widths
    assert ((z_f - z_r).norm(dim=1) / z_r.norm(dim=1)).max() < 1e-4
    assert log_f["steps"] == log_r["steps"]


def test_length_groups_minimise_padding_plus_overhead():
    import itertools
    import random

    def cost(groups, widths, overhead):
        return sum(len(g) * max(widths[i] for i in g) + overhead for g in groups)

    rng = random.Random(0)
    for _ in range(40):
        widths = [rng.randint(1, 9) for _ in range(rng.randint(1, 9))]
        overhead = rng.choice([0, 2, 8])
        groups = length_groups(widths, max_groups=3, overhead=overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(widths)))  # a partition
        assert len(groups) <= 3
        # brute force over every cut of the width-sorted rows into at most 3 runs
        order = sorted(range(len(widths)), key=lambda i: (widths[i], i))
        best = min(
            cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], widths, overhead)
            for k in range(3) for cuts in itertools.combinations(range(1, len(order)), k)
        )
        assert cost(groups, widths, overhead) == best
    assert length_groups([3, 1, 3, 1], overhead=0) == [[1, 3], [0, 2]]
    assert length_groups([3, 1, 3, 1], overhead=100) == [[0, 1, 2, 3]]
    assert length_groups([]) == []
    # a long batch: the programme runs over the distinct widths, not the rows
    widths = [rng.randint(1, 30) for _ in range(20000)]
    groups = length_groups(widths)
    assert sorted(i for g in groups for i in g) == list(range(len(widths))) and len(groups) <= 8


def _plain_output(model, tok, name, requests):
    from seqedit.core.prompts import build_batch

    out = []
    for r in requests:
        b = build_batch(tok, [r.prompt], [r.subject])
        with capture(model, [name]) as seen:
            model(input_ids=b.input_ids, attention_mask=b.attention_mask)
        out.append(seen[name][0, b.subject_idx[0]])
    return torch.stack(out)


def test_fast_targets_see_the_cached_prefix(tiny_model, tiny_tokenizer):
    """The positions before the subject matter: a different context changes the fast z."""
    spec = spec_for(tiny_model)
    cfg = TargetConfig(layer=0, n_steps=3, lr=0.3)
    z_a, _ = optimize_targets(tiny_model, tiny_tokenizer, spec, REQUESTS[:1], [["The one. {}"]], cfg)
    z_b, _ = optimize_targets(tiny_model, tiny_tokenizer, spec, REQUESTS[:1], [["A b c d e f. {}"]], cfg)
    z_ra, _ = optimize_targets(tiny_model, tiny_tokenizer, spec, REQUESTS[:1], [["The one. {}"]], cfg, mode="reference")
    assert (z_a - z_b).norm() > 1e-3 * z_a.norm()
    assert (z_a - z_ra).norm() < 1e-4 * z_ra.norm()


def test_unknown_target_mode_is_rejected(tiny_gpt2, tiny_tokenizer):
    with pytest.raises(ValueError, match="mode must be one of"):
        optimize_targets(tiny_gpt2, tiny_tokenizer, spec_for(tiny_gpt2), REQUESTS, [["{}"]], TargetConfig(layer=0),
                         mode="quick")


def test_keys_and_hidden_states_stop_at_the_deepest_module_read(tiny_model, tiny_tokenizer):
    """No block above the one read and no unembedding runs; the values equal a full forward's."""
    spec = spec_for(tiny_model)
    fired = []
    later = [spec.block_name(2), spec.final_norm, spec.lm_head]
    handles = [tiny_model.get_submodule(n).register_forward_hook(lambda *_a, n=n: fired.append(n)) for n in later]
    try:
        keys = collect_keys(tiny_model, tiny_tokenizer, spec, [0, 1], REQUESTS, [["{}"]])
        h = hidden_at_subject(tiny_model, tiny_tokenizer, spec, 1, REQUESTS)
    finally:
        for hd in handles:
            hd.remove()
    assert fired == []
    torch.testing.assert_close(h.T, _plain_output(tiny_model, tiny_tokenizer, spec.block_name(1), REQUESTS),
                               rtol=1e-5, atol=1e-6)
    from seqedit.core.prompts import build_batch

    batch = build_batch(tiny_tokenizer, [r.prompt for r in REQUESTS], [r.subject for r in REQUESTS])
    name = spec.out_proj_name(1)
    with capture(tiny_model, [name], what="input") as seen:
        logits = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert logits.shape[-1] == len(tiny_tokenizer)
    full = seen[name][torch.arange(3), torch.tensor(batch.subject_idx)].T
    torch.testing.assert_close(keys[1], full, rtol=1e-5, atol=1e-6)


def test_stop_after_waits_for_every_named_module(tiny_gpt2, tiny_tokenizer):
    spec = spec_for(tiny_gpt2)
    ran = []
    hooks = [tiny_gpt2.get_submodule(spec.block_name(l)).register_forward_hook(lambda *_a, l=l: ran.append(l))
             for l in range(3)]
    ids = torch.tensor([[1, 2, 3]])
    try:
        with stop_after(tiny_gpt2, [spec.block_name(1), spec.block_name(0)]):
            tiny_gpt2(input_ids=ids)
            ran.append("after")  # never reached: the forward ended at block 1
    finally:
        for hd in hooks:
            hd.remove()
    assert ran == [0, 1]
    with pytest.raises(ValueError, match="at least one"):
        with stop_after(tiny_gpt2, []):
            pass


def test_fast_mlp_targets_fall_back_to_reference_where_the_ffn_output_is_not_summed(tiny_gpt2, tiny_tokenizer):
    """A layout whose block does not add its FFN output to the residual stream takes the full forward;
    the fast path unembeds only the read positions (a 2-D input to the unembedding)."""
    import dataclasses

    spec = spec_for(tiny_gpt2)
    cfg = TargetConfig(layer=0, n_steps=3, lr=0.3, module="mlp")
    seen = []
    handle = tiny_gpt2.get_submodule(spec.lm_head).register_forward_hook(lambda _m, a, _o: seen.append(a[0].dim()))
    try:
        optimize_targets(tiny_gpt2, tiny_tokenizer, spec, REQUESTS, [["{}"]], cfg, mode="fast")
        fast_dims, seen[:] = list(seen), []
        other = dataclasses.replace(spec, mlp_adds_to_residual=False)
        z_f, log_f = optimize_targets(tiny_gpt2, tiny_tokenizer, other, REQUESTS, [["{}"]], cfg, mode="fast")
        fallback_dims = list(seen)
    finally:
        handle.remove()
    # the fast path: one 2-D unembedding per group of rows and step; the fallback: one 3-D per step
    assert len(fast_dims) % 3 == 0 and set(fast_dims) == {2} and fallback_dims == [3, 3, 3]
    z_r, log_r = optimize_targets(tiny_gpt2, tiny_tokenizer, spec, REQUESTS, [["{}"]], cfg, mode="reference")
    torch.testing.assert_close(z_f, z_r, rtol=1e-6, atol=1e-7)  # the same computation
    assert log_f["steps"] == log_r["steps"]
