"""The toy workflow (.test/config_basic) through a real single-node Slurm with profiles/slurm.

A private cluster is stood up for the module: its own munged (key and socket), slurmctld and
slurmd on free ports, with configuration, state, logs and pid files in a temporary folder. The
one file outside it is /etc/slurm/slurm.conf, a copy of the configuration: inside a job the
plugin's jobstep drops SLURM_CONF from the environment of its `srun`, which then reads Slurm's
compiled-in path. The copy is marked, refused if a foreign file is there, and removed at the
end. The Debian packages `slurm-wlm munge` are installed with apt-get when slurmctld is missing.

The workflow then runs with `--profile profiles/slurm` and a test profile that only names the
test partition (which is not the cluster's default, so a job reaches it only through the
profile's `slurm_partition`) and shortens the plugin's first status wait. It runs the toy workflow
(.test/config_basic) shortened by SLURM_OVERLAY: a testbed of 40 training steps, knowledge-check
thresholds 0, one seed. What is tested is the executor, not the editing: every rule that goes to
Slurm runs (data, testbed training and check, statistics, the edit runs of every method and the
ablation), in minutes of CPU fewer than the full toy run, which the local end-to-end tests check.
The local rules after the edit runs (study collection, figures, report), which run on the
submitting host under either executor and which the local toy run already checks, are left out
(`--omit-from study_collect`). Checks: snakemake exits 0; every job that is not local was submitted
to Slurm, and the cluster's job completion log, squeue and the per-job Slurm logs show each of
those jobs COMPLETED with exit code 0 in the test partition under this run's name, and no other
job under that name; and the results equal those of a local run (2 cores) of the same
shortened config.

One test cluster per machine at a time (they would share /etc/slurm/slurm.conf). The copy names
the test process that owns the cluster: a cluster whose owner still runs is left alone (and the
test refused), one whose owner is gone (a run killed before its teardown) is ended first.

It changes the machine (packages, /etc/slurm), so it runs only when asked: with
SEQEDIT_SLURM_TEST=1 in the environment (`.ci/run` sets it). A plain `pytest` skips the module and
says how to ask for it.

Needs root (slurmd starts the jobs). When asked, outside CI the module is skipped when root, or
apt-get for a missing Slurm, is unavailable; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import run_logs, workflow_env

ASKED = os.environ.get("SEQEDIT_SLURM_TEST") == "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not ASKED,
        reason="the real-Slurm test installs slurm-wlm and munge and writes /etc/slurm/slurm.conf; "
        "run it with SEQEDIT_SLURM_TEST=1 (as root)",
    ),
]

PARTITION = "seqedit_ci"  # the test partition; not Default, so jobs need the profile to reach it
CLUSTER = "seqedit_ci"
# MinJobAge: squeue reports a finished job for this many seconds, and the plugin polls squeue.
# It must exceed the whole run so that every job can still be looked up at the end.
MIN_JOB_AGE = 7200
# RealMemory the test node claims (MB): rules ask for study-sized memory (mem_mb), which the toy
# run never uses; memory is not a consumable here (CR_Core) and not enforced (no cgroups).
NODE_MEMORY_MB = 262144
TOY_CONFIG = ".test/config_basic/config.yaml"
# The toy config shortened for the Slurm run and its local replica: a barely trained testbed (so its
# knowledge check passes at thresholds 0) and one seed; every rule and method of the toy DAG stays.
SLURM_OVERLAY = {"seeds": [0], "testbed": {"steps": 40, "warmup_steps": 5},
                 "knowledge_check": {"rewrite": 0.0, "paraphrase": 0.0, "neighborhood": 0.0}}
RUN_TIMEOUT = 2400  # seconds for the whole Slurm run of the toy workflow
# Where srun inside a job looks for the configuration; written only with this marker.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
CONF_MARKER = "# seqedit test cluster (tests/workflow/test_slurm.py); removed when the test ends"
SLURM_BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun"]


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str):
    """Skip the module, except in CI, where a cluster that cannot be set up is a failure."""
    if in_ci():
        pytest.fail(f"the Slurm test cannot run in CI (CI=true): {reason}", pytrace=False)
    pytest.skip(f"no Slurm test cluster: {reason}")


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"):
        if os.access(Path(folder, name), os.X_OK):
            return str(Path(folder, name))
    return None


def tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def ensure_slurm_installed() -> dict[str, str]:
    """{name: path} of the Slurm and munge programs; installs `slurm-wlm munge` with apt-get when
    slurmctld is missing. Skips (fails in CI) without root or without a working apt-get."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        unavailable("needs root (slurmd runs as root to start the jobs, and apt-get installs Slurm)")
    if find_binary("slurmctld") is None:
        if shutil.which("apt-get") is None:
            unavailable("Slurm is not installed and apt-get is not available to install it")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", "DPkg::Lock::Timeout=300"]
        for cmd in (["apt-get", *lock, "update"],
                    ["apt-get", *lock, "install", "-y", "--no-install-recommends", "slurm-wlm", "munge"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                unavailable(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {tail(proc.stdout + proc.stderr, 2000)}")
    if SYSTEM_CONF.exists():
        text = SYSTEM_CONF.read_text(errors="replace")
        if not text.startswith(CONF_MARKER):
            unavailable(f"{SYSTEM_CONF} belongs to another Slurm setup; the test cluster would replace it")
        if owner := other_owner_running(text):
            unavailable(f"another test cluster is running (test process {owner}, {SYSTEM_CONF})")
        # Left behind by a test process that is gone (killed before its teardown): its daemons
        # outlive it, being daemons, and are ended here.
        stop_stale_cluster(text)
    paths = {name: find_binary(name) for name in SLURM_BINARIES}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        unavailable(f"programs missing after installing slurm-wlm and munge: {', '.join(missing)}")
    return paths


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot, /proc/<pid>/stat), so that a pid reused by
    another process is not taken for the one recorded; None when it is not running."""
    if not process_alive(pid):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces


def owner_line() -> str:
    """The configuration's line naming this test process, the cluster's owner."""
    return f"# owner pid {os.getpid()} started {process_start(os.getpid())}"


def other_owner_running(conf_text: str) -> int | None:
    """The pid of the test process that owns the configuration's cluster when it is another process
    and still runs (the same pid with the same start time); None otherwise."""
    owner = re.search(r"^# owner pid (\d+) started (\d+)$", conf_text, re.M)
    if owner and int(owner[1]) != os.getpid() and process_start(int(owner[1])) == int(owner[2]):
        return int(owner[1])
    return None


def stop_stale_cluster(conf_text: str) -> list[int]:
    """End the daemons of a test cluster whose test process is gone, by the pid files its
    configuration names (slurmd, slurmctld, and munged beside the munge socket), and remove the
    system copy of its configuration. Returns the pids it ended."""
    files = [m[1] for key in ("SlurmdPidFile", "SlurmctldPidFile") if (m := re.search(rf"^{key}=(.+)$", conf_text, re.M))]
    if socket_path := re.search(r"^AuthInfo=socket=(.+)$", conf_text, re.M):
        files.append(str(Path(socket_path[1]).parent / "munged.pid"))
    ended = []
    for pid_file in map(Path, files):
        pid = pid_file.read_text().strip() if pid_file.exists() else ""
        if pid.isdigit() and process_alive(int(pid)):
            end_process(int(pid))
            ended.append(int(pid))
    if SYSTEM_CONF.exists() and SYSTEM_CONF.read_text(errors="replace") == conf_text:
        SYSTEM_CONF.unlink()
    return ended


def end_process(pid: int):
    """SIGTERM, then SIGKILL if `pid` still runs after 20 s; returns when it is gone (or 10 s later)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(0.2)
        if not process_alive(pid):
            return


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free now."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (no real init reaps it here) counts as gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = re.search(r"^State:\s+(\S)", status, re.M)
    return not (state and state[1] in "ZX")


class ClusterError(RuntimeError):
    pass


@dataclass
class SlurmCluster:
    """A one-node Slurm cluster with its own munged, all state under `root`."""

    root: Path
    bins: dict[str, str]

    def __post_init__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.node = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.started: list[tuple[str, Path]] = []  # (daemon, pid file), in start order

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def command(self, *args: str, timeout: int = 60, check: bool = True) -> str:
        cmd = [self.bins.get(args[0]) or args[0], *args[1:]]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
                               f"\n{self.daemon_logs()}")
        return proc.stdout

    def daemon_logs(self, n: int = 3000) -> str:
        logs = [self.path("munge", "munged.log"), self.path("log", "slurmctld.log"), self.path("log", "slurmd.log"),
                self.path("log", "daemons.out")]
        return "\n".join(f"--- {p}\n{tail(p.read_text(errors='replace'), n)}" for p in logs if p.exists())

    def _daemon(self, name: str, cmd: list[str], pid_file: Path):
        """Start a self-daemonizing program and wait for its pid file."""
        with open(self.path("log", "daemons.out"), "a") as out:
            proc = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"{name} did not start (exit {proc.returncode}): {' '.join(cmd)}\n{self.daemon_logs()}")
        self.started.append((name, pid_file))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip().isdigit():
                if process_alive(int(pid_file.read_text())):
                    return
            time.sleep(0.2)
        raise ClusterError(f"{name} wrote no pid file {pid_file} or exited\n{self.daemon_logs()}")

    def stopped_daemons(self) -> list[str]:
        """The started daemons that are no longer running."""
        gone = []
        for name, pid_file in self.started:
            pid = pid_file.read_text().strip() if pid_file.exists() else ""
            if not (pid.isdigit() and process_alive(int(pid))):
                gone.append(name)
        return gone

    def node_line(self) -> str:
        """This machine's hardware as slurmd sees it (`slurmd -C`), with the test's RealMemory."""
        out = subprocess.run([self.bins["slurmd"], "-C"], capture_output=True, text=True, timeout=60).stdout
        fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0] if out else ""))
        keep = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore"]
        if not all(k in fields for k in keep):
            fields = {"CPUs": str(os.cpu_count() or 1)}
            keep = ["CPUs"]
        hardware = " ".join(f"{k}={fields[k]}" for k in keep)
        return (f"NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} {hardware} "
                f"RealMemory={NODE_MEMORY_MB} State=UNKNOWN")

    def write_conf(self):
        for folder in ("state", "spool", "log", "run", "munge"):
            self.path(folder).mkdir(exist_ok=True)
        ctld_port, slurmd_port = free_ports(2)
        lines = [
            f"ClusterName={CLUSTER}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.path('state')}",
            f"SlurmdSpoolDir={self.path('spool')}",
            f"SlurmctldPidFile={self.path('run', 'slurmctld.pid')}",
            f"SlurmdPidFile={self.path('run', 'slurmd.pid')}",
            f"SlurmctldLogFile={self.path('log', 'slurmctld.log')}",
            f"SlurmdLogFile={self.path('log', 'slurmd.log')}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            # CR_Core, not CR_Core_Memory: memory is not a consumable, so --mem does not limit how
            # many jobs share the node.
            "SelectTypeParameters=CR_Core",
            # The node's RealMemory is taken as configured (see NODE_MEMORY_MB), not measured.
            "SlurmdParameters=config_overrides",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            f"MinJobAge={MIN_JOB_AGE}",
            # Jobs inherit the nice value of the process that submits them.
            "PropagatePrioProcess=1",
            # A record of every finished job, kept after squeue forgets it.
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.path('log', 'jobcomp.txt')}",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            self.node_line(),
            f"PartitionName={PARTITION} Nodes={self.node} Default=NO MaxTime=INFINITE State=UP",
        ]
        text = CONF_MARKER + "\n" + owner_line() + "\n" + "\n".join(lines) + "\n"
        self.conf.write_text(text)
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(text)

    def start(self):
        self.write_conf()
        if len(str(self.munge_socket)) > 100:  # a Unix socket path has at most 107 bytes
            raise ClusterError(f"munge socket path too long: {self.munge_socket}")
        key = self.path("munge", "munge.key")
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge = self.path("munge")
        self._daemon("munged", [self.bins["munged"], "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                                f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                                f"--seed-file={munge / 'munged.seed'}"], munge / "munged.pid")
        self._daemon("slurmctld", [self.bins["slurmctld"], "-f", str(self.conf)], self.path("run", "slurmctld.pid"))
        self._daemon("slurmd", [self.bins["slurmd"], "-f", str(self.conf), "-N", self.node],
                     self.path("run", "slurmd.pid"))
        self.wait_idle()
        self.command("srun", "-p", PARTITION, "-t", "1", "true", timeout=120)

    def wait_idle(self, timeout: float = 90):
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.command("sinfo", "-h", "-N", "-p", PARTITION, "-o", "%t", check=False).strip()
            if state == "idle":
                return
            if state.startswith(("down", "drain", "inval")):
                reason = self.command("sinfo", "-h", "-R", check=False)
                raise ClusterError(f"node {self.node} is {state}: {reason}\n{self.daemon_logs()}")
            time.sleep(0.5)
        raise ClusterError(f"node {self.node} not idle after {timeout} s (state {state!r})\n{self.daemon_logs()}")

    def stop(self):
        """Cancel what is left in the queue, then end the daemons by their pid files."""
        if any(name == "slurmctld" for name, _ in self.started):
            try:
                ids = self.command("squeue", "-h", "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING", "-o", "%A",
                                   check=False, timeout=30).split()
                if ids:
                    self.command("scancel", *ids, check=False, timeout=30)
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and self.command(
                            "squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%A", check=False, timeout=30).strip():
                        time.sleep(1)
            except subprocess.TimeoutExpired:
                pass  # an unresponsive controller: the daemons are ended below all the same
        for _, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().strip())
            except (FileNotFoundError, ValueError):
                continue
            end_process(pid)
        self.started.clear()
        if (self.conf.exists() and SYSTEM_CONF.exists()
                and SYSTEM_CONF.read_text(errors="replace") == self.conf.read_text()):
            SYSTEM_CONF.unlink()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    bins = ensure_slurm_installed()
    root = tmp_path_factory.mktemp("slurm_cluster")
    if len(str(root)) > 60:  # keep the munge socket path short
        root = Path(tempfile.mkdtemp(prefix="seqedit-slurm-"))
    cluster = SlurmCluster(root, bins)
    try:
        cluster.start()
    except Exception as error:
        cluster.stop()
        pytest.fail(f"the Slurm test cluster did not come up: {type(error).__name__}: {error}", pytrace=False)
    yield cluster
    cluster.stop()


@dataclass
class SlurmRun:
    work: Path
    returncode: int
    output: str  # snakemake's stdout and stderr
    seconds: float


def write_test_profile(work: Path) -> Path:
    """profiles/slurm with what a user fills in for this cluster: its partition (in the copied
    `default-resources` block, as the profile's comments say) and a short first status wait."""
    profile = yaml.safe_load((work / "profiles" / "slurm" / "config.yaml").read_text())
    folder = work / "test_profile"
    folder.mkdir()
    overrides = {
        "default-resources": {**profile["default-resources"], "slurm_partition": PARTITION},
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(overrides, sort_keys=False))
    return folder


def workflow_args(work: Path) -> list[str]:
    """The config of the Slurm run and of its local replica, written into `work`."""
    (work / "slurm_overlay.yaml").write_text(yaml.safe_dump(SLURM_OVERLAY, sort_keys=False))
    return ["--configfile", TOY_CONFIG, "slurm_overlay.yaml", "--omit-from", "study_collect"]


@pytest.fixture(scope="module")
def local_replica(workflow_copy):
    """A copy of the repository in which the Slurm run's config ran locally (2 cores)."""
    work = workflow_copy("toy_workflow_local")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *workflow_args(work)], cwd=work,
                          env=workflow_env(),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr, 6000) + "\n" + run_logs(work)
    return work


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, workflow_copy):
    work = workflow_copy("toy_workflow_slurm")
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--profile", str(write_test_profile(work)),
           *workflow_args(work)]
    # This interpreter's bin folder first on PATH (seqedit, papermill); the jobs inherit it
    # (sbatch --export=ALL), and SLURM_CONF, through which sbatch, squeue and srun find the cluster.
    env = workflow_env(SLURM_CONF=str(slurm_cluster.conf))
    log = work / "snakemake_slurm.out"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    problem = None
    while proc.poll() is None:
        if time.monotonic() - start > RUN_TIMEOUT:
            problem = f"the Slurm run did not finish within {RUN_TIMEOUT} s"
        elif gone := slurm_cluster.stopped_daemons():
            problem = f"daemons of the test cluster exited during the run: {', '.join(gone)}"
        if problem:
            # snakemake ignores SIGTERM while Slurm jobs run: its whole process group is killed.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{problem}\n{tail(log.read_text(), 6000)}\n"
                        f"{slurm_cluster.command('squeue', '--states=all', check=False)}\n"
                        f"{slurm_cluster.daemon_logs()}", pytrace=False)
        time.sleep(2)
    return SlurmRun(work, proc.returncode, log.read_text(), time.monotonic() - start)


def dag_jobs(output: str) -> dict[int, tuple[str, bool]]:
    """{snakemake jobid: (rule, local)} of every job snakemake scheduled, from its job headers
    (`rule NAME:` / `localrule NAME:` followed by indented fields, among them `jobid: N`)."""
    jobs = {}
    for match in re.finditer(r"^(local)?(?:rule|checkpoint) (\w+):\n((?:[ \t]+\S.*\n?)+)", output, re.M):
        jobid = re.search(r"^\s+jobid: (\d+)$", match[3], re.M)
        assert jobid, f"no jobid in the header of rule {match[2]}:\n{match[0]}"
        jobs[int(jobid[1])] = (match[2], bool(match[1]))
    return jobs


def job_stats_total(output: str) -> int:
    """The total of snakemake's 'Job stats' table."""
    match = re.search(r"Job stats:\n(?:.*\n)*?total\s+(\d+)", output)
    assert match, "no 'Job stats' table in snakemake's output"
    return int(match[1])


def jobcomp_records(path: Path) -> dict[str, dict[str, str]]:
    """{Slurm job id: fields} from slurmctld's job completion log (jobcomp/filetxt)."""
    records = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def test_toy_workflow_runs_through_slurm(slurm_run, slurm_cluster):
    print(f"\nSlurm run of the toy workflow: exit {slurm_run.returncode}, {slurm_run.seconds:.0f} s wall time")
    assert slurm_run.returncode == 0, (tail(slurm_run.output, 8000) + "\n" + run_logs(slurm_run.work)
                                       + "\n" + slurm_cluster.daemon_logs())


def test_every_job_that_is_not_local_ran_as_a_slurm_job(slurm_run, slurm_cluster):
    assert slurm_run.returncode == 0, "the Slurm run failed (see test_toy_workflow_runs_through_slurm)"
    output = slurm_run.output
    jobs = dag_jobs(output)
    assert len(jobs) == job_stats_total(output), (sorted(jobs.items()), tail(output))
    remote = {jobid: rule for jobid, (rule, local) in jobs.items() if not local}
    local = {jobid: rule for jobid, (rule, local) in jobs.items() if local}
    assert remote, "no job of the DAG was submitted to Slurm"

    submitted: dict[int, list[str]] = {}
    for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output):
        submitted.setdefault(int(jobid), []).append(slurm_id)
    assert set(submitted) == set(remote), (
        f"submitted to Slurm: {sorted(submitted)}; jobs that are not local: {sorted(remote.items())}; "
        f"local: {sorted(local.items())}")
    for jobid in jobs:
        assert re.search(rf"^Finished jobid: {jobid}\b", output, re.M), f"job {jobid} ({jobs[jobid][0]}) did not finish"

    run_name = re.search(r"SLURM run ID: (\S+)", output)[1]
    slurm_ids = {slurm_id: remote[jobid] for jobid, ids in submitted.items() for slurm_id in ids}
    # A retried job has several Slurm ids; its last one must have completed.
    final_ids = {ids[-1]: remote[jobid] for jobid, ids in submitted.items()}

    # slurmctld's completion log: every submitted id, this run's name, the test partition.
    records = jobcomp_records(slurm_cluster.path("log", "jobcomp.txt"))
    for slurm_id, rule in slurm_ids.items():
        assert slurm_id in records, f"slurmctld has no record of job {slurm_id} ({rule}): {sorted(records)}"
        record = records[slurm_id]
        assert record["Name"] == run_name and record["Partition"] == PARTITION, (rule, record)
        assert Path(record["WorkDir"]).resolve() == slurm_run.work.resolve(), (rule, record)
    for slurm_id, rule in final_ids.items():
        assert records[slurm_id]["JobState"] == "COMPLETED" and records[slurm_id]["ExitCode"] == "0:0", (
            rule, records[slurm_id])

    # Exactly these jobs ran under this run's name.
    assert {i for i, r in records.items() if r["Name"] == run_name} == set(slurm_ids), sorted(records)
    # squeue, which the plugin polls, still reports them (MinJobAge).
    queue = dict(line.split() for line in slurm_cluster.command(
        "squeue", "--states=all", "-h", "-o", "%i %T").splitlines() if line.strip())
    assert {i: queue.get(i) for i in final_ids} == {i: "COMPLETED" for i in final_ids}, queue

    # The job logs the plugin kept (--slurm-keep-successful-logs), one per Slurm job.
    logs = {p.stem for p in (slurm_run.work / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(slurm_ids) <= logs, (sorted(slurm_ids), sorted(logs))

    summary = {
        "seconds": round(slurm_run.seconds, 1),
        "dag_jobs": len(jobs),
        "local_jobs": sorted(local.values()),
        "slurm_jobs": {slurm_id: rule for slurm_id, rule in sorted(slurm_ids.items(), key=lambda kv: int(kv[0]))},
    }
    (slurm_run.work / "slurm_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n" + json.dumps(summary, indent=1))


def edit_metrics(work: Path) -> dict[str, dict]:
    """{path under results/testbed/edit: {n_edits, final}} of every edit run's metrics.json."""
    base = work / "results" / "testbed" / "edit"
    found = {}
    for path in sorted(base.glob("**/metrics.json")):
        metrics = json.loads(path.read_text())
        found[str(path.relative_to(base))] = {"n_edits": metrics["n_edits"], "final": metrics["final"]}
    return found


def knowledge_check(work: Path) -> dict:
    report = json.loads((work / "results" / "testbed" / "testbed" / "knowledge_check.json").read_text())
    report.pop("provenance", None)  # where and when it ran, not what it found
    return report


def test_slurm_results_equal_the_local_run(slurm_run, local_replica):
    assert slurm_run.returncode == 0, "the Slurm run failed (see test_toy_workflow_runs_through_slurm)"
    local, slurm = edit_metrics(local_replica), edit_metrics(slurm_run.work)
    # memit, memit_seq, nse, and the rewinding ablation's false arm (its true arm is NSE's own setting: the main run)
    assert sorted(local) == ["memit/main/seed~0/metrics.json", "memit_seq/main/seed~0/metrics.json",
                             "nse/main/seed~0/metrics.json", "nse/nse_rewind~false/seed~0/metrics.json"]
    assert sorted(slurm) == sorted(local)
    for run in local:
        assert slurm[run] == local[run], f"{run}: Slurm {slurm[run]} != local {local[run]}"
    assert knowledge_check(slurm_run.work) == knowledge_check(local_replica)


def test_a_cluster_left_by_a_killed_test_process_is_ended(tmp_path):
    """The daemons named by a leftover configuration's pid files are ended; other processes live."""
    daemons = [subprocess.Popen(["sleep", "600"], start_new_session=True) for _ in range(3)]
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        (tmp_path / "munge").mkdir()
        files = [tmp_path / "slurmd.pid", tmp_path / "slurmctld.pid", tmp_path / "munge" / "munged.pid"]
        for proc, pid_file in zip(daemons, files):
            pid_file.write_text(f"{proc.pid}\n")
        text = (f"{CONF_MARKER}\n# owner pid 999999999 started 1\nSlurmdPidFile={files[0]}\nSlurmctldPidFile={files[1]}\n"
                f"AuthInfo=socket={tmp_path / 'munge' / 'munge.socket'}\n")
        ended = stop_stale_cluster(text)
        assert sorted(ended) == sorted(p.pid for p in daemons)
        for proc in daemons:
            assert proc.wait(timeout=30) is not None
        assert bystander.poll() is None
    finally:
        for proc in (*daemons, bystander):
            proc.kill()
            proc.wait()


def test_a_cluster_is_refused_only_while_another_live_owner_holds_it():
    own = owner_line()
    assert own == f"# owner pid {os.getpid()} started {process_start(os.getpid())}"
    assert other_owner_running(own) is None  # this process's own cluster is no other owner's
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        started = process_start(other.pid)
        assert other_owner_running(f"# owner pid {other.pid} started {started}") == other.pid
        # the same pid with another start time: the owner is gone and its pid was reused
        assert other_owner_running(f"# owner pid {other.pid} started {started + 1}") is None
    finally:
        other.kill()
        other.wait()
    assert other_owner_running(f"# owner pid {other.pid} started {started}") is None  # gone
