"""`seqedit stats --reuse`: the statistics of another results folder, copied only where they were
summed from the same inputs (stage config, model files, corpus, threads)."""

from __future__ import annotations

import json

import pytest
import torch

from seqedit.core.stats import LayerStats
from seqedit.stats_reuse import find_reusable, stats_inputs

from test_cli import run_cli


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # --threads sets the process's count


def test_statistics_are_copied_only_from_the_same_inputs(tmp_path, tiny_tokenizer, capsys, monkeypatch, one_thread):
    from conftest import generated_stats_setup

    cfg = generated_stats_setup(tmp_path, tiny_tokenizer, n_samples=6)

    def stats(out, config="stats.json", *extra, threads="1"):
        return run_cli(capsys, "stats", "--config", str(tmp_path / config), "--model", str(tmp_path / "model"),
                       "--out", str(tmp_path / out), "--threads", threads, *extra)

    first = tmp_path / "study" / "stats" / "mom2.pt"
    assert stats(first)[0] == 0
    inputs = LayerStats.load(first).meta["inputs"]
    assert inputs == stats_inputs(cfg, tmp_path / "model", None, 1) and inputs["threads"] == 1
    assert inputs["config"] == json.loads(json.dumps(cfg, sort_keys=True)) and len(inputs["model"]) == 64

    # the same inputs: the file is copied byte for byte, nothing is generated or summed
    monkeypatch.setattr("seqedit.data.texts.generated_texts", lambda *a, **k: pytest.fail("generated again"))
    monkeypatch.setattr("seqedit.core.stats.collect_second_moments", lambda *a, **k: pytest.fail("summed again"))
    code, err = stats("zsre/stats/mom2.pt", "stats.json", "--reuse", str(tmp_path / "nowhere.pt"), str(first))
    assert code == 0, err
    assert f"statistics: {tmp_path / 'nowhere.pt'} does not exist" in err
    assert f"statistics: reused {first} (the same model, settings and threads)" in err
    assert (tmp_path / "zsre" / "stats" / "mom2.pt").read_bytes() == first.read_bytes()
    assert not (tmp_path / "zsre" / "stats" / "mom2.pt.tmp").exists()
    monkeypatch.undo()

    # another seed, another thread count: summed again, and the log says why
    (tmp_path / "other.json").write_text(json.dumps({**cfg, "stats": {**cfg["stats"], "seed": 6}}))
    code, err = stats("seed6.pt", "other.json", "--reuse", str(first))
    assert code == 0 and f"{first} was summed with another stats settings" in err, err
    assert LayerStats.load(tmp_path / "seed6.pt").meta["inputs"]["config"]["stats"]["seed"] == 6
    code, err = stats("threads2.pt", "stats.json", "--reuse", str(first), threads="2")
    assert code == 0 and f"{first} was summed with another threads" in err, err
    assert LayerStats.load(tmp_path / "threads2.pt").meta["inputs"]["threads"] == 2

    # another model's digest, or a file from before the inputs were recorded: not reused
    held = LayerStats.load(first)
    wanted = stats_inputs(cfg, tmp_path / "model", None, 1)
    held.meta["inputs"] = {**wanted, "model": "0" * 64}
    held.save(tmp_path / "other_model.pt")
    del held.meta["inputs"]
    held.save(tmp_path / "legacy.pt")
    (tmp_path / "junk.pt").write_text("not a tensor file")
    found, lines = find_reusable([tmp_path / "junk.pt", tmp_path / "legacy.pt", tmp_path / "other_model.pt"],
                                 wanted, tmp_path / "out.pt")
    assert found is None
    assert lines[0].startswith(f"{tmp_path / 'junk.pt'} is not a statistics file")
    assert lines[1] == f"{tmp_path / 'legacy.pt'} does not record its inputs (written before statistics recorded them)"
    assert lines[2] == f"{tmp_path / 'other_model.pt'} was summed with another model"
    # the output itself is never its own source
    assert find_reusable([first], wanted, first) == (None, [])
