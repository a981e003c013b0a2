"""Fixtures of the workflow tests: a copy of the repository to run the workflow in, and the toy
workflow (.test/config_basic) run locally once per test run.

`toy_run` is shared by every module that needs the local run's results (the end-to-end checks and
the tuning grid), so the toy workflow runs locally only once: under pytest-xdist its folder lies in
the run's common temporary folder, and the first worker that asks for it builds it under a file
lock while any other waits and then reads it (its tests share one xdist group, so in a full run
that is one worker; a run that selects them otherwise still builds it once).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# What a run of the workflow needs from the repository (the package itself is installed).
WORKFLOW_PARTS = ["Snakefile", "workflow", "config", "notebooks", "profiles", "envs", ".test"]
TOY_CONFIG = ".test/config_basic/config.yaml"


def workflow_env(**extra: str) -> dict[str, str]:
    """The environment of a snakemake subprocess: this interpreter's bin folder first on PATH,
    so `seqedit`, `papermill` and the `python3` kernel resolve to this environment."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def copy_workflow(dest: Path) -> Path:
    """`dest` holding a copy of the workflow's parts of the repository."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / part)
    return dest


def run_logs(work: Path, limit: int = 3000) -> str:
    """The tail of every rule log of a run, for failure messages."""
    return "\n".join(f"--- {p}\n{p.read_text()[-limit:]}" for p in sorted((work / "logs").rglob("*.log")))


@pytest.fixture(scope="session")
def workflow_copy(tmp_path_factory):
    """Factory: a fresh copy of the workflow in a new temporary folder named after `name`."""

    def make(name: str) -> Path:
        return copy_workflow(tmp_path_factory.mktemp(name))

    return make


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory, worker_id):
    """A copy of the repository in which the toy workflow ran locally (2 cores) to the end, built
    once per test run: in the temporary folder all xdist workers share, under a file lock. A
    failed build is recorded there, so a second worker fails with the same message at once."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # pytest-N/ above the workers' popen-gwK/
    work, done, failed = shared / "toy_workflow", shared / "toy_workflow.done", shared / "toy_workflow.failed"
    with open(shared / "toy_workflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists() and not failed.exists():
            copy_workflow(work)
            proc = subprocess.run(
                [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", TOY_CONFIG],
                cwd=work, env=workflow_env(), capture_output=True, text=True, timeout=1500,
            )
            if proc.returncode == 0:
                done.touch()
            else:
                failed.write_text(proc.stdout[-3000:] + proc.stderr[-5000:] + run_logs(work))
    if failed.exists():
        pytest.fail(f"the local toy run failed:\n{failed.read_text()}", pytrace=False)
    return work
