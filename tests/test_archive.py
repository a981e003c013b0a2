"""Finished runs carried between machines: `seqedit archive` packs them, and `seqedit edit
--restore-from` takes a run from the archive only when its inputs (config, model, statistics,
records) are the ones it was run with; otherwise the run runs.

On the tiny GPT-2 and world of the command-line drills (tests/test_cli.py), about a second a run.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from seqedit.archive import DIGEST_KEYS, N_DIRECTIONS, RUN_FILES, STATS_RTOL, pack, restore, same_stats

from test_cli import edit_args, run_cli, tiny_dir, write_config  # noqa: F401  (tiny_dir: a fixture)


def run_dir(root, seed=0):
    """A run folder in a study folder."""
    return root / "edit" / "memit" / "main" / f"seed~{seed}"


def archived(archive, seed=0):
    """The same run in an archive."""
    return archive / "memit" / "main" / f"seed~{seed}"


@pytest.fixture(scope="module")
def finished(tiny_dir, tmp_path_factory):  # noqa: F811
    """One finished run of the tiny model, and an archive packed from its study folder."""
    from seqedit.cli import main

    root = tmp_path_factory.mktemp("study")
    main([*edit_args(tiny_dir, run_dir(root)), "--quiet"])
    packed, skipped = pack(root / "edit", root / "archive")
    assert packed == [archived(root / "archive")] and skipped == []
    return root


def test_a_finished_run_records_the_digests_of_its_inputs(finished, tiny_dir):  # noqa: F811
    from seqedit.core.stats import LayerStats

    digests = json.loads((run_dir(finished) / "inputs.json").read_text())
    assert sorted(digests) == sorted([*DIGEST_KEYS, "config_identity", "stats_fingerprint"])
    assert all(len(digests[k]) == 64 and int(digests[k], 16) >= 0 for k in [*DIGEST_KEYS, "config_identity"])
    stats = LayerStats.load(tiny_dir / "mom2.pt")
    fingerprint = digests["stats_fingerprint"]
    assert fingerprint["count"] == stats.count and sorted(fingerprint["layers"]) == ["0", "1", "2"]
    assert fingerprint["tokens"] == stats.meta["tokens_sha256"] and len(fingerprint["tokens"]) == 64
    for layer, values in fingerprint["layers"].items():
        c = stats.mom2[int(layer)].double()
        assert len(values) == 2 + N_DIRECTIONS
        assert values[0] == pytest.approx(c.trace().item(), rel=1e-12)
        assert values[1] == pytest.approx(c.norm().item(), rel=1e-12)
        # a quadratic form of a positive semi-definite sum lies between 0 and its largest eigenvalue
        assert all(0.0 <= q <= torch.linalg.eigvalsh(c)[-1].item() * (1 + 1e-9) for q in values[2:])


def _scaled_stats(tiny_dir, tmp_path, factor: float, **meta):  # noqa: F811
    """The tiny model's statistics with every sum scaled by `factor` and `meta` entries replaced
    (None: removed)."""
    d = torch.load(tiny_dir / "mom2.pt", weights_only=True)
    d["mom2"] = {layer: (m.double() * factor).to(m.dtype) for layer, m in d["mom2"].items()}
    d["meta"] = {k: v for k, v in {**d["meta"], **meta}.items() if v is not None}
    torch.save(d, tmp_path / "mom2.pt")
    return tmp_path / "mom2.pt"


def test_statistics_that_differ_by_float_rounding_count_as_the_same(tiny_dir, finished, tmp_path, capsys,
                                                                     monkeypatch):  # noqa: F811
    """Another CPU's rounding of the same sums (here 2e-7 relative) changes their digest, not the run."""
    monkeypatch.setattr("seqedit.runner.run_sequential", lambda *a, **k: pytest.fail("edited again"))
    out = run_dir(tmp_path)
    stats = _scaled_stats(tiny_dir, tmp_path, 1 + 2e-7)
    code, err = run_cli(capsys, *edit_args(tiny_dir, out, stats=stats), "--restore-from", str(finished / "archive"))
    assert code == 0, err
    assert re.search(r"restored: restored from \S+ \(its statistics agree within float rounding: 2\.0e-07 "
                     r"relative; the same token sample\)", err), err
    assert (out / "metrics.json").read_bytes() == (run_dir(finished) / "metrics.json").read_bytes()


def test_the_same_sums_over_another_token_sample_are_other_statistics(tiny_dir, finished, tmp_path, capsys):  # noqa: F811
    """One text of 4,000 replaced moves the sums by less than STATS_RTOL; its token digest differs."""
    out = run_dir(tmp_path)
    stats = _scaled_stats(tiny_dir, tmp_path, 1 + 2e-7, tokens_sha256="0" * 64)
    code, err = run_cli(capsys, *edit_args(tiny_dir, out, stats=stats), "--restore-from", str(finished / "archive"))
    assert code == 0, err
    assert f"not restored: {archived(finished / 'archive')} was run with other inputs (stats differ)" in err
    assert (out / "metrics.json").is_file()


def test_statistics_without_a_token_digest_are_matched_on_their_fingerprint(tiny_dir, finished, tmp_path, capsys,
                                                                           monkeypatch):  # noqa: F811
    """Statistics collected before they recorded their token sample: 5e-4 relative is taken."""
    monkeypatch.setattr("seqedit.runner.run_sequential", lambda *a, **k: pytest.fail("edited again"))
    out = run_dir(tmp_path)
    stats = _scaled_stats(tiny_dir, tmp_path, 1 + 5e-4, tokens_sha256=None)
    code, err = run_cli(capsys, *edit_args(tiny_dir, out, stats=stats), "--restore-from", str(finished / "archive"))
    assert code == 0, err
    assert re.search(r"\(its statistics agree within float rounding: 5\.0e-04 relative; no token digest to "
                     r"compare\)", err), err


def test_a_matching_run_is_restored_not_run(tiny_dir, finished, tmp_path, capsys, monkeypatch):  # noqa: F811
    def no_editing(*args, **kwargs):
        raise AssertionError("the run was edited again although the archive holds it")

    monkeypatch.setattr("seqedit.runner.run_sequential", no_editing)
    out = run_dir(tmp_path)
    (out / "checkpoint").mkdir(parents=True)  # an interrupted attempt's, superseded by the restored run
    code, err = run_cli(capsys, *edit_args(tiny_dir, out), "--restore-from", str(finished / "archive"))
    assert code == 0, err
    assert f"restored: restored from {archived(finished / 'archive')}" in err
    for name in RUN_FILES:
        assert (out / name).read_bytes() == (run_dir(finished) / name).read_bytes(), name
    assert not (out / "checkpoint").exists()


def _changed(what: str, tiny_dir, tmp_path):  # noqa: F811
    """edit_args overrides with one input changed."""
    if what == "config":
        return {"config": write_config(tmp_path / "c.json", seed=1)}
    if what == "records":  # the same records, written otherwise: the file's bytes differ
        records = json.loads((tiny_dir / "world" / "counterfact.json").read_text())
        (tmp_path / "records.json").write_text(json.dumps(records, indent=3))
        return {"records": tmp_path / "records.json"}
    if what == "stats":  # 1 %: more than ten replaced texts of 4,000 would do
        return {"stats": _scaled_stats(tiny_dir, tmp_path, 1 + 1e-2)}
    shutil.copytree(tiny_dir / "model", tmp_path / "model")
    with torch.no_grad():
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
        next(model.parameters()).add_(1e-3)
        model.save_pretrained(tmp_path / "model")
    return {"model": tmp_path / "model"}


@pytest.mark.parametrize("what", DIGEST_KEYS)
def test_a_run_with_another_input_runs_and_says_which(what, tiny_dir, finished, tmp_path, capsys):  # noqa: F811
    out = run_dir(tmp_path)
    code, err = run_cli(capsys, *edit_args(tiny_dir, out, **_changed(what, tiny_dir, tmp_path)),
                        "--restore-from", str(finished / "archive"))
    assert code == 0, err
    assert f"not restored: {archived(finished / 'archive')} was run with other inputs ({what} differ)" in err
    ran = json.loads((out / "inputs.json").read_text())
    before = json.loads((run_dir(finished) / "inputs.json").read_text())
    assert [k for k in DIGEST_KEYS if ran[k] != before[k]] == [what]


def test_a_run_whose_config_differs_only_in_its_title_is_restored(tiny_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    """An ablation arm's title names it in the report; renaming it in the config keeps its archived
    run, also one archived before its inputs.json held config_identity. Its settings do not."""
    from seqedit.cli import main

    base = json.loads((tiny_dir / "edit.json").read_text())
    variant = {"name": "batch_size~2", "ablation": "batch_size", "value": "2", "param": "run.batch_size"}

    def config(name, title, **hparams):
        cfg = {**base, "variant": {**variant, "title": title}}
        cfg["method"] = {**cfg["method"], "hparams": {**cfg["method"]["hparams"], **hparams}}
        (tmp_path / name).write_text(json.dumps(cfg))
        return tmp_path / name

    ran = tmp_path / "study" / "edit" / "memit" / variant["name"] / "seed~0"
    main([*edit_args(tiny_dir, ran, config=config("ran.json", "Batch size")), "--quiet"])
    pack(tmp_path / "study" / "edit", tmp_path / "archive")
    src = tmp_path / "archive" / "memit" / variant["name"] / "seed~0"
    renamed = config("renamed.json", "batch size (renamed)")
    retuned = config("retuned.json", "batch size (renamed)", v_lr=0.25)

    def restore_into(out, cfg):
        return run_cli(capsys, *edit_args(tiny_dir, out, config=cfg), "--restore-from", str(tmp_path / "archive"))

    def runs_again(out, cfg):
        with pytest.raises(RuntimeError, match="edited again"):
            restore_into(out / ran.relative_to(tmp_path / "study"), cfg)
        return capsys.readouterr().err

    def no_editing(*args, **kwargs):
        raise RuntimeError("edited again")

    code, err = restore_into(tmp_path / "a" / ran.relative_to(tmp_path / "study"), renamed)
    assert code == 0 and "restored: restored from" in err and "differs only in variant.title, kept as it ran" in err, err
    metrics = json.loads((tmp_path / "a" / ran.relative_to(tmp_path / "study") / "metrics.json").read_text())
    assert metrics["config"]["variant"]["title"] == "Batch size"
    monkeypatch.setattr("seqedit.runner.run_sequential", no_editing)
    assert "was run with other inputs (config differ)" in runs_again(tmp_path / "b", retuned)
    # archived before config_identity was recorded: taken from metrics.json's config, whose digest is `config`
    inputs = json.loads((src / "inputs.json").read_text())
    del inputs["config_identity"]
    (src / "inputs.json").write_text(json.dumps(inputs))
    code, err = restore_into(tmp_path / "c" / ran.relative_to(tmp_path / "study"), renamed)
    assert code == 0 and "differs only in variant.title" in err, err
    assert "was run with other inputs (config differ)" in runs_again(tmp_path / "d", retuned)
    # ... but not when that config is not the one the digest was taken of
    held = json.loads((src / "metrics.json").read_text())
    (src / "metrics.json").write_text(json.dumps({**held, "config": {**held["config"], "seed": 7}}))
    assert "was run with other inputs (config differ)" in runs_again(tmp_path / "e", renamed)


def test_the_model_directory_digest_leaves_out_its_provenance(tiny_dir, tmp_path):  # noqa: F811
    from seqedit.archive import model_digest

    shutil.copytree(tiny_dir / "model", tmp_path / "model")
    (tmp_path / "model" / "provenance.json").write_text('{"seconds": 12.5}')
    assert model_digest(tmp_path / "model") == model_digest(tiny_dir / "model")
    assert model_digest("org/some-model") == "hub:org/some-model"


def test_restore_names_what_is_missing(finished, tmp_path):
    digests = json.loads((run_dir(finished) / "inputs.json").read_text())
    assert restore(finished / "archive", run_dir(tmp_path, seed=3), digests) == (
        False, f"{archived(finished / 'archive', seed=3)} holds no finished run")
    partial = tmp_path / "partial"
    shutil.copytree(finished / "archive", partial)
    (archived(partial) / "hidden.npz").unlink()
    assert restore(partial, run_dir(tmp_path), digests) == (False, f"{archived(partial)} lacks hidden.npz")
    assert not run_dir(tmp_path).exists()
    with pytest.raises(ValueError, match="is not a run folder"):
        restore(finished / "archive", tmp_path / "elsewhere", digests)


def test_pack_skips_a_run_without_its_input_digests(finished, tmp_path, capsys):
    edit = tmp_path / "edit"
    shutil.copytree(finished / "edit", edit)
    old = edit / "memit" / "main" / "seed~1"
    shutil.copytree(edit / "memit" / "main" / "seed~0", old)
    (old / "inputs.json").unlink()  # as a run finished before runs recorded their inputs
    code, err = run_cli(capsys, "archive", "--runs", str(edit), "--out", str(tmp_path / "archive"))
    assert code == 0, err
    assert f"skipped {old}: not finished, or run without inputs.json" in err
    assert sorted(p.name for p in (tmp_path / "archive" / "memit" / "main").iterdir()) == ["seed~0"]
    assert sorted(p.name for p in archived(tmp_path / "archive").iterdir()) == sorted(RUN_FILES)


def test_fingerprints_of_other_counts_or_layers_differ():
    a = {"count": 10, "layers": {"1": [1.0, 2.0, 3.0]}}
    assert same_stats(a, a) == (True, 0.0)
    assert same_stats(a, {**a, "count": 11})[0] is False
    assert same_stats(a, {"count": 10, "layers": {"2": [1.0, 2.0, 3.0]}})[0] is False
    assert same_stats(a, {"count": 10, "layers": {"1": [1.0, 2.0]}})[0] is False
    near = {"count": 10, "layers": {"1": [1.0, 2.0, 3.0 * (1 + 0.5 * STATS_RTOL)]}}
    far = {"count": 10, "layers": {"1": [1.0, 2.0, 3.0 * (1 + 2 * STATS_RTOL)]}}
    assert same_stats(a, near)[0] is True and same_stats(a, far)[0] is False
    sampled = {**a, "tokens": "a" * 64}
    assert same_stats(sampled, {**a, "tokens": "a" * 64}) == (True, 0.0)
    assert same_stats(sampled, {**a, "tokens": "b" * 64}) == (False, float("inf"))
    assert same_stats(sampled, a) == (True, 0.0)  # one side recorded no sample: its values decide
    assert same_stats(None, a)[0] is False  # a run recorded without a fingerprint: digests only


def test_an_archive_that_does_not_exist_stops_the_run(tiny_dir, tmp_path, capsys):  # noqa: F811
    """A mistyped restore_from must not rerun a whole study unnoticed."""
    from test_cli import assert_nothing_written, assert_one_line_error

    out = run_dir(tmp_path)
    code, err = run_cli(capsys, *edit_args(tiny_dir, out), "--restore-from", str(tmp_path / "archiv"))
    assert_one_line_error(code, err, "edit", f"the archive {tmp_path / 'archiv'} (restore_from) does not exist")
    assert_nothing_written(out)


def test_generated_texts_travel_with_the_archive(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    """`seqedit archive` keeps the texts the statistics were summed over; `seqedit stats --texts-from`
    sums over them instead of generating, only where the model and the generation settings match."""
    from conftest import generated_stats_setup
    from seqedit.core.stats import LayerStats

    cfg = generated_stats_setup(tmp_path, tiny_tokenizer, n_samples=6)

    def stats(out, config="stats.json", *extra):
        return run_cli(capsys, "stats", "--config", str(tmp_path / config), "--model", str(tmp_path / "model"),
                       "--out", str(tmp_path / out), *extra)

    assert stats("first/stats/mom2.pt")[0] == 0
    first = LayerStats.load(tmp_path / "first" / "stats" / "mom2.pt")
    assert len(first.meta["texts"]) == 6 and all(isinstance(t, str) for t in first.meta["texts"])
    (tmp_path / "first" / "edit").mkdir()
    code, err = run_cli(capsys, "archive", "--runs", str(tmp_path / "first" / "edit"), "--out", str(tmp_path / "archive"),
                        "--model", str(tmp_path / "model"))
    assert code == 0, err
    held = json.loads((tmp_path / "archive" / "stats_texts.json").read_text())
    assert held["texts"] == first.meta["texts"] and held["seed"] == 5 and held["n_samples"] == 6

    # the archived texts read back: nothing generated, the same sample and sums
    monkeypatch.setattr("seqedit.data.texts.generated_texts", lambda *a, **k: pytest.fail("generated again"))
    code, err = stats("second.pt", "stats.json", "--texts-from", str(tmp_path / "archive" / "stats_texts.json"))
    assert code == 0, err
    assert f"the 6 texts taken from {tmp_path / 'archive' / 'stats_texts.json'}" in err
    second = LayerStats.load(tmp_path / "second.pt")
    assert second.meta["tokens_sha256"] == first.meta["tokens_sha256"] and second.count == first.count
    assert all(torch.equal(second.mom2[l], first.mom2[l]) for l in (0, 1))
    monkeypatch.undo()

    # another seed, or another model: the texts are generated again, and the log says why
    (tmp_path / "other.json").write_text(json.dumps({**cfg, "stats": {**cfg["stats"], "seed": 6}}))
    code, err = stats("third.pt", "other.json", "--texts-from", str(tmp_path / "archive" / "stats_texts.json"))
    assert code == 0 and "was generated with another seed: generating the texts" in err, err
    assert LayerStats.load(tmp_path / "third.pt").meta["tokens_sha256"] != first.meta["tokens_sha256"]
    held["model"] = "0" * 64
    (tmp_path / "archive" / "stats_texts.json").write_text(json.dumps(held))
    code, err = stats("fourth.pt", "stats.json", "--texts-from", str(tmp_path / "archive" / "stats_texts.json"))
    assert code == 0 and "was generated with another model: generating the texts" in err, err
    code, err = stats("fifth.pt", "stats.json", "--texts-from", str(tmp_path / "nowhere.json"))
    assert code == 0 and "nowhere.json does not exist: generating the texts" in err, err


def test_a_finished_run_names_the_machine_it_ran_on(finished):
    """An archived run carries the processor that rounded it; the report lists every run's."""
    import os
    import platform

    prov = json.loads((run_dir(finished) / "metrics.json").read_text())["provenance"]
    cpuinfo = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    assert prov["machine"]["cpu"] == (names[0] if names else platform.processor() or None)
    assert prov["machine"]["arch"] == platform.machine() and prov["machine"]["cores"] == os.cpu_count()
    assert "gpu" not in prov["machine"]  # a CPU run

