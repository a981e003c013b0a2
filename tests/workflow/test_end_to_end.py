"""The toy workflow (.test/config_basic) run for real, in a copy of the repository.

This is the whole DAG at toy size: world, testbed training, knowledge check, statistics, the
sequential edit runs of the main comparison (two methods, two seeds) and of one ablation, the
seven figure notebooks and the report. A second run with nothing changed must do no work.
About four minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path


BIN = Path(sys.executable).parent
FIGURES = ["edit_curves", "results_table", "ablations", "drift", "hidden_shift", "neurons", "cost"]


def snakemake(cwd: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
                           ".test/config_basic/config.yaml", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# `toy_run` (tests/workflow/conftest.py) runs the toy workflow once per session.


def test_whole_dag_leaves_metrics_curve_and_figure(toy_run):
    import yaml

    cfg = yaml.safe_load((toy_run / ".test/config_basic/config.yaml").read_text())
    check = json.loads((toy_run / "results/testbed/testbed/knowledge_check.json").read_text())
    assert check["passed"] and check["n_records"] >= cfg["run"]["n_edits"]  # every seed's stream
    runs = [(m, "main", s) for m in cfg["methods"] for s in cfg["seeds"]]
    runs += [(spec["method"], f"{spec['name']}~{str(v).lower()}", s) for spec in cfg["ablations"]
             for v in spec["values"] for s in cfg["ablation_seeds"]]
    # rewind: true is NSE's own setting, so that arm reuses NSE's main run of seed 0 instead of repeating it
    reused = {("nse", "nse_rewind~true", 0): ("nse", "main", 0)}
    assert set(reused) <= set(runs)
    assert not (toy_run / "results/testbed/edit/nse/nse_rewind~true").exists()
    for method, variant, seed in runs:
        _, ran, _ = reused.get((method, variant, seed), (method, variant, seed))
        run_dir = toy_run / f"results/testbed/edit/{method}/{ran}/seed~{seed}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["config"]["variant"]["name"] == ran and metrics["seed"] == seed
        assert metrics["n_edits"] == cfg["run"]["n_edits"] and metrics["method"] == method
        assert set(metrics["provenance"]) == {"config_hash", "git", "versions", "machine"}
        assert metrics["provenance"]["machine"]["cores"] == os.cpu_count() and metrics["provenance"]["machine"]["arch"]
        assert metrics["provenance"]["versions"]["torch"].startswith("2.13.0")
        for key in ("efficacy", "generalization", "specificity"):
            assert 0.0 <= metrics["final"][key] <= 100.0
        # Fluency is 100 · (2/3·H2 + 4/3·H3) / 2 in bits over the words of a generation of at most
        # max_length tokens, so it lies in (0, 100 · log2(max_length)]; 0 would mean every
        # generation repeats one word.
        max_length = cfg["evaluation"]["generation"]["max_length"]
        assert 0.0 < metrics["final"]["fluency"] <= 100.0 * math.log2(max_length)
        curve = json.loads((run_dir / "curve.json").read_text())
        n_points = cfg["run"]["n_edits"] // cfg["run"]["batch_size"] // cfg["run"]["eval_every"] + 1
        assert [p["n_edits"] for p in curve["points"]][0] == 0 and len(curve["points"]) == n_points
        assert not (run_dir / "checkpoint" / "state.pt").exists()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (toy_run / f"figures/testbed_{name}.{ext}").stat().st_size > 1000
        assert (toy_run / f"results/testbed/notebooks/{name}.ipynb").exists()
    study = json.loads((toy_run / "results/testbed/study/study.json").read_text())
    assert [(r["method"], r["variant"], r["seed"]) for r in study["runs"]] == runs
    by = {(r["method"], r["variant"], r["seed"]): r for r in study["runs"]}
    for arm, main in reused.items():
        assert by[arm]["reuses"] == by[main]["dir"] and by[arm]["final"] == by[main]["final"]
        assert by[arm]["ablation"] == "nse_rewind" and by[main]["ablation"] is None


def test_seeds_edit_different_streams(toy_run):
    a, b = (json.loads((toy_run / f"results/testbed/edit/memit/main/seed~{s}/per_record.json").read_text())
            for s in (0, 1))
    assert [r["case_id"] for r in a] != [r["case_id"] for r in b]


def test_report_renders_every_figure_and_the_claims(toy_run):
    from pypdf import PdfReader

    html = (toy_run / "results/testbed/report/report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert "Claims checklist" in html and "NSE: target vectors from the original weights" in html
    pdf = PdfReader(toy_run / "results/testbed/report/report.pdf")
    text = " ".join(" ".join(p.extract_text() for p in pdf.pages).split())
    for heading in ("Setup", "Results", "Ablations", "Model drift", "Hidden-state shift", "Neurons", "Cost",
                    "Claims checklist", "Provenance"):
        assert heading in text
    assert "Weights rewinding prevents model failure" in text and len(pdf.pages) >= 5


def test_memit_edits_take_effect_on_the_toy_run(toy_run):
    # The unedited testbed scores 0 on these records (the curve's first point). After 12
    # sequential edits in batches of 4, at least half of the edited facts must hold at the end,
    # and each batch must land when it is made: the efficacy on the records edited so far never
    # falls to the unedited level. (The single-batch flip rate is asserted in
    # tests/methods/test_memit.py.)
    for seed in (0, 1):
        curve = json.loads((toy_run / f"results/testbed/edit/memit/main/seed~{seed}/curve.json").read_text())
        points = curve["points"]
        assert points[0]["efficacy"] <= 5.0
        assert points[-1]["efficacy"] >= 50.0, points
        assert all(p["efficacy"] > points[0]["efficacy"] + 20.0 for p in points[1:]), points


def test_second_run_does_no_work(toy_run):
    proc = snakemake(toy_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_runs_restored_from_an_archive(toy_run, tmp_path):
    """The toy study's runs packed with `seqedit archive`: naming the archive (restore_from) reruns
    no edit run and changes no job, and a run forced again is copied from the archive, byte for
    byte, not edited. (In the copy the figures rerun either way: their notebooks are inputs by
    the repository's absolute path, which the copy changed.)"""
    import shutil

    work = tmp_path / "study"
    shutil.copytree(toy_run, work, symlinks=True)
    edit = work / "results" / "testbed" / "edit"
    runs = sorted(p.parent for p in edit.glob("*/*/seed~*/metrics.json"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    packed = subprocess.run(["seqedit", "archive", "--runs", str(edit), "--out", str(tmp_path / "archive")],
                            env=env, capture_output=True, text=True)
    assert packed.returncode == 0 and f"{len(runs)} runs packed" in packed.stdout, packed.stderr
    restore = f"restore_from={tmp_path / 'archive'}"
    plain, dry = snakemake(work, "-n"), snakemake(work, "-n", "--config", restore)
    assert dry.returncode == 0 and plain.returncode == 0, dry.stderr[-3000:]
    assert "rule edit_run" not in dry.stdout and "rule figure_edit_curves" in dry.stdout, dry.stdout[-3000:]
    assert dry.stdout.split("Job stats:")[1].split("\n\n")[0] == plain.stdout.split("Job stats:")[1].split("\n\n")[0]
    # statistics made again would read the archive's generated texts, where it has matching ones
    stats = snakemake(work, "-n", "-p", "--force", "results/testbed/stats/mom2.pt", "--config", restore)
    assert f"--texts-from {tmp_path / 'archive' / 'stats_texts.json'} " in stats.stdout, stats.stdout[-3000:]
    run = edit / "memit" / "main" / "seed~0"
    before = {name: (run / name).read_bytes() for name in ("metrics.json", "curve.json", "hidden.npz")}
    forced = snakemake(work, "--force", str((run / "metrics.json").relative_to(work)), "--config", restore)
    assert forced.returncode == 0, forced.stderr[-3000:]
    log = (work / "logs" / "edit_run" / "testbed" / "memit" / "main" / "seed~0.log").read_text()
    assert f"restored: restored from {tmp_path / 'archive' / 'memit' / 'main' / 'seed~0'}" in log, log[-2000:]
    assert "edits: efficacy" not in log  # the run's closing line: nothing was edited
    assert {name: (run / name).read_bytes() for name in before} == before
