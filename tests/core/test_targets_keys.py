import torch

from seqedit.core.keys import collect_keys, hidden_at_subject
from seqedit.core.targets import TargetConfig, optimize_targets
from seqedit.core.templates import generate_context_templates
from seqedit.data.records import EditRequest
from seqedit.models.arch import spec_for

REQUESTS = [
    EditRequest(0, "{} was born in", "Varkel Dunmore", "Quell", "Zorvia"),
    EditRequest(1, "{} works for", "Mirel Astan", "Zorvia", "Quandex"),
    EditRequest(2, "{} speaks", "Orin Tallow", "the lute", "Velorian"),
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
    z_b, log_b = optimize_targets(tiny_model, tiny_tokenizer, spec, REQUESTS, templates, cfg, mode="batched")
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
