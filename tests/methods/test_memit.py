"""MEMIT on the toy testbed: one batch flips the edited facts and leaves held-out facts alone."""

import pytest
import torch

from seqedit.evaluate.counterfact import evaluate_counterfact
from seqedit.methods.memit import MEMITConfig

from conftest import TOY_LOCATE, edit_toy_batch


@pytest.fixture(scope="module")
def edited(toy_testbed, toy_world):
    return edit_toy_batch("memit", toy_testbed, toy_world, cfg=MEMITConfig(**TOY_LOCATE))


def test_edited_facts_flip(edited):
    assert edited["before_edit"]["efficacy"] <= 10.0  # the testbed knew them
    after = evaluate_counterfact(edited["model"], edited["tok"], edited["edit"])["summary"]
    assert after["efficacy"] >= 50.0  # measured 50 on the 1-thread toy testbed (75-80 with other seeds of it)


def test_held_out_facts_do_not_flip(edited):
    after = evaluate_counterfact(edited["model"], edited["tok"], edited["held"])["summary"]
    assert after["efficacy"] <= edited["before_held"]["efficacy"] + 12.5  # at most one of eight


def test_only_the_edited_layers_change(edited):
    changed = {n for n, p in edited["model"].named_parameters() if not torch.equal(p, edited["w0"][n])}
    assert changed == {edited["spec"].out_weight_name(l) for l in TOY_LOCATE["layers"]}


def test_previous_keys_accumulate_after_the_batch(edited):
    prev = edited["editor"].prev_keys
    for l in TOY_LOCATE["layers"]:
        assert prev[l].abs().sum() > 0
        torch.testing.assert_close(prev[l], prev[l].T)
    assert set(edited["info"]["delta_norm"]) == set(TOY_LOCATE["layers"])
