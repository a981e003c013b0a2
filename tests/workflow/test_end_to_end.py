"""The toy workflow (.test/config_basic) run for real, in a copy of the repository.

This is the whole DAG at toy size: world, testbed training, knowledge check, statistics, the
sequential edit runs, and the figure notebook. A second run with nothing changed must do no
work. About two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PARTS = ["Snakefile", "workflow", "config", "notebooks", "profiles", "envs", ".test"]


def snakemake(cwd: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
                           ".test/config_basic/config.yaml", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("toy_workflow")
    for part in PARTS:
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / part)
    proc = snakemake(work)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:] + logs
    return work


def test_whole_dag_leaves_metrics_curve_and_figure(toy_run):
    import yaml

    cfg = yaml.safe_load((toy_run / ".test/config_basic/config.yaml").read_text())
    check = json.loads((toy_run / "results/testbed/testbed/knowledge_check.json").read_text())
    assert check["passed"] and check["n_records"] == cfg["run"]["n_edits"]
    for method in cfg["methods"]:
        run_dir = toy_run / f"results/testbed/edit/{method}/seed~0"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["n_edits"] == cfg["run"]["n_edits"] and metrics["method"] == method
        assert set(metrics["provenance"]) == {"config_hash", "git", "versions"}
        assert metrics["provenance"]["versions"]["torch"].startswith("2.13.0")
        for key in ("efficacy", "generalization", "specificity", "fluency"):
            assert 0.0 <= metrics["final"][key] <= 100.0 or key == "fluency"
        curve = json.loads((run_dir / "curve.json").read_text())
        n_points = cfg["run"]["n_edits"] // cfg["run"]["batch_size"] // cfg["run"]["eval_every"] + 1
        assert [p["n_edits"] for p in curve["points"]][0] == 0 and len(curve["points"]) == n_points
        assert not (run_dir / "checkpoint" / "state.pt").exists()
    for ext in ("png", "pdf"):
        assert (toy_run / f"figures/testbed_edit_curves.{ext}").stat().st_size > 1000
    assert (toy_run / "results/testbed/notebooks/edit_curves.ipynb").exists()


def test_memit_edits_take_effect_on_the_toy_run(toy_run):
    # The unedited testbed scores 0 on these records (the curve's first point); after 12
    # sequential edits some must hold. The single-batch flip rate is asserted in
    # tests/methods/test_memit.py.
    curve = json.loads((toy_run / "results/testbed/edit/memit/seed~0/curve.json").read_text())
    assert curve["points"][0]["efficacy"] <= 5.0
    assert curve["points"][-1]["efficacy"] > curve["points"][0]["efficacy"]


def test_second_run_does_no_work(toy_run):
    proc = snakemake(toy_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
