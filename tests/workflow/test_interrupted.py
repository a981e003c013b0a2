"""An interrupted workflow: stopped mid-run twice (SIGINT, then SIGTERM, to snakemake's process
group, as Ctrl-C in a terminal or a scheduler's kill would), then run to the end.

A tiny config (a 10-step testbed, thresholds 0, one method, two seeds, 12 edits of one each)
runs on one core, so the jobs run one after another: world, testbed, knowledge check,
statistics, the first seed's edit run, then the second's, which is interrupted after it has
checkpointed a round. Checks after each stop: no declared output of the stopped job exists and
snakemake marks none incomplete; its checkpoint does. On restart snakemake lists only that one
job, the run resumes from its checkpoint, and no finished job's output is touched. About a
minute on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from .conftest import run_logs, workflow_env
from .test_workflow import job_counts

CONFIG = {
    "seeds": [0, 1], "methods": ["memit"], "ablation_seeds": [0], "ablations": [],
    "data": {"source": "synthetic",
             "synthetic": {"seed": 0, "n_subjects": 16, "n_relations": 1, "n_objects": 4, "n_records": 12}},
    "testbed": {"seed": 0, "vocab_size": 512, "n_layer": 4, "n_embd": 32, "n_head": 4, "n_positions": 64,
                "steps": 10, "batch_size": 8, "lr": 0.005, "warmup_steps": 2},
    "knowledge_check": {"rewrite": 0.0, "paraphrase": 0.0, "neighborhood": 0.0},  # a 10-step testbed knows little
    "stats": {"n_samples": 64, "max_length": 32, "batch_size": 32},
    # one edit per round, checkpointed every round; 200 target steps make a round last ~1 s, long
    # enough to stop the run mid-way even when the test's polling shares busy cores with it
    "run": {"n_edits": 12, "batch_size": 1, "eval_every": 12, "curve_max_records": 4, "checkpoint_every": 1},
    "evaluation": {"batch_size": 16, "generation": {"n_records": 0}},
    "hparams": {"memit": {"v_num_grad_steps": 200}},
}
EDIT = "results/testbed/edit/memit/main"
TARGETS = [f"{EDIT}/seed~{seed}/metrics.json" for seed in (0, 1)]
RESULT_FILES = ["metrics.json", "curve.json", "timing.json", "hidden.npz", "per_record.json"]
WAIT = 300  # seconds any phase may take


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *TARGETS, "--cores", "1", "--configfile", "tiny.yaml",
                           *args], cwd=work, env=workflow_env(), capture_output=True, text=True, timeout=WAIT)


def default_signals() -> None:
    """In the child: SIGINT and SIGTERM as in a terminal. A child inherits an ignored signal, and
    earlier code in this process (a notebook client, say) may have set SIGINT to be ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(work: Path) -> subprocess.Popen:
    """snakemake on the targets in its own process group (the group a terminal's Ctrl-C reaches)."""
    return subprocess.Popen([sys.executable, "-m", "snakemake", *TARGETS, "--cores", "1", "--configfile", "tiny.yaml"],
                            cwd=work, env=workflow_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=default_signals)


def checkpoint_round(run_dir: Path) -> int | None:
    path = run_dir / "checkpoint" / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["round"]
    except (FileNotFoundError, RuntimeError, EOFError):  # absent, or replaced while being read
        return None


def stop_when(proc: subprocess.Popen, ready, sig: int, work: Path) -> str:
    """Send `sig` to the process group once `ready()` holds; snakemake's output."""
    deadline = time.monotonic() + WAIT
    while not ready():
        if proc.poll() is not None:
            raise AssertionError("snakemake ended before it could be interrupted:\n" + proc.stdout.read()[-3000:]
                                 + run_logs(work))
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the moment to interrupt\n" + run_logs(work))
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    output = proc.communicate(timeout=WAIT)[0]
    assert proc.returncode != 0, "the run ended before the signal reached it:\n" + output[-3000:]
    return output


def finished_files(work: Path, skip: Path) -> dict[str, int]:
    """mtime (ns) of every output file of the finished jobs: data/ and results/ except `skip`."""
    files = [p for top in ("data", "results") for p in (work / top).rglob("*") if p.is_file()]
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in files if skip not in p.parents}


def assert_nothing_partial(work: Path, run_dir: Path, min_round: int) -> None:
    """The stopped run left its checkpoint and no result file; snakemake marks nothing incomplete."""
    assert [f for f in RESULT_FILES if (run_dir / f).exists()] == []
    assert checkpoint_round(run_dir) >= min_round
    summary = snakemake(work, "--summary")
    assert summary.returncode == 0, summary.stderr[-3000:]
    rows = [line.split("\t") for line in summary.stdout.splitlines()[1:] if line.strip()]
    status = {row[0]: row[4] for row in rows if len(row) > 4}
    assert status, summary.stdout
    assert "incomplete" not in status.values(), summary.stdout
    assert status[f"{run_dir.relative_to(work)}/metrics.json"] == "missing", summary.stdout
    dry = snakemake(work, "-n")  # would refuse to plan around incomplete files
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert job_counts(dry.stdout + dry.stderr) == {"edit_run": 1}


def test_interrupted_workflow_resumes_without_redoing_finished_jobs(workflow_copy):
    work = workflow_copy("interrupted")
    (work / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    runs = [work / EDIT / f"seed~{seed}" for seed in (0, 1)]

    # 1. SIGINT during the second edit run, once it has checkpointed a round
    def second_run_checkpointed():
        done = [r for r in runs if (r / "metrics.json").exists()]
        return len(done) == 1 and any(checkpoint_round(r) for r in runs if r not in done)

    proc = start(work)
    stop_when(proc, second_run_checkpointed, signal.SIGINT, work)
    stopped = next(r for r in runs if not (r / "metrics.json").exists())
    first_round = checkpoint_round(stopped)
    assert_nothing_partial(work, stopped, 1)
    before = finished_files(work, stopped)
    assert f"{EDIT}/seed~0/metrics.json" in before or f"{EDIT}/seed~1/metrics.json" in before
    assert "results/testbed/stats/mom2.pt" in before and "data/world/counterfact.json" in before

    # 2. restart; SIGTERM once the resumed run has checkpointed a later round
    proc = start(work)
    stop_when(proc, lambda: (checkpoint_round(stopped) or 0) > first_round, signal.SIGTERM, work)
    log = (work / "logs/edit_run/testbed/memit/main" / f"{stopped.name}.log").read_text()
    assert f"resumed from {EDIT}/{stopped.name}/checkpoint/state.pt after round {first_round} of 12" in log, log
    second_round = checkpoint_round(stopped)
    assert_nothing_partial(work, stopped, first_round + 1)

    # 3. restart to the end: only the stopped job runs, from its checkpoint; finished outputs untouched
    final = snakemake(work)
    output = final.stdout + final.stderr
    assert final.returncode == 0, output[-3000:] + run_logs(work)
    assert job_counts(output) == {"edit_run": 1}
    log = (work / "logs/edit_run/testbed/memit/main" / f"{stopped.name}.log").read_text()
    assert f"after round {second_round} of 12" in log, log
    assert all((r / "metrics.json").is_file() for r in runs)
    assert not (stopped / "checkpoint" / "state.pt").exists()
    assert finished_files(work, stopped) == before

    # 4. and then there is nothing left to do
    again = snakemake(work)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
