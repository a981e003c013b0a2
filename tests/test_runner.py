"""The sequential runner: checkpoints, resume, determinism, refusals."""

import json

import pytest
import torch

from seqedit.data.records import EditRecord, EditRequest
from seqedit.methods.base import Editor
from seqedit.models.arch import spec_for
from seqedit.runner import RunConfig, run_sequential


class NoisyEditor(Editor):
    """Adds seeded noise to one W_out per batch and keeps a running count as its state."""

    name = "noisy"

    def __init__(self, model, spec):
        super().__init__(None, model, None, spec, None)
        self.count = torch.zeros(())

    def edit_batch(self, requests, round_):
        delta = torch.randn(self.spec.d_model(self.model), self.spec.d_ff(self.model)) * 0.01  # global RNG on purpose
        self.spec.add_to_out_weight(self.model, 1, delta)
        self.count += len(requests)
        return {"delta_norm": {1: float(delta.norm())}}

    def param_names(self):
        return [self.spec.out_weight_name(1)]

    def state_dict(self):
        return {"count": self.count.clone()}

    def load_state_dict(self, state):
        self.count = state["count"]


def fake_evaluate(model, tokenizer, records, cfg):
    w = model.transformer.h[1].mlp.c_proj.weight
    s = float(w.detach().double().sum())
    return {"summary": {"efficacy": s, "generalization": len(records), "specificity": 0.0, "fluency": None},
            "per_record": [{"case_id": r.case_id} for r in records]}


RECORDS = [EditRecord(EditRequest(i, "{} is", f"S{i}", "a", "b"), kind="counterfact") for i in range(10)]
CFG = RunConfig(n_edits=10, batch_size=2, eval_every=2, curve_max_records=4)


def run(tiny_gpt2, out, **kw):
    editor = NoisyEditor(tiny_gpt2, spec_for(tiny_gpt2))
    return run_sequential(tiny_gpt2, None, RECORDS, editor, CFG, {}, out, {"x": 1}, seed=3, progress=False,
                          evaluate=fake_evaluate, hidden_probe=False, **kw), editor


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_tokenizer):
    from conftest import make_tiny_model

    full, ed_full = run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "a")
    assert run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "b", stop_after_rounds=3)[0] == {}
    assert (tmp_path / "b" / "checkpoint" / "state.pt").exists()
    assert not (tmp_path / "b" / "metrics.json").exists()
    resumed, ed_res = run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "b")
    assert resumed["final"] == full["final"]
    assert float(ed_res.count) == float(ed_full.count) == 10
    for name in ("metrics.json", "curve.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert not (tmp_path / "b" / "checkpoint").exists()  # removed once complete, its folder too


def test_half_written_checkpoint_is_never_loaded(tmp_path, tiny_tokenizer):
    from conftest import make_tiny_model

    full, _ = run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "a")
    ckpt = tmp_path / "b" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt.tmp").write_bytes(b"truncated garbage")  # what a kill during a save leaves
    again, _ = run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "b")
    assert again["final"] == full["final"]


def test_same_config_gives_identical_metrics_files(tmp_path, tiny_tokenizer):
    from conftest import make_tiny_model

    run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "a")
    run(make_tiny_model("gpt2", len(tiny_tokenizer)), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    curve = json.loads((tmp_path / "a" / "curve.json").read_text())
    assert [p["n_edits"] for p in curve["points"]] == [0, 4, 8, 10]
    assert len(curve["drift"]) == 5 and curve["drift"][-1]["weight_drift"]["transformer.h.1.mlp.c_proj.weight"] > 0


def test_refuses_more_edits_than_records_and_oversized_batches(tmp_path, tiny_gpt2):
    with pytest.raises(ValueError, match="batch_size .* larger than run.n_edits"):
        RunConfig(n_edits=4, batch_size=8)
    editor = NoisyEditor(tiny_gpt2, spec_for(tiny_gpt2))
    with pytest.raises(ValueError, match="exceeds the 10 records"):
        run_sequential(tiny_gpt2, None, RECORDS, editor, RunConfig(n_edits=20, batch_size=2), {}, tmp_path, {},
                       evaluate=fake_evaluate, progress=False, hidden_probe=False)


def test_resumed_run_keeps_hidden_states_rounds_and_memory(tmp_path, tiny_tokenizer):
    import numpy as np

    from conftest import make_tiny_model

    def go(out, **kw):
        model = make_tiny_model("gpt2", len(tiny_tokenizer))
        editor = NoisyEditor(model, spec_for(model))
        return run_sequential(model, tiny_tokenizer, RECORDS, editor, CFG, {}, out, {"x": 1}, seed=3,
                              progress=False, evaluate=fake_evaluate, **kw)

    go(tmp_path / "a")
    go(tmp_path / "b", stop_after_rounds=2)
    go(tmp_path / "b")
    a, b = np.load(tmp_path / "a" / "hidden.npz"), np.load(tmp_path / "b" / "hidden.npz")
    assert a["before_rewrite"].shape == (CFG.curve_max_records, 32) and list(a["case_id"]) == [0, 1, 2, 3]
    for key in ("before_rewrite", "after_rewrite", "before_neighborhood", "after_neighborhood"):
        np.testing.assert_array_equal(a[key], b[key])  # the "before" states survive the resume
    assert np.abs(a["after_rewrite"] - a["before_rewrite"]).max() > 1e-4  # the edits moved them
    curve = json.loads((tmp_path / "b" / "curve.json").read_text())
    assert [r["round"] for r in curve["rounds"]] == [0, 1, 2, 3, 4]
    timing = json.loads((tmp_path / "b" / "timing.json").read_text())
    assert timing["peak_rss_mb"] > 50 and len(timing["rounds"]) == 5


def test_edit_stream_is_seeded_and_covers_distinct_records():
    from seqedit.data.stream import edit_stream, union_of_streams

    items = list(range(50))
    s0, s0_again, s1 = edit_stream(items, 20, 0), edit_stream(items, 20, 0), edit_stream(items, 20, 1)
    assert s0 == s0_again and s0 != s1 and len(set(s0)) == 20
    assert edit_stream(items, 20, 5, shuffle=False) == items[:20]
    union = union_of_streams(items, 20, [0, 1])
    assert union == sorted(set(s0) | set(s1))
    with pytest.raises(ValueError, match="exceeds the 50 records"):
        edit_stream(items, 51, 0)


def test_non_finite_solve_mid_run_names_method_layer_round_and_writes_no_result(tmp_path, tiny_gpt2, tiny_tokenizer):
    """A NaN that appears after a checkpoint (here in MEMIT's C of layer 1 before round 1) stops the
    run at round 1 naming method, layer and round; no result file exists, the last checkpoint does."""
    from seqedit.core.solve import NumericalError
    from seqedit.core.stats import collect_second_moments
    from seqedit.methods.memit import MEMITConfig, MEMITEditor

    from conftest import TINY_TEXTS

    class NaNBeforeRound1(MEMITEditor):
        def edit_batch(self, requests, round_):
            if round_ == 1:
                self.cov[1][3, 3] = float("nan")
            return super().edit_batch(requests, round_)

    spec = spec_for(tiny_gpt2)
    stats = collect_second_moments(tiny_gpt2, tiny_tokenizer, spec, TINY_TEXTS[:7], [0, 1, 2], progress=False)
    cfg = MEMITConfig(layers=[0, 1, 2], mom2_update_weight=5.0, v_num_grad_steps=2, n_context_templates=0)
    editor = NaNBeforeRound1(cfg, tiny_gpt2, tiny_tokenizer, spec, stats, seed=0)
    records = [EditRecord(EditRequest(i, "{} works for", s, o, "Quandex"), kind="counterfact")
               for i, (s, o) in enumerate([("Varkel Dunmore", "Zorvia"), ("Orin Tallow", "Quell"),
                                           ("Tessa Brink", "Velorian")])]
    with pytest.raises(NumericalError, match=r"^memit: layer 1, round 1: non-finite values in the regularised Gram"):
        run_sequential(tiny_gpt2, tiny_tokenizer, records, editor, RunConfig(n_edits=3, batch_size=1), {},
                       tmp_path, {"x": 1}, progress=False, evaluate=fake_evaluate, hidden_probe=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "checkpoint/state.pt"]
    assert torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=False)["round"] == 1


PROBED_RECORDS = [
    EditRecord(EditRequest(i, "{} was born in", s, o, t), kind="counterfact",
               paraphrase_prompts=(f"Where was {s} born? {s} was born in",),
               neighborhood_prompts=(f"{n} was born in", "The capital of Zorvia is"))
    for i, (s, o, t, n) in enumerate([
        ("Varkel Dunmore", "Quell", "Zorvia", "Tessa Brink"), ("Orin Tallow", "Zorvia", "Quell", "Mirel Astan"),
        ("Tessa Brink", "Quandex", "Zorvia", "Orin Tallow"), ("Mirel Astan", "Velorian", "Quell", "Varkel Dunmore"),
        ("Varkel Dunmore", "the lute", "Zorvia", "Orin Tallow"), ("Orin Tallow", "Quell", "Velorian", "Tessa Brink"),
    ])
]


@pytest.mark.parametrize("model_type", ["gpt2", "gptj", "llama"])
def test_shared_evaluation_gives_the_reference_curve_metrics_and_hidden_states(tmp_path, tiny_tokenizer, model_type,
                                                                               monkeypatch):
    """Same run, evaluated by the reference scorer (plus its own probe passes) and by the shared
    scorer: the same curve points, final metrics and probe states within float32 round-off, and
    the shared run evaluates the model once per curve point, the unedited one included."""
    import numpy as np

    import seqedit.evaluate.hidden
    from conftest import make_tiny_model
    from seqedit.evaluate import evaluate_records

    run_cfg = RunConfig(n_edits=6, batch_size=2, eval_every=1, curve_max_records=4)
    calls = []

    def counted(model, tokenizer, records, cfg):
        calls.append(len(records))
        return evaluate_records(model, tokenizer, records, cfg)

    def go(out, eval_cfg):
        model = make_tiny_model(model_type, len(tiny_tokenizer))
        editor = NoisyEditor(model, spec_for(model))
        return run_sequential(model, tiny_tokenizer, PROBED_RECORDS, editor, run_cfg,
                              {"generation": {"n_records": 0}, **eval_cfg}, out, {"x": 1}, seed=3, progress=False,
                              evaluate=counted)

    ref = go(tmp_path / "ref", {"reference": True})

    def no_separate_pass(*args, **kwargs):
        raise AssertionError("the probe states should come from the evaluation passes")

    monkeypatch.setattr(seqedit.evaluate.hidden, "hidden_states", no_separate_pass)
    calls.clear()
    new = go(tmp_path / "new", {})
    assert calls == [4, 2, 4, 6]  # unedited (with the probe), after rounds 0 and 1, final (with the probe)

    curve_ref, curve_new = (json.loads((tmp_path / d / "curve.json").read_text())["points"] for d in ("ref", "new"))
    assert [p["n_edits"] for p in curve_new] == [p["n_edits"] for p in curve_ref] == [0, 2, 4, 6]
    for a, b in [(ref["final"], new["final"]), *zip(curve_ref, curve_new)]:
        assert set(a) == set(b)
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-3), key  # ×100 numbers
            else:
                assert b[key] == value, key
    h_ref, h_new = np.load(tmp_path / "ref" / "hidden.npz"), np.load(tmp_path / "new" / "hidden.npz")
    assert sorted(h_ref.files) == sorted(h_new.files)
    for key in h_ref.files:
        np.testing.assert_allclose(h_new[key], h_ref[key], rtol=1e-5, atol=1e-5)
    assert np.abs(h_new["after_rewrite"] - h_new["before_rewrite"]).max() > 1e-4  # the edits moved them
