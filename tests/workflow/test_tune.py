"""benchmarks/tune.py on the toy workflow's study: a grid run reproduces the study's own run."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO, workflow_env

TUNE = REPO / "benchmarks" / "tune.py"


def _tune(work, out, *grid, seed=0):
    cmd = [sys.executable, str(TUNE), "--study", "results/testbed", "--records", "data/world/counterfact.json",
           "--seed", str(seed), "--out", str(out), "-j", "2"]
    for item in grid:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=work, env=workflow_env(), capture_output=True, text=True, timeout=600)


def test_grid_reproduces_the_study_run_and_reuses_finished_runs(toy_run, tmp_path):
    study_final = json.loads((toy_run / "results/testbed/edit/memit/main/seed~0/metrics.json").read_text())["final"]
    own = json.loads((toy_run / "results/testbed/config/edit/memit/main/seed~0.json").read_text())
    own_weight = own["method"]["hparams"]["mom2_update_weight"]
    proc = _tune(toy_run, tmp_path, f"memit.mom2_update_weight={own_weight},{own_weight * 100}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["value"]: r for r in json.loads((tmp_path / "tune.json").read_text())["rows"]}
    assert set(rows) == {own_weight, own_weight * 100}
    # the study's own value on the study's seed: the same run, the same metrics
    same = rows[own_weight]
    assert [same["efficacy"], same["generalization"], same["specificity"]] == [
        round(study_final[k], 1) for k in ("efficacy", "generalization", "specificity")]
    for row in rows.values():
        assert row["mean"] == round((row["efficacy"] + row["generalization"] + row["specificity"]) / 3, 1)
        assert row["wall_s"] > 0
    # a 100x larger lambda pulls every update towards zero: fewer edits land
    assert rows[own_weight * 100]["efficacy"] < same["efficacy"]
    run = tmp_path / "memit" / f"mom2_update_weight~{own_weight * 100}" / "seed~0" / "config.json"
    assert json.loads(run.read_text())["method"]["hparams"]["mom2_update_weight"] == own_weight * 100
    assert "| memit | mom2_update_weight |" in proc.stdout

    again = _tune(toy_run, tmp_path, f"memit.mom2_update_weight={own_weight}")
    assert again.returncode == 0
    assert json.loads((tmp_path / "tune.json").read_text())["rows"][0]["wall_s"] is None  # reused, not rerun


def test_bad_grids_stop_with_one_line(toy_run, tmp_path):
    for grid, message in (("memit.no_such_key=1", "memit has no hyperparameter 'no_such_key'"),
                          ("rome.v_lr=0.1", "is 'rome' among the study's methods?"),
                          ("memit=1", "expected METHOD.KEY=V1,V2")):
        proc = _tune(toy_run, tmp_path, grid)
        assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
