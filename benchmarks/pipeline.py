"""Time the README's command on a fresh clone: setup, the first run, and a second run that must do nothing.

    python benchmarks/pipeline.py [--configfile FILE] [--workdir DIR] [--shared DIR] [--keep] [--out FILE]

The current commit (HEAD; uncommitted changes are not part of it) is cloned into a temporary
folder, with ../shared beside the clone as a symlink to the shared data folder (the one beside
this repository, or --shared). There the README's command runs as written, in two timed parts:
the setup (`python3 -m venv .venv && . .venv/bin/activate && pip install -e .`) and the run
(`snakemake --cores all`, with `--configfile FILE` added when given; default: the default
config, which is the whole study). Then the run part again, with nothing changed: it must report
"Nothing to be done". The table is printed; the timings, the commands, the commit and the
machine go to benchmarks/results/pipeline-<hostname>.json (--out to change). Each part's output
is kept in <workdir>/logs-benchmark/. A part that fails ends the benchmark with exit status 1,
naming the part and its log.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

README = common.ROOT / "README.md"
NOTHING_TO_DO = "Nothing to be done"


class PipelineError(SystemExit):
    pass


def readme_command(readme: Path = README) -> tuple[str, str]:
    """(setup, run) of the README's first command that runs snakemake after a setup: split at `&& snakemake`."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S)
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if "pip install" in line and "&& snakemake" in line:
                setup, run = line.split("&& snakemake", 1)
                return setup.strip(), "snakemake" + run.rstrip()
    raise PipelineError(f"pipeline: no command of the form '<setup> && snakemake ...' in a bash block of {readme}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", default=None,
                   help="config for the run, relative to the repository root or absolute (default: the default config)")
    p.add_argument("--workdir", default=None, help="folder to clone into (default: a new temporary folder)")
    p.add_argument("--shared", default=None,
                   help="shared data folder linked as ../shared beside the clone (default: ../shared beside this repository, if present)")
    p.add_argument("--keep", action="store_true", help="keep the clone and its results (default: removed on success)")
    p.add_argument("--out", default=None, help="JSON file to write (default: benchmarks/results/pipeline-<hostname>.json)")
    args = p.parse_args(argv)
    if args.configfile is not None:
        config = Path(args.configfile)
        if not (config if config.is_absolute() else common.ROOT / config).is_file():
            p.error(f"--configfile {args.configfile}: no such file (relative paths are read from {common.ROOT})")
    if args.shared is not None and not Path(args.shared).is_dir():
        p.error(f"--shared {args.shared}: no such folder")
    if args.workdir is not None and Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
        p.error(f"--workdir {args.workdir} exists and is not empty")
    return args


def git(*args: str, cwd: Path = common.ROOT) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipelineError(f"pipeline: git {' '.join(args)} failed in {cwd}: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip()


def config_argument(configfile: str) -> str:
    """--configfile's value in the clone: the clone's own copy of a committed file, else the absolute path."""
    path = Path(configfile)
    if not path.is_absolute():
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.as_posix()], cwd=common.ROOT,
                                 capture_output=True).returncode == 0
        if tracked:
            return path.as_posix()
        path = common.ROOT / path
    return str(path.resolve())


def prepare(workdir: Path, shared: Path | None) -> tuple[Path, dict]:
    """Clone HEAD into workdir/seqedit and link workdir/shared; (clone, what was cloned)."""
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    clone = workdir / "seqedit"
    git("clone", "--quiet", "--no-checkout", str(common.ROOT), str(clone))
    git("checkout", "--quiet", commit, cwd=clone)
    if shared is not None:
        (workdir / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    return clone, {"commit": commit, "uncommitted_changes_left_out": dirty,
                   "shared": None if shared is None else str(shared.resolve())}


def timed(name: str, command: str, cwd: Path, logs: Path) -> tuple[float, str]:
    """Run `command` with bash in `cwd`; (wall seconds, output). Output goes to logs/<name>.log."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    print(f"{name}: {command}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t0
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        raise PipelineError(f"pipeline: {name} failed with exit status {proc.returncode} after {seconds:.0f} s; see {log}")
    print(f"{name}: {seconds:.1f} s", flush=True)
    return seconds, proc.stdout


def count_jobs(output: str) -> int | None:
    """Total of snakemake's 'Job stats' table, None without one."""
    match = re.search(r"Job stats:.*?^total\s+(\d+)", output, re.S | re.M)
    return int(match[1]) if match else None


def main(argv=None) -> None:
    args = parse_args(argv)
    setup, run = readme_command()
    if args.configfile:
        run += f" --configfile {config_argument(args.configfile)}"
    activate = ". .venv/bin/activate"
    shared = Path(args.shared) if args.shared else (common.ROOT.parent / "shared")
    shared = shared if shared.is_dir() else None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="seqedit-pipeline-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else common.ROOT / "benchmarks" / "results" / f"pipeline-{common.host()}.json"

    m = common.machine()
    print(f"machine: {common.machine_line(m)}", flush=True)
    clone, source = prepare(workdir, shared)
    logs = workdir / "logs-benchmark"
    seconds, jobs = {}, {}
    seconds["setup"], _ = timed("setup", setup, clone, logs)
    seconds["first_run"], first = timed("first_run", f"{activate} && {run}", clone, logs)
    jobs["first_run"] = count_jobs(first)
    seconds["second_run"], second = timed("second_run", f"{activate} && {run}", clone, logs)
    if NOTHING_TO_DO not in second:
        raise PipelineError(f"pipeline: the second run did work (jobs: {count_jobs(second)}); "
                            f"expected '{NOTHING_TO_DO}'; see {logs / 'second_run.log'}")
    jobs["second_run"] = 0

    rows = [["setup", setup, f"{seconds['setup']:.1f}", "-"],
            ["first run", run, f"{seconds['first_run']:.1f}", str(jobs["first_run"])],
            ["second run", run, f"{seconds['second_run']:.1f}", f"0 ({NOTHING_TO_DO})"]]
    lines = [f"Machine: {common.machine_line(m)}", f"Commit: {source['commit']}"
             + (" (uncommitted changes left out)" if source["uncommitted_changes_left_out"] else ""), "",
             *common.format_table(["part", "command", "wall seconds", "jobs"], rows)]
    print()
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "source": source, "configfile": args.configfile,
                               "commands": {"setup": setup, "run": run}, "seconds": seconds, "jobs": jobs,
                               "workdir": str(workdir) if args.keep else None, "table": lines}, indent=1) + "\n")
    print(f"\nwrote {out}")
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    try:
        main()
    except PipelineError as err:
        print(err, file=sys.stderr)
        raise SystemExit(1) from None
