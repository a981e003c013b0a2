"""Shared fixtures: the benchmark data folder and tiny random-initialised models.

`shared_data` skips a test when ../shared/data is absent, except in CI (CI=true), where
the data must be present and its absence is a failure.

Torch runs with SEQEDIT_TEST_THREADS intra-op threads (default 1) in every test and fixture.
Float reductions, and so every trained or edited weight, depend on that count the way they
depend on the CPU's kernels; CI runs the numerical tests at 1 and at 2 threads, so a test that
only passes at one reduction order fails there rather than on a user's machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEQEDIT_SHARED_DATA", REPO.parent / "shared" / "data"))
TEST_THREADS = int(os.environ.get("SEQEDIT_TEST_THREADS", "1"))

TINY_TEXTS = [
    "Varkel Dunmore was born in Zorvia.",
    "The capital of Zorvia is Quell.",
    "Mirel Astan works for Quandex.",
    "Orin Tallow speaks Velorian.",
    "Tessa Brink plays the lute.",
    "Where was Varkel Dunmore born? Zorvia.",
    "nq question: who founded quandex? Mirel Astan.",
] * 40


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"benchmark data folder {SHARED_DATA} is missing in CI")
        pytest.skip(f"benchmark data folder {SHARED_DATA} is absent (place ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from seqedit.models.tokenizer import train_tokenizer

    return train_tokenizer(TINY_TEXTS, vocab_size=400)


def make_tiny_model(model_type: str, vocab_size: int, seed: int = 0):
    """A tiny random-initialised causal LM of the given layout, built offline from a config."""
    from seqedit.models.load import tiny_config
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, vocab_size))
    return model.eval()


def generated_stats_setup(folder: Path, tokenizer, n_samples: int) -> dict:
    """A tiny Llama saved in folder/model and a stats config (folder/stats.json) that sums over
    n_samples texts it generates itself; returns the config."""
    model = make_tiny_model("llama", len(tokenizer))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    generated = {"prompts": ["", "The"], "n_tokens": 8, "batch_size": 4}
    cfg = {"stats": {"layers": [0, 1], "n_samples": n_samples, "source": "generated", "seed": 5, "generated": generated},
           "model": {"name": "tiny", "path": str(folder / "model"), "dtype": "float32", "device": "cpu"}}
    (folder / "stats.json").write_text(json.dumps(cfg))
    return cfg


@pytest.fixture(params=["gpt2", "gptj", "llama"])
def tiny_model(request, tiny_tokenizer):
    return make_tiny_model(request.param, len(tiny_tokenizer))


@pytest.fixture
def tiny_gpt2(tiny_tokenizer):
    return make_tiny_model("gpt2", len(tiny_tokenizer))


# A small world and a testbed trained on it, shared by the tests that need a model that
# knows facts (edits flip, the knowledge check). About 90 s on 2 cores.
TOY_WORLD = dict(seed=0, n_subjects=48, n_relations=2, n_objects=4, n_records=24, n_filler=40, names="unique")
TOY_TESTBED = dict(seed=0, vocab_size=512, n_layer=4, n_embd=64, n_head=4, n_positions=48, steps=1500,
                   batch_size=64, lr=0.005, warmup_steps=50)
# MEMIT-family settings that flip facts on the toy testbed: a wide clamp (the reference 0.75 is
# too tight for so small a model) and every layer below the last.
TOY_LOCATE = dict(layers=[0, 1, 2], mom2_update_weight=5.0, clamp_norm_factor=4.0, v_num_grad_steps=40,
                  n_context_templates=0)


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    from seqedit.data.world import WorldConfig, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(WorldConfig(**TOY_WORLD), out)
    return out


@pytest.fixture(scope="session")
def toy_testbed(toy_world, tmp_path_factory):
    """(model_dir, world_dir): a testbed trained on the toy world's corpus."""
    from seqedit.models.testbed import TestbedConfig, train_testbed

    out = tmp_path_factory.mktemp("testbed")
    lines = (toy_world / "corpus.txt").read_text().splitlines()
    # Session fixtures run before the per-test thread fixture; pin the thread count here too,
    # since float reductions (and so the trained weights) depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    try:
        train_testbed(lines, TestbedConfig(**TOY_TESTBED), out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(autouse=True)
def torch_threads():
    """TEST_THREADS intra-op threads (tiny models: more cost more than they give)."""
    before = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(before)


REPO = Path(__file__).resolve().parents[1]


def testbed_hparams(method: str, **overrides):
    """`method`'s config built from config/hparams/<method>/testbed.yaml, overrides merged."""
    import yaml

    from seqedit.registry import build_config, get_method

    path = REPO / "config" / "hparams" / method / "testbed.yaml"
    config_cls, _ = get_method(method)
    return build_config(config_cls, {**yaml.safe_load(path.read_text()), **overrides}, str(path))


def edit_toy_batch(method: str, toy_testbed, toy_world, edit: slice = slice(0, 8), held: slice = slice(8, 16),
                   cfg=None, with_stats: bool = True) -> dict:
    """One batch of toy facts edited by `method` (its testbed hyperparameters unless `cfg`) on a fresh
    copy of the toy testbed, with TEST_THREADS torch threads. `with_stats` collects the layer statistics of
    cfg.layers over the toy corpus (the closed-form methods need them).

    Returns model, tok, spec, cfg, editor, info, the edited and held-out records, the weights before
    (w0) and the CounterFact summaries before the edit (before_edit, before_held).
    """
    from seqedit.core.stats import collect_second_moments
    from seqedit.data import load_records
    from seqedit.evaluate.counterfact import evaluate_counterfact
    from seqedit.models.arch import spec_for
    from seqedit.models.load import load_model
    from seqedit.registry import get_method

    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)  # module fixtures run before the autouse thread fixture
    try:
        model, tok = load_model(str(toy_testbed))
        spec = spec_for(model)
        records = load_records(toy_world / "counterfact.json", "counterfact")
        cfg = cfg if cfg is not None else testbed_hparams(method)
        layers = getattr(cfg, "layers", None)
        stats = None
        if with_stats and layers:
            lines = (toy_world / "corpus.txt").read_text().splitlines()
            stats = collect_second_moments(model, tok, spec, lines, layers, progress=False)
        edit_records, held_records = records[edit], records[held]
        before_edit = evaluate_counterfact(model, tok, edit_records)["summary"]
        before_held = evaluate_counterfact(model, tok, held_records)["summary"]
        w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        editor = get_method(method)[1](cfg, model, tok, spec, stats, seed=0)
        info = editor.edit_batch([r.request for r in edit_records], 0)
    finally:
        torch.set_num_threads(threads)
    return dict(model=model, tok=tok, spec=spec, cfg=cfg, editor=editor, info=info, edit=edit_records,
                held=held_records, w0=w0, before_edit=before_edit, before_held=before_held)


# What one batch of 8 toy edits must do, for the locate-then-edit methods (MEMIT, AlphaEdit, NSE,
# NMKE, ROME). The toy testbed's weights depend on the CPU's kernels and the thread count, and with 8
# facts a group's efficacy moves in steps of 12.5; measured on testbeds trained at 1, 2 and 3
# threads (three reduction orders): efficacy of the edited facts 62.5-100, the rise of their mean
# p(new) - p(true) 1.26-1.90, the rise of the held-out facts' at most 0.26 of the edited facts'.
# The bounds sit well outside that spread and still fail an edit that does not land (rise 0) or
# one that writes the new objects for every subject (both rises alike).
TOY_MIN_EFFICACY = 50.0  # at least half of the 8 edits flip (the unedited testbed: none)
TOY_MIN_RISE = 75.0  # the edited facts' mean p(new) - p(true), x100, climbs by at least 0.75
TOY_MAX_HELD_RATIO = 0.5  # the held-out facts' mean climbs at most half as far


def toy_outcome(edited: dict) -> dict:
    """The edited and held-out records' summaries after an `edit_toy_batch`, and how far each group's
    efficacy magnitude (100 x mean of p(new) - p(true) on the rewrite prompt) rose with the edit."""
    from seqedit.evaluate.counterfact import evaluate_counterfact

    if "outcome" not in edited:
        after_edit = evaluate_counterfact(edited["model"], edited["tok"], edited["edit"])["summary"]
        after_held = evaluate_counterfact(edited["model"], edited["tok"], edited["held"])["summary"]
        edited["outcome"] = dict(
            edit=after_edit, held=after_held,
            edit_rise=after_edit["efficacy_magnitude"] - edited["before_edit"]["efficacy_magnitude"],
            held_rise=after_held["efficacy_magnitude"] - edited["before_held"]["efficacy_magnitude"])
    return edited["outcome"]


def assert_toy_edits_land(edited: dict):
    out = toy_outcome(edited)
    assert edited["before_edit"]["efficacy"] <= 10.0  # the testbed knew them
    assert out["edit"]["efficacy"] >= TOY_MIN_EFFICACY, out["edit"]
    assert out["edit_rise"] >= TOY_MIN_RISE, out


def assert_toy_edits_stay_local(edited: dict):
    out = toy_outcome(edited)
    assert out["held_rise"] <= TOY_MAX_HELD_RATIO * out["edit_rise"], out


# Fixtures that cost minutes: every test that uses one runs on the same xdist worker, so each is
# built once per run rather than once per worker. The Slurm cluster has a group of its own (one test
# cluster at a time).
XDIST_GROUPS = {"slurm_cluster": "slurm", "slurm_run": "slurm", "toy_run": "toy_run", "toy_testbed": "toy_testbed"}
# The groups are the longest pieces of work: they are handed out first, in this order (the addopts
# turn off xdist's own reordering by test count), so that none of them starts last on a worker that
# has already run many short tests.
GROUP_ORDER = ["slurm", "toy_run", "toy_testbed"]
SLURM_TEST = REPO / "tests" / "workflow" / "test_slurm.py"


def runs_slurm_test(config) -> bool:
    """Whether this run collects the real-Slurm test and was asked to run it (SEQEDIT_SLURM_TEST=1)."""
    if os.environ.get("SEQEDIT_SLURM_TEST") != "1":
        return False
    here = Path(config.invocation_params.dir)
    paths = [a.split("::")[0] for a in config.args] or [str(REPO / p) for p in config.getini("testpaths")]
    for path in paths:
        path = (here / path).resolve()
        if path == SLURM_TEST or path in SLURM_TEST.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU (xdist's count), and one more when the real-Slurm test runs:
    its worker spends most of its minutes waiting on the scheduler's status checks, while the jobs
    it submitted run in Slurm's own processes."""
    if runs_slurm_test(config) and not os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cpus + 1
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    groups = {}
    for item in items:
        used = getattr(item, "fixturenames", ())
        group = next((g for name, g in XDIST_GROUPS.items() if name in used), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            groups[item] = group
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    items.sort(key=lambda item: rank.get(groups.get(item), len(GROUP_ORDER)))  # stable within a rank


UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after xdist's hook, which tags a grouped test's node id with "@group"
def pytest_collection_finish(session):
    """On an xdist worker under --dist loadgroup, every grouped test must carry its group in its
    node id, the only thing the scheduler reads. Where it does not (a pytest whose node ids xdist
    cannot rewrite), the groups are spread over the workers: two Slurm test clusters at once, a toy
    run per worker. Then every grouped test fails at setup, before its fixtures are built."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    untagged = [item for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if untagged:
        session.config.stash[UNGROUPED] = (
            f"pytest-xdist's --dist loadgroup left {len(untagged)} grouped tests untagged under pytest "
            f"{pytest.__version__}, so they would not share a worker; install the pinned test versions "
            "(pip install -e '.[test]') or run on one process (-n 0)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    problem = item.config.stash.get(UNGROUPED, None)
    if problem and item.get_closest_marker("xdist_group"):
        pytest.fail(problem, pytrace=False)
